"""CIFAR-10/100 loaders: official pickles, the .npz form, errors, Dataset items and tensors."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from flowaug.data import CIFAR10, CIFAR100, CIFAR100_CLASSES, load_cifar, load_cifar_labels, to_float_chw
from flowaug.data.cifar import CIFAR_SPECS
from flowaug.errors import DataFormatError, DatasetNotFoundError

DATASETS = {"cifar10": CIFAR10, "cifar100": CIFAR100}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("str_keys", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_pickles_load_in_official_order(synthetic, dataset, str_keys, split):
    written = synthetic.write_pickles(dataset, str_keys=str_keys)
    arrays = load_cifar(dataset, split, synthetic.root, source="pickle")
    np.testing.assert_array_equal(arrays.images, written[split][0])
    np.testing.assert_array_equal(arrays.labels, written[split][1])
    assert arrays.images.dtype == np.uint8 and arrays.labels.dtype == np.int64
    assert arrays.description == f"{CIFAR_SPECS[dataset].title} (official)"


def test_pickle_rows_are_channel_planes(synthetic):
    """A row is 1024 red, then 1024 green, then 1024 blue values (the official CHW flattening)."""
    rows = np.repeat(np.array([[10, 20, 30]], dtype=np.uint8), 1024, axis=1)
    entry = {b"data": rows, b"labels": [7]}
    synthetic.write_bytes("cifar-10-batches-py/test_batch", pickle.dumps(entry, protocol=2))
    for i in range(1, 6):
        synthetic.write_bytes(f"cifar-10-batches-py/data_batch_{i}", pickle.dumps(entry, protocol=2))
    image = load_cifar("cifar10", "test", synthetic.root).images[0]
    assert image.shape == (32, 32, 3)
    assert (image == np.array([10, 20, 30], dtype=np.uint8)).all()


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_pickle_and_npz_forms_give_identical_arrays(synthetic, dataset):
    written = synthetic.write_pickles(dataset)
    synthetic.write_npz(CIFAR_SPECS[dataset].npz_file, written)
    for split in ("train", "test"):
        from_pickle = load_cifar(dataset, split, synthetic.root, source="pickle")
        from_npz = load_cifar(dataset, split, synthetic.root, source="npz")
        np.testing.assert_array_equal(from_pickle.images, from_npz.images)
        np.testing.assert_array_equal(from_pickle.labels, from_npz.labels)
        assert from_npz.description == CIFAR_SPECS[dataset].npz_description


def test_auto_prefers_pickles_then_falls_back_to_npz(synthetic):
    npz_split = {"test": synthetic.arrays(5, 10)}
    synthetic.write_npz("cifar10/cifar10_jpeg_q75.npz", npz_split)
    auto = load_cifar("cifar10", "test", synthetic.root)
    assert auto.description == "CIFAR-10 (JPEG-q75 proxy)"
    np.testing.assert_array_equal(auto.images, npz_split["test"][0])
    written = synthetic.write_pickles("cifar10")
    auto = load_cifar("cifar10", "test", synthetic.root)
    assert auto.description == "CIFAR-10 (official)"
    np.testing.assert_array_equal(auto.images, written["test"][0])


def test_data_root_from_environment(synthetic, monkeypatch):
    written = synthetic.write_pickles("cifar10")
    monkeypatch.setenv("FLOWAUG_DATA", str(synthetic.root))
    np.testing.assert_array_equal(load_cifar("cifar10", "test").labels, written["test"][1])


@pytest.mark.parametrize("source, expected", [
    ("auto", ["cifar-10-batches-py/test_batch", "cifar-10-python.tar.gz", "cifar10/cifar10_jpeg_q75.npz", "offline"]),
    ("pickle", ["cifar-10-batches-py/test_batch", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]),
    ("npz", ["cifar10/cifar10_jpeg_q75.npz", "offline"]),
])
def test_missing_dataset_names_paths_and_how_to_get_them(tmp_path, source, expected):
    with pytest.raises(DatasetNotFoundError) as info:
        load_cifar("cifar10", "test", tmp_path, source=source)
    for text in expected:
        assert text in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_truncated_pickle_raises_format_error_with_path(synthetic):
    synthetic.write_pickles("cifar10")
    path = synthetic.root / "cifar-10-batches-py/test_batch"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataFormatError, match="test_batch"):
        load_cifar("cifar10", "test", synthetic.root)


def test_pickle_without_the_label_key_is_rejected(synthetic):
    synthetic.write_pickles("cifar10")
    entry = {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]}
    synthetic.write_bytes("cifar-10-batches-py/test_batch", pickle.dumps(entry, protocol=2))
    with pytest.raises(DataFormatError, match="labels"):
        load_cifar("cifar10", "test", synthetic.root)


def test_truncated_npz_raises_format_error_with_path(synthetic):
    path = synthetic.write_npz("cifar10/cifar10_jpeg_q75.npz", {"test": synthetic.arrays(5, 10)})
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataFormatError, match="cifar10_jpeg_q75.npz"):
        load_cifar("cifar10", "test", synthetic.root)


def _bad(images: np.ndarray, labels: np.ndarray, case: str) -> tuple[np.ndarray, np.ndarray]:
    return {
        "dtype": (images.astype(np.float32), labels),
        "shape": (images[..., 0], labels),
        "chw": (images.transpose(0, 3, 1, 2), labels),
        "range": (images, labels + 10),
        "negative": (images, labels - 1),
        "lengths": (images, labels[:-1]),
        "label_dtype": (images, labels.astype(np.float64)),
    }[case]


@pytest.mark.parametrize("case, message", [
    ("dtype", "dtype float32"), ("shape", "shape"), ("chw", "shape"), ("range", "range"),
    ("negative", "range"), ("lengths", "5 images but 4 labels"), ("label_dtype", "1-D integers"),
])
def test_npz_with_bad_arrays_is_rejected(synthetic, case, message):
    images, labels = synthetic.arrays(5, 10)
    synthetic.write_npz("cifar10/cifar10_jpeg_q75.npz", {"test": _bad(images, labels, case)})
    with pytest.raises(DataFormatError, match=message):
        load_cifar("cifar10", "test", synthetic.root)


def test_npz_missing_a_split_key_is_rejected(synthetic):
    synthetic.write_npz("cifar10/cifar10_jpeg_q75.npz", {"test": synthetic.arrays(5, 10)})
    with pytest.raises(DataFormatError, match="x_train"):
        load_cifar("cifar10", "train", synthetic.root)


@pytest.mark.parametrize("kwargs", [
    {"dataset": "cifar20"}, {"split": "val"}, {"source": "jpeg"},
])
def test_unknown_options_raise_value_error(tmp_path, kwargs):
    args = {"dataset": "cifar10", "split": "test", "source": "auto"} | kwargs
    with pytest.raises(ValueError, match="unknown"):
        load_cifar(args["dataset"], args["split"], tmp_path, source=args["source"])


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_dataset_items_and_tensors(synthetic, dataset):
    written = synthetic.write_pickles(dataset)
    images, labels = written["test"]
    ds = DATASETS[dataset](synthetic.root, split="test")
    assert len(ds) == len(labels)
    image, label = ds[3]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    expected = torch.from_numpy(images[3].transpose(2, 0, 1).astype(np.float32) / 255)
    torch.testing.assert_close(image, expected)
    assert label == labels[3] and isinstance(label, int)
    x, y = ds.tensors()
    assert x.shape == (len(labels), 3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.dtype == torch.int64
    torch.testing.assert_close(x[3], image)
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(y.numpy(), labels)


def test_to_float_chw_rejects_non_uint8():
    with pytest.raises(TypeError, match="uint8"):
        to_float_chw(np.zeros((32, 32, 3), np.float32))


def test_no_download_unless_asked(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", lambda *a, **k: calls.append((a, k)))
    with pytest.raises(DatasetNotFoundError):
        CIFAR10(tmp_path)
    assert calls == []


def test_download_fetches_the_official_tarball_when_asked(synthetic, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, download_root, md5=None, **kwargs):
        calls.append((url, md5))
        synthetic.write_pickles("cifar10")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    ds = CIFAR10(synthetic.root, download=True)
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a")]
    assert ds.description == "CIFAR-10 (official)"
    CIFAR10(synthetic.root, download=True)
    assert len(calls) == 1


def test_labels_fall_back_to_the_labels_only_file(synthetic):
    labels = synthetic.arrays(7, 100)[1]
    (synthetic.root / "cifar100").mkdir()
    np.savez(synthetic.root / "cifar100/cifar100_labels_only.npz", y_test=labels.astype(np.uint8))
    np.testing.assert_array_equal(load_cifar_labels("cifar100", "test", synthetic.root), labels)
    with pytest.raises(DataFormatError, match="y_train"):
        load_cifar_labels("cifar100", "train", synthetic.root)


def test_real_cifar10_npz_proxy(shared_file):
    root = shared_file("cifar10/cifar10_jpeg_q75.npz").parents[1]
    train = load_cifar("cifar10", "train", root)
    test = load_cifar("cifar10", "test", root)
    assert train.images.shape == (50000, 32, 32, 3) and test.images.shape == (10000, 32, 32, 3)
    assert train.description == test.description == "CIFAR-10 (JPEG-q75 proxy)"
    assert (np.bincount(train.labels) == 5000).all() and (np.bincount(test.labels) == 1000).all()


def test_real_proxy_labels_equal_the_lossless_subset(shared_file):
    subset = np.load(shared_file("cifar10/cifar10_lossless_subset.npz"))
    root = shared_file("cifar10/cifar10_jpeg_q75.npz").parents[1]
    test = load_cifar("cifar10", "test", root)
    np.testing.assert_array_equal(test.labels, subset["y_test"])
    error = np.abs(test.images[:1000].astype(int) - subset["x_test_first1000"].astype(int)).mean()
    assert error < 10, f"proxy pixels should be within a few levels of the exact ones, mean abs error {error}"


def test_real_cifar100_class_names_match_the_official_order(shared_file):
    names = np.load(shared_file("cifar100/cifar100_labels_only.npz"))["fine_label_names"]
    assert tuple(names) == CIFAR100_CLASSES
