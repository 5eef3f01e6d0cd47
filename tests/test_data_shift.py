"""Distribution-shift test sets: CIFAR-10.1 (.npy) and CIFAR-10-C / CIFAR-100-C (official layout)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flowaug.data import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, CIFAR10_1, CIFARC, EXTRA_CORRUPTIONS, CIFAR10B
from flowaug.errors import DataFormatError, DatasetNotFoundError

N = 20  # images per severity block in the synthetic CIFAR-C files (a --limit'ed set)


@pytest.mark.parametrize("version, n", [("v4", 2021), ("v6", 2000)])
def test_cifar10_1_loads_both_versions(synthetic, version, n):
    images, labels = synthetic.arrays(n, 10)
    synthetic.write_npy(f"CIFAR-10.1/cifar10.1_{version}_data.npy", images)
    synthetic.write_npy(f"CIFAR-10.1/cifar10.1_{version}_labels.npy", labels)
    ds = CIFAR10_1(synthetic.root, version=version)
    assert len(ds) == n and ds.description == f"CIFAR-10.1 {version}"
    image, label = ds[n - 1]
    torch.testing.assert_close(image, torch.from_numpy(images[-1]).permute(2, 0, 1).float() / 255)
    assert label == labels[-1]


def test_cifar10_1_with_the_wrong_image_count_is_rejected(synthetic):
    images, labels = synthetic.arrays(2021, 10)
    synthetic.write_npy("CIFAR-10.1/cifar10.1_v6_data.npy", images)
    synthetic.write_npy("CIFAR-10.1/cifar10.1_v6_labels.npy", labels)
    with pytest.raises(DataFormatError, match="2021 images, but CIFAR-10.1 v6 has 2000"):
        CIFAR10_1(synthetic.root)


@pytest.mark.parametrize("case, message", [
    ("dtype", "dtype"), ("labels", r"\[0, 9\]"), ("truncated", "not a readable"), ("pickled", "not a readable"),
])
def test_cifar10_1_bad_files_are_rejected(synthetic, case, message):
    images, labels = synthetic.arrays(2000, 10)
    data_path = synthetic.write_npy("CIFAR-10.1/cifar10.1_v6_data.npy",
                                    images.astype(np.int16) if case == "dtype" else images)
    synthetic.write_npy("CIFAR-10.1/cifar10.1_v6_labels.npy", labels + 1 if case == "labels" else labels)
    if case == "truncated":
        data_path.write_bytes(data_path.read_bytes()[:5000])
    if case == "pickled":
        synthetic.write_npy("CIFAR-10.1/cifar10.1_v6_labels.npy", np.array(labels.tolist(), dtype=object),
                            allow_pickle=True)
    with pytest.raises(DataFormatError, match=message):
        CIFAR10_1(synthetic.root)


def test_cifar10_1_missing_names_the_file_and_the_release(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10_1(tmp_path, version="v4")
    assert str(tmp_path / "CIFAR-10.1" / "cifar10.1_v4_data.npy") in str(info.value)
    assert "github.com/modestyachts/CIFAR-10.1" in str(info.value)


def test_corruption_lists():
    assert len(BENCHMARK_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert ALL_CORRUPTIONS == BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
    assert len(set(ALL_CORRUPTIONS)) == 19
    assert BENCHMARK_CORRUPTIONS[0] == "gaussian_noise" and BENCHMARK_CORRUPTIONS[-1] == "jpeg_compression"


@pytest.mark.parametrize("dataset, folder, num_classes", [("cifar10", "CIFAR-10-C", 10),
                                                         ("cifar100", "CIFAR-100-C", 100)])
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_cifar_c_reads_one_severity_block(synthetic, dataset, folder, num_classes, severity):
    labels = synthetic.arrays(N, num_classes)[1]
    stack = synthetic.write_cifar_c(folder, ("fog",), labels)
    ds = CIFARC("fog", severity, dataset=dataset, root=synthetic.root, attach_subgroups=False)
    np.testing.assert_array_equal(ds.images, stack[(severity - 1) * N: severity * N])
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.subgroups is None and len(ds[0]) == 2
    assert ds.description == f"{folder} fog severity {severity}, first {N} test images"
    assert ds.images.flags.writeable and not isinstance(ds.images, np.memmap)


def test_cifar_c_reads_from_c_dir(synthetic):
    labels = synthetic.arrays(N, 10)[1]
    stack = synthetic.write_cifar_c("elsewhere", ("saturate",), labels)
    ds = CIFARC("saturate", 2, c_dir=synthetic.root / "elsewhere", attach_subgroups=False)
    np.testing.assert_array_equal(ds.images, stack[N: 2 * N])


@pytest.mark.parametrize("severity", [0, 6, "1"])
def test_cifar_c_rejects_bad_severity(tmp_path, severity):
    with pytest.raises(ValueError, match="severity"):
        CIFARC("fog", severity, root=tmp_path)


def test_cifar_c_rejects_unknown_corruption(tmp_path):
    with pytest.raises(ValueError, match="unknown corruption 'fogg'"):
        CIFARC("fogg", 1, root=tmp_path)


def test_cifar_c_missing_file_names_path_and_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        CIFARC("frost", 1, dataset="cifar100", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "CIFAR-100-C" / "frost.npy") in message
    assert "zenodo.org/record/3555552" in message and "make-cifar-c" in message


def _corrupt(synthetic, case: str) -> None:
    labels = synthetic.arrays(N, 10)[1]
    stack = synthetic.write_cifar_c("CIFAR-10-C", ("fog",), labels)
    if case == "rows":
        synthetic.write_npy("CIFAR-10-C/fog.npy", stack[:-1])
        synthetic.write_npy("CIFAR-10-C/labels.npy", np.tile(labels, 5)[:-1])
    elif case == "dtype":
        synthetic.write_npy("CIFAR-10-C/fog.npy", stack.astype(np.float32))
    elif case == "shape":
        synthetic.write_npy("CIFAR-10-C/fog.npy", stack.transpose(0, 3, 1, 2))
    elif case == "blocks":
        tiled = np.tile(labels, 5)
        tiled[3 * N] = (tiled[3 * N] + 1) % 10
        synthetic.write_npy("CIFAR-10-C/labels.npy", tiled)
    elif case == "label_rows":
        synthetic.write_npy("CIFAR-10-C/labels.npy", labels)
    elif case == "label_range":
        synthetic.write_npy("CIFAR-10-C/labels.npy", np.tile(labels + 10, 5))
    elif case == "truncated":
        path = synthetic.root / "CIFAR-10-C/fog.npy"
        path.write_bytes(path.read_bytes()[:100_000])
    elif case == "too_many":  # 5 blocks of 10001: more than the test set (a sparse file, nothing written)
        np.lib.format.open_memmap(synthetic.root / "CIFAR-10-C/fog.npy", mode="w+", dtype=np.uint8,
                                  shape=(50005, 32, 32, 3)).flush()


@pytest.mark.parametrize("case, message", [
    ("rows", "99 rows"), ("dtype", "dtype float32"), ("shape", "shape"), ("blocks", "same labels"),
    ("label_rows", r"expected \(100,\)"), ("label_range", r"\[0, 9\]"), ("truncated", "not a readable"),
    ("too_many", "50005 rows"),
])
def test_cifar_c_bad_files_are_rejected(synthetic, case, message):
    _corrupt(synthetic, case)
    with pytest.raises(DataFormatError, match=message):
        CIFARC("fog", 1, root=synthetic.root, attach_subgroups=False)


@pytest.fixture(scope="module")
def cifar10b(shared_file):
    return CIFAR10B(shared_file("cifar10b/cifar10_bgd_cl2img_gp_fine.npy").parents[1])


def test_cifar_c_attaches_the_cifar10b_subgroups(synthetic, shared_data, cifar10b):
    """A --limit'ed set in official order gets the first N CIFAR10-B subgroups at every severity."""
    stack = synthetic.write_cifar_c("CIFAR-10-C", ("contrast",), cifar10b.labels[:N])
    for severity in (1, 5):
        ds = CIFARC("contrast", severity, root=shared_data, c_dir=synthetic.root / "CIFAR-10-C")
        np.testing.assert_array_equal(ds.subgroups, cifar10b.subgroups[:N])
        image, label, subgroup = ds[N - 1]
        assert (label, subgroup) == (cifar10b.labels[N - 1], cifar10b.subgroups[N - 1])
        np.testing.assert_array_equal(ds.images, stack[(severity - 1) * N: severity * N])
        assert ds.num_subgroups == 8


def test_cifar_c_out_of_order_labels_cannot_get_subgroups(synthetic, shared_data, cifar10b):
    synthetic.write_cifar_c("CIFAR-10-C", ("contrast",), cifar10b.labels[1: N + 1])
    with pytest.raises(DataFormatError, match="not in official test order"):
        CIFARC("contrast", 1, root=shared_data, c_dir=synthetic.root / "CIFAR-10-C")


def test_official_size_cifar_c_gets_the_full_cifar10b_vector(synthetic, shared_data, cifar10b):
    """50000 rows (a sparse all-zero file, nothing written): severity 4 is rows 30000..39999."""
    folder = synthetic.root / "CIFAR-10-C"
    folder.mkdir()
    stack = np.lib.format.open_memmap(folder / "pixelate.npy", mode="w+", dtype=np.uint8, shape=(50000, 32, 32, 3))
    stack[30000] = 7
    stack.flush()
    synthetic.write_npy("CIFAR-10-C/labels.npy", np.tile(cifar10b.labels, 5))
    ds = CIFARC("pixelate", 4, root=shared_data, c_dir=folder)
    assert ds.description == "CIFAR-10-C pixelate severity 4"
    assert (ds.images[0] == 7).all() and ds.images[1:].max() == 0
    np.testing.assert_array_equal(ds.subgroups, cifar10b.subgroups)
