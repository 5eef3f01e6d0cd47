"""CIFAR10-B / CIFAR100-B: annotation parsing, per-class 1-based counting, checksum, real files."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from flowaug.data import CIFAR10_CLASSES, CIFAR10B, CIFAR100_CLASSES, CIFARC, load_cifar_labels, load_subgroups
from flowaug.errors import ChecksumMismatchError, DataFormatError, DatasetNotFoundError

ANNOTATION = "cifar10b/cifar10_bgd_cl2img_gp_fine.npy"
# Synthetic test order (class ids) and a hand-written annotation: the k-th image of a class in
# this order is "k.png" of that class.
ORDER = [3, 3, 0, 9, 3, 0, 1, 2, 4, 5, 6, 7, 8, 9]
TABLE = {
    "cat": {"0001.png": 5, "0002.png": 2, "0003.png": 7},
    "airplane": {"0002.png": 0, "0001.png": 1},
    "truck": {"0001.png": 4, "0002.png": 6},
    "automobile": {"0001.png": 3}, "bird": {"0001.png": 3}, "deer": {"0001.png": 0},
    "dog": {"0001.png": 1}, "frog": {"0001.png": 2}, "horse": {"0001.png": 5}, "ship": {"0001.png": 6},
}
# cat1 cat2 air1 truck1 cat3 air2 auto bird deer dog frog horse ship truck2
EXPECTED = [5, 2, 1, 4, 7, 0, 3, 3, 0, 1, 2, 5, 6, 6]

# Mean RGB of the outer 4-pixel ring per CIFAR10-B subgroup, from ../shared/data/README.md.
RING_COLOURS = [(114, 121, 94), (134, 133, 131), (121, 135, 150), (197, 195, 193),
                (64, 59, 55), (136, 121, 105), (136, 94, 92), (134, 117, 106)]
SUBGROUP_SIZES = [2863, 1040, 2467, 676, 401, 2114, 168, 271]


def test_subgroups_count_images_per_class_one_based(synthetic):
    synthetic.write_annotation(ANNOTATION, TABLE)
    subgroups = load_subgroups("cifar10", np.array(ORDER), synthetic.root, verify=False)
    assert subgroups.dtype == np.int64
    assert subgroups.tolist() == EXPECTED


def test_a_prefix_of_the_test_order_gets_the_prefix_of_the_subgroups(synthetic):
    synthetic.write_annotation(ANNOTATION, TABLE)
    subgroups = load_subgroups("cifar10", np.array(ORDER[:5]), synthetic.root, verify=False)
    assert subgroups.tolist() == EXPECTED[:5]


def test_checksum_mismatch_is_explained(synthetic):
    synthetic.write_annotation(ANNOTATION, TABLE)
    with pytest.raises(ChecksumMismatchError) as info:
        load_subgroups("cifar10", np.array(ORDER), synthetic.root)
    message = str(info.value)
    for text in ("sha256", "re-pickled", "different release", "charismaticchiu", "verify=False"):
        assert text in message


class _Payload:
    """Unpickling this runs ``os.makedirs(marker)``: stands in for a malicious annotation file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_annotation_code_never_runs_even_without_the_hash_check(synthetic):
    marker = synthetic.root / "code-ran"
    holder = np.empty((), dtype=object)
    holder[()] = _Payload(str(marker))
    synthetic.write_npy(ANNOTATION, holder, allow_pickle=True)
    with pytest.raises(ChecksumMismatchError, match="no code from it runs"):
        load_subgroups("cifar10", np.array(ORDER), synthetic.root)
    with pytest.raises(DataFormatError, match="refusing to load posix.makedirs|refusing to load os.makedirs"):
        load_subgroups("cifar10", np.array(ORDER), synthetic.root, verify=False)
    assert not marker.exists(), "a payload in the annotation file ran"
    holder[()] = {"airplane": {"0001.png": 3}}
    synthetic.write_npy(ANNOTATION, holder, allow_pickle=True)  # plain data still reads (and is then validated)
    with pytest.raises(DataFormatError, match="dict keyed by the 10 class names"):
        load_subgroups("cifar10", np.array(ORDER), synthetic.root, verify=False)


def test_missing_annotation_names_the_path_and_the_release(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_subgroups("cifar10", np.array(ORDER), tmp_path)
    assert str(tmp_path / ANNOTATION) in str(info.value)
    assert "Chiu et al. ICCV 2023" in str(info.value)


def _without(table: dict, name: str) -> dict:
    return {k: v for k, v in table.items() if k != name}


@pytest.mark.parametrize("table, message", [
    (_without(TABLE, "ship"), "class names"),
    (TABLE | {"cat": {"0001.png": 5, "0003.png": 7}}, "'cat'"),
    (TABLE | {"cat": {"1.png": 5, "2.png": 2, "3.png": 7}}, "'cat'"),
    (TABLE | {"cat": {"0001.png": 5, "0002.png": 8, "0003.png": 7}}, "outside 0..7"),
    (TABLE | {"cat": {"0001.png": 5, "0002.png": -1, "0003.png": 7}}, "outside 0..7"),
    ({CIFAR10_CLASSES.index(k): v for k, v in TABLE.items()}, "class names"),
    ([1, 2, 3], "dict"),
])
def test_malformed_annotation_is_rejected(synthetic, table, message):
    synthetic.write_annotation(ANNOTATION, table)
    with pytest.raises(DataFormatError, match=message):
        load_subgroups("cifar10", np.array(ORDER), synthetic.root, verify=False)


@pytest.mark.parametrize("labels, message", [
    (ORDER + [0], "3 test images of class 'airplane' but only 2 annotated"),
    ([0, 10], r"\[0, 9\]"),
    ([[0, 1]], "1-D"),
])
def test_labels_that_do_not_fit_the_annotation_are_rejected(synthetic, labels, message):
    synthetic.write_annotation(ANNOTATION, TABLE)
    with pytest.raises(DataFormatError, match=message):
        load_subgroups("cifar10", np.array(labels), synthetic.root, verify=False)


def test_cifar10b_dataset_items(synthetic):
    images, _ = synthetic.arrays(len(ORDER), 10)
    synthetic.write_npz("cifar10/cifar10_jpeg_q75.npz", {"test": (images, np.array(ORDER))})
    synthetic.write_annotation(ANNOTATION, TABLE)
    ds = CIFAR10B(synthetic.root, verify=False)
    assert ds.subgroups.tolist() == EXPECTED and ds.num_subgroups == 8
    assert ds.description == "CIFAR10-B on CIFAR-10 (JPEG-q75 proxy)"
    image, label, subgroup = ds[4]
    assert (label, subgroup) == (3, 7)
    torch.testing.assert_close(image, torch.from_numpy(images[4]).permute(2, 0, 1).float() / 255)
    with pytest.raises(ChecksumMismatchError):
        CIFAR10B(synthetic.root)


def _ring_mean(images: np.ndarray) -> np.ndarray:
    ring = np.ones((32, 32), bool)
    ring[4:-4, 4:-4] = False
    return images[:, ring].reshape(len(images), -1, 3).mean(axis=(0, 1))


def test_real_cifar10b_matches_the_annotation_file(shared_file):
    path = shared_file(ANNOTATION)
    table = np.load(path, allow_pickle=True).item()
    ds = CIFAR10B(path.parents[1])
    assert np.bincount(ds.subgroups, minlength=8).tolist() == SUBGROUP_SIZES
    for label, name in enumerate(CIFAR10_CLASSES):
        mine = ds.subgroups[ds.labels == label]
        assert len(mine) == len(table[name]) == 1000
        assert np.bincount(mine, minlength=8).tolist() == np.bincount(list(table[name].values()), minlength=8).tolist()
    first_cat = int(np.flatnonzero(ds.labels == CIFAR10_CLASSES.index("cat"))[0])
    assert ds[first_cat][2] == table["cat"]["0001.png"]


def test_real_cifar10b_subgroups_have_their_background_colours(shared_file):
    """Independent check of the alignment: a shifted assignment scrambles the ring colours."""
    ds = CIFAR10B(shared_file(ANNOTATION).parents[1])
    for subgroup, colour in enumerate(RING_COLOURS):
        np.testing.assert_allclose(_ring_mean(ds.images[ds.subgroups == subgroup]), colour, atol=3)


def test_real_cifar100b_has_100_annotated_images_per_class(shared_file):
    path = shared_file("cifar100b/cifar100_bgd_cl2img_gp_fine.npy")
    shared_file("cifar100/cifar100_labels_only.npz")
    root = path.parents[1]
    labels = load_cifar_labels("cifar100", "test", root)
    subgroups = load_subgroups("cifar100", labels, root)
    table = np.load(path, allow_pickle=True).item()
    assert len(subgroups) == 10000 and subgroups.min() >= 0 and subgroups.max() <= 7
    for label, name in enumerate(CIFAR100_CLASSES):
        mine = subgroups[labels == label]
        assert len(mine) == len(table[name]) == 100
        assert np.bincount(mine, minlength=8).tolist() == np.bincount(list(table[name].values()), minlength=8).tolist()



def test_cifar_c_attaches_subgroups_and_passes_verify_on(synthetic):
    synthetic.write_annotation(ANNOTATION, TABLE)  # not the authors' file: its sha256 differs
    synthetic.write_cifar_c("CIFAR-10-C", ("fog",), np.array(ORDER))
    with pytest.raises(ChecksumMismatchError):
        CIFARC("fog", 1, root=synthetic.root)
    ds = CIFARC("fog", 1, root=synthetic.root, verify=False)
    assert ds.subgroups.tolist() == EXPECTED
