"""``flowaug make-cifar-c``: official layout readable by CIFARC, resume, atomic interruption,
seed independence from the selection and workers, clear errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowaug.cli import main
from flowaug.data import CIFARC
from flowaug.data import make_cifar_c as module
from flowaug.data.make_cifar_c import generate_cifar_c
from flowaug.errors import DataFormatError

CORRUPTIONS = ("fog", "frost", "contrast")


@pytest.fixture(scope="module")
def test_set(shared_file) -> tuple[np.ndarray, np.ndarray, Path]:
    """First 6 real CIFAR-10 test images and labels, and the frost folder."""
    with np.load(shared_file("cifar10/cifar10_jpeg_q75.npz")) as data:
        images, labels = data["x_test"][:6], data["y_test"][:6].astype(np.int64)
    return images, labels, shared_file("cifar_c_frost/frost1.png").parent


def make(test_set, out: Path, **kwargs) -> dict[str, str]:
    images, labels, frost_dir = test_set
    kwargs.setdefault("corruptions", CORRUPTIONS)
    return generate_cifar_c(images, labels, out, frost_dir=frost_dir, progress=False, **kwargs)


def test_cli_limit_run_loads_through_cifarc(shared_data, tmp_path, capsys):
    out = tmp_path / "c"
    code = main(["make-cifar-c", "--data-root", str(shared_data), "--out", str(out), "--limit", "5",
                 "--corruptions", "gaussian_noise", "pixelate", "--seed", "3"])
    assert code == 0
    assert "CIFAR-10 (JPEG-q75 proxy)" in capsys.readouterr().out
    labels = np.load(out / "labels.npy")
    assert labels.dtype == np.uint8 and labels.shape == (25,)
    for name in ("gaussian_noise", "pixelate"):
        array = np.load(out / f"{name}.npy")
        assert array.dtype == np.uint8 and array.shape == (25, 32, 32, 3)
        for severity in (1, 5):
            dataset = CIFARC(name, severity, root=shared_data, c_dir=out)
            assert len(dataset) == 5 and dataset.subgroups.shape == (5,)
            assert np.array_equal(dataset.images, array[(severity - 1) * 5 : severity * 5])
            assert np.array_equal(dataset.labels, labels[:5])
    assert not (out / ".partial").exists()


def test_resume_skips_finished_files(test_set, tmp_path, monkeypatch):
    out = tmp_path / "c"
    assert set(make(test_set, out).values()) == {"written"}
    stamps = {name: (out / f"{name}.npy").stat().st_mtime_ns for name in CORRUPTIONS}

    def fail(*args, **kwargs):
        raise AssertionError("a finished corruption was recomputed")

    monkeypatch.setattr(module, "corrupt_block", fail)
    assert set(make(test_set, out).values()) == {"skipped"}
    assert stamps == {name: (out / f"{name}.npy").stat().st_mtime_ns for name in CORRUPTIONS}


def test_interrupted_run_leaves_no_partial_npy_and_resumes_exactly(test_set, tmp_path, monkeypatch):
    make(test_set, tmp_path / "ref")
    reference = {name: np.load(tmp_path / "ref" / f"{name}.npy") for name in CORRUPTIONS}
    out = tmp_path / "c"
    real = module.corrupt_block

    def interrupt_at_fog_s3(images, corruption, severity, *args, **kwargs):
        if (corruption, severity) == ("fog", 3):
            raise KeyboardInterrupt
        return real(images, corruption, severity, *args, **kwargs)

    monkeypatch.setattr(module, "corrupt_block", interrupt_at_fog_s3)
    with pytest.raises(KeyboardInterrupt):
        make(test_set, out)
    assert not (out / "fog.npy").exists()
    assert sorted(p.name for p in (out / ".partial").iterdir()) == ["fog_s1.npy", "fog_s2.npy"]
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(module, "corrupt_block", real)
    assert set(make(test_set, out).values()) == {"written"}
    for name in CORRUPTIONS:
        assert np.array_equal(np.load(out / f"{name}.npy"), reference[name])


def test_blocks_do_not_depend_on_selection_severities_or_workers(test_set, tmp_path):
    make(test_set, tmp_path / "all")
    status = make(test_set, tmp_path / "parts", corruptions=("contrast", "fog"), severities=(2, 4))
    assert status == {"contrast": "partial: severities [2, 4]", "fog": "partial: severities [2, 4]"}
    assert not (tmp_path / "parts" / "fog.npy").exists()
    make(test_set, tmp_path / "parts", corruptions=("fog",), severities=(1, 3, 5), workers=2)
    assert np.array_equal(np.load(tmp_path / "parts" / "fog.npy"), np.load(tmp_path / "all" / "fog.npy"))


def test_other_seed_into_same_folder_is_refused(test_set, tmp_path):
    make(test_set, tmp_path / "c", corruptions=("contrast",))
    with pytest.raises(DataFormatError, match="holds a set generated with"):
        make(test_set, tmp_path / "c", corruptions=("contrast",), seed=1)


def test_cli_missing_frost_dir_is_a_clear_error(shared_data, tmp_path, capsys):
    code = main(["make-cifar-c", "--data-root", str(shared_data), "--out", str(tmp_path / "c"), "--limit", "2",
                 "--corruptions", "frost", "--frost-dir", str(tmp_path / "missing")])
    assert code == 2
    error = capsys.readouterr().err
    assert "frost textures" in error and "hendrycks/robustness" in error and "--frost-dir" in error
    assert not (tmp_path / "c" / "frost.npy").exists()
