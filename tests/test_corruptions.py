"""The 19 CIFAR-C corruptions: contract, determinism, severity ordering, and independent
re-computations of the deterministic ones and of the official kernels."""
from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.io
from PIL import Image
from scipy import ndimage

from flowaug.data.cifar_c import ALL_CORRUPTIONS
from flowaug.data.corruptions import CORRUPTIONS, DETERMINISTIC, PARAMS, corrupt
from flowaug.data.corruptions import _cv
from flowaug.data.corruptions.blur import clipped_zoom_matrix, glass_shuffle, motion_blur_float
from flowaug.errors import DatasetNotFoundError

# Severity chains along which the official parameters make the image change grow. 1..5 for most;
# the exceptions follow from the official table (flowaug/data/corruptions/params.py):
MAD_CHAINS: dict[str, tuple[tuple[int, ...], ...]] = {
    # 1, 2 desaturate (S * 0.3, S * 0.1); 3..5 oversaturate (S * 1.5, * 2 + 0.1, * 2.5 + 0.2).
    "saturate": ((1, 2), (3, 4, 5)),
    # 1..3 water drops, 4..5 mud.
    "spatter": ((1, 2, 3), (4, 5)),
    # Same sigma, one then two shuffle passes (a larger sigma partly smooths the shuffle back).
    "glass_blur": ((2, 4), (3, 5)),
    # Only the frost weight changes from 1 to 2; later the image weight falls too, darkening it.
    "frost": ((1, 2),),
    # The affine jitter falls 2.56 -> 0.96 px as the elastic field grows: no monotone chain; the
    # elastic field alone (jitter 0 would be needed) is checked by the change staying large.
    "elastic_transform": (),
}
SEVERITY_LIST = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def test_images(shared_file) -> np.ndarray:
    """48 real CIFAR-10 test images (JPEG-q75 proxy), uint8 (48,32,32,3)."""
    with np.load(shared_file("cifar10/cifar10_jpeg_q75.npz")) as data:
        return data["x_test"][:48]


@pytest.fixture(scope="module")
def frost_dir(shared_file) -> Path:
    return shared_file("cifar_c_frost/frost1.png").parent


def run(name: str, images: np.ndarray, severity: int, seed: int, frost_dir: Path) -> np.ndarray:
    options = {"frost_dir": frost_dir} if name == "frost" else {}
    return corrupt(images, name, severity, np.random.default_rng(seed), **options)


def test_registry_matches_the_official_list_and_table():
    assert tuple(CORRUPTIONS) == ALL_CORRUPTIONS
    assert set(PARAMS) == set(ALL_CORRUPTIONS)
    assert all(len(PARAMS[name]) == 5 for name in ALL_CORRUPTIONS)


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_shape_dtype_and_determinism(name, test_images, frost_dir):
    images = test_images[:16]
    first = run(name, images, 3, 0, frost_dir)
    assert first.shape == images.shape and first.dtype == np.uint8
    assert np.array_equal(first, run(name, images, 3, 0, frost_dir))
    assert not np.array_equal(first, images)
    other_seed = run(name, images, 3, 1, frost_dir)
    assert np.array_equal(first, other_seed) == (name in DETERMINISTIC)


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_change_grows_with_severity(name, test_images, frost_dir):
    change = {s: np.abs(run(name, test_images, s, 0, frost_dir).astype(np.int64) - test_images).mean()
              for s in SEVERITY_LIST}
    assert min(change.values()) > 0.5, change
    for chain in MAD_CHAINS.get(name, (SEVERITY_LIST,)):
        values = [change[s] for s in chain]
        assert values == sorted(values), f"{name}: mean |change| {change} not non-decreasing along {chain}"


@pytest.mark.parametrize("bad, error", [
    (np.zeros((2, 32, 32, 3), dtype=np.float32), TypeError),
    (np.zeros((32, 32, 3), dtype=np.uint8), ValueError),
    (np.zeros((2, 32, 32, 4), dtype=np.uint8), ValueError),
])
def test_bad_images_are_rejected(bad, error):
    with pytest.raises(error, match="images must"):
        corrupt(bad, "contrast", 1, np.random.default_rng(0))


@pytest.mark.parametrize("severity", [0, 6, True])
def test_bad_severity_is_rejected(severity, test_images):
    with pytest.raises(ValueError, match="severity must be one of"):
        corrupt(test_images[:2], "contrast", severity, np.random.default_rng(0))


def test_unknown_name_lists_choices(test_images):
    with pytest.raises(ValueError, match="unknown corruption 'rain'.*gaussian_noise.*saturate"):
        corrupt(test_images[:2], "rain", 1, np.random.default_rng(0))


def test_missing_frost_dir_says_where_to_get_textures(test_images, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="frost1.png.*hendrycks/robustness"):
        corrupt(test_images[:2], "frost", 1, np.random.default_rng(0), frost_dir=tmp_path / "nowhere")


def _truncate(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def _assert_close(actual: np.ndarray, expected: np.ndarray, exact_fraction: float = 0.99) -> None:
    """At most 1 grey level apart (float rounding before truncation), almost always equal."""
    diff = np.abs(actual.astype(np.int64) - expected)
    assert diff.max() <= 1 and (diff == 0).mean() >= exact_fraction, (diff.max(), (diff == 0).mean())


@pytest.mark.parametrize("name, channel, apply", [
    ("brightness", 2, lambda value, c: min(max(value + c, 0.0), 1.0)),
    ("saturate", 1, lambda value, c: min(max(value * c[0] + c[1], 0.0), 1.0)),
])
@pytest.mark.parametrize("severity", SEVERITY_LIST)
def test_hsv_corruptions_match_colorsys(name, channel, apply, severity, test_images):
    images = test_images[:3]
    c = PARAMS[name][severity - 1]
    expected = np.empty(images.shape, dtype=np.float64)
    for index in np.ndindex(images.shape[:3]):
        hsv = list(colorsys.rgb_to_hsv(*(images[index] / 255.0)))
        hsv[channel] = apply(hsv[channel], c)
        expected[index] = colorsys.hsv_to_rgb(*hsv)
    # colorsys takes another float path (hue from differences, not ratios): ties at the truncation edge.
    _assert_close(corrupt(images, name, severity, np.random.default_rng(0)), _truncate(expected), 0.95)


@pytest.mark.parametrize("severity", SEVERITY_LIST)
def test_contrast_matches_per_channel_formula(severity, test_images):
    images = test_images[:4]
    c = PARAMS["contrast"][severity - 1]
    expected = np.empty(images.shape, dtype=np.float64)
    for b in range(len(images)):
        for ch in range(3):
            plane = images[b, :, :, ch].astype(np.float64) / 255
            mean = plane.sum() / plane.size
            expected[b, :, :, ch] = mean + c * (plane - mean)
    _assert_close(corrupt(images, "contrast", severity, np.random.default_rng(0)), _truncate(expected))


@pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")
@pytest.mark.parametrize("severity", SEVERITY_LIST)
def test_jpeg_matches_libjpeg_via_torchvision(severity, test_images):
    images = test_images[:8]
    quality = PARAMS["jpeg_compression"][severity - 1]
    expected = np.stack([
        torchvision.io.decode_jpeg(torchvision.io.encode_jpeg(torch.from_numpy(im).permute(2, 0, 1).contiguous(),
                                                              quality=quality)).permute(1, 2, 0).numpy()
        for im in images
    ])
    assert np.array_equal(corrupt(images, "jpeg_compression", severity, np.random.default_rng(0)), expected)


@pytest.mark.parametrize("severity", SEVERITY_LIST)
def test_pixelate_matches_pil_box_resize(severity, test_images):
    images = test_images[:8]
    small = int(32 * PARAMS["pixelate"][severity - 1])
    expected = np.stack([
        np.asarray(Image.fromarray(im).resize((small, small), Image.BOX).resize((32, 32), Image.BOX))
        for im in images
    ])
    assert np.array_equal(corrupt(images, "pixelate", severity, np.random.default_rng(0)), expected)


@pytest.mark.parametrize("severity", SEVERITY_LIST)
def test_gaussian_blur_matches_explicit_kernel(severity, test_images):
    images = test_images[:4]
    sigma = PARAMS["gaussian_blur"][severity - 1]
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    padded = np.pad(images / 255.0, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    rows = sum(w * padded[:, k : k + 32] for k, w in enumerate(taps))
    expected = sum(w * rows[:, :, k : k + 32] for k, w in enumerate(taps))
    _assert_close(corrupt(images, "gaussian_blur", severity, np.random.default_rng(0)), _truncate(expected))


def test_glass_shuffle_equals_the_official_sequential_loop(test_images):
    images = test_images[:3]
    offsets = np.random.default_rng(1).integers(-1, 1, size=(3, 30, 30, 2))
    expected = images.copy()
    for b, image in enumerate(expected):
        for h in range(31, 1, -1):
            for w in range(31, 1, -1):
                dy, dx = offsets[b, h - 2, w - 2]
                image[h, w], image[h + dy, w + dx] = image[h + dy, w + dx], image[h, w]
    assert np.array_equal(glass_shuffle(images, offsets), expected)


@pytest.mark.parametrize("angle, axis", [(0.0, 1), (90.0, 0)])
def test_motion_blur_is_a_one_sided_gaussian_line(angle, axis, test_images):
    image = test_images[0].astype(np.float64)
    radius, sigma = 6, 2.0
    weights = np.exp(-np.arange(13) ** 2 / (2 * sigma**2))
    weights /= weights.sum()
    expected = np.zeros_like(image)
    for i, w in enumerate(weights):
        index = np.minimum(np.arange(32) + i, 31)
        expected += w * (image[:, index] if axis == 1 else image[index])
    actual = motion_blur_float(image[None], radius, sigma, np.array([angle]))[0]
    np.testing.assert_allclose(actual, expected, atol=1e-9)


@pytest.mark.parametrize("zoom", [1.01, 1.06, 1.25, 1.75, 2.25])
def test_clipped_zoom_matrix_matches_scipy_zoom(zoom, test_images):
    image = test_images[0, :, :, 0].astype(np.float64)
    crop = int(np.ceil(32 / zoom))
    top = (32 - crop) // 2
    zoomed = ndimage.zoom(image[top : top + crop, top : top + crop], zoom, order=1)
    trim = (zoomed.shape[0] - 32) // 2
    matrix = clipped_zoom_matrix(32, zoom)
    np.testing.assert_allclose(matrix @ image @ matrix.T, zoomed[trim : trim + 32, trim : trim + 32], atol=1e-9)


def test_chamfer_distance_is_close_to_euclidean():
    image = np.full((2, 32, 32), 255, dtype=np.uint8)
    image[0, 5, 7] = image[0, 20, 25] = image[1, :, 16] = 0
    chamfer = _cv.distance_transform(image)
    exact = np.stack([ndimage.distance_transform_edt(im) for im in image])
    assert chamfer.dtype == np.float32 and (chamfer[image == 0] == 0).all()
    np.testing.assert_allclose(chamfer, exact, rtol=0.03, atol=1e-6)


def test_canny_finds_a_step_edge():
    image = np.zeros((1, 32, 32), dtype=np.uint8)
    image[:, :, 16:] = 200
    edges = _cv.canny(image, 50, 150)
    assert edges[0, :, 15].all() != edges[0, :, 16].all() and edges.sum() == 32


def test_equalize_hist_spreads_values_over_the_range():
    image = np.random.default_rng(0).integers(100, 120, size=(3, 32, 32)).astype(np.uint8)
    out = _cv.equalize_hist(image)
    ranks = np.array([np.searchsorted(np.sort(im.ravel()), im, side="right") for im in image])
    for b in range(3):
        first = (image[b] == image[b].min()).sum()
        expected = np.rint((ranks[b] - first) * 255.0 / (1024 - first))
        np.testing.assert_array_equal(out[b], expected)


ZOOM_BLUR_DIGEST = """
import hashlib, sys
import numpy as np
from flowaug.data.corruptions import corrupt
with np.load(sys.argv[1]) as data:
    images = data["x_test"][:600]
parts = [corrupt(images[i:i + int(sys.argv[2])], "zoom_blur", 5, np.random.default_rng(0))
         for i in range(0, 600, int(sys.argv[2]))]
print(hashlib.sha256(np.concatenate(parts).tobytes()).hexdigest())
"""


@pytest.mark.parametrize("severity", [1, 5])
def test_zoom_blur_keeps_flat_images(severity):
    """Every zoom of a flat image is that image, so their average is too: the exact result is a whole
    grey level, which plain truncation of BLAS's sum turned into the level below in ~20% of values
    (which ones depended on the CPU and the batch's shape)."""
    levels = np.arange(0, 256, 5, dtype=np.uint8)
    flat = np.broadcast_to(levels[:, None, None, None], (len(levels), 32, 32, 3)).copy()
    np.testing.assert_array_equal(corrupt(flat, "zoom_blur", severity, np.random.default_rng(0)), flat)


def test_zoom_blur_does_not_depend_on_blas_threads_or_batch_split(shared_file):
    """make-cifar-c --workers N splits the images and runs BLAS with other thread counts: same bytes,
    also for splits that do not divide the images evenly (batches of 7 and 599 leave a remainder)."""
    import os
    import subprocess
    import sys

    path = shared_file("cifar10/cifar10_jpeg_q75.npz")
    digests = set()
    for threads, batch in (("1", "600"), ("2", "600"), ("2", "150"), ("1", "7"), ("2", "599")):
        env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        result = subprocess.run([sys.executable, "-c", ZOOM_BLUR_DIGEST, str(path), batch], env=env,
                                capture_output=True, text=True, check=True)
        digests.add(result.stdout.strip())
    assert len(digests) == 1, digests


def test_motion_blur_rounds_to_the_nearest_grey_level(test_images):
    """The documented choice (README): round, not ImageMagick 6.9 Q16's truncation."""
    from flowaug.data.corruptions.blur import motion_blur_uint8

    angles = np.linspace(-45, 45, 8)
    exact = motion_blur_float(test_images[:8].astype(np.float64), 10, 3, angles)
    rounded = motion_blur_uint8(test_images[:8], 10, 3, angles)
    assert np.array_equal(rounded, np.floor(exact + 0.5).astype(np.uint8))
    assert (rounded != np.floor(exact).astype(np.uint8)).mean() > 0.3, "truncation would differ in many values"
