"""``flowaug data check``: the dataset table, checksums, exit codes; plus file hashing."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from flowaug.cli import main
from flowaug.data.checksums import KNOWN_CHECKSUMS
from flowaug.fileio import file_digest

SHARED_FILES = {
    "CIFAR-10 (JPEG-q75 proxy npz)": "cifar10/cifar10_jpeg_q75.npz",
    "CIFAR-10 lossless subset": "cifar10/cifar10_lossless_subset.npz",
    "CIFAR-100 labels only": "cifar100/cifar100_labels_only.npz",
    "CIFAR10-B": "cifar10b/cifar10_bgd_cl2img_gp_fine.npy",
    "CIFAR100-B": "cifar100b/cifar100_bgd_cl2img_gp_fine.npy",
}


def _run(capsys, *argv: str) -> tuple[int, dict[str, list[str]], str]:
    """Run the command; return (exit code, table rows keyed by dataset name split into columns, stdout)."""
    code = main(["data", "check", *argv])
    out = capsys.readouterr().out
    table = out.split("\n\n")[0].splitlines()[3:]
    rows = {}
    for line in table:
        name, rest = line.split("  ", 1)
        rows[name] = rest.split()
    return code, rows, out


def test_real_shared_data_reports_ok_checksums(capsys, shared_file):
    root = shared_file(SHARED_FILES["CIFAR10-B"]).parents[1]
    for relative in SHARED_FILES.values():
        shared_file(relative)
    code, rows, out = _run(capsys, "--data-root", str(root))
    assert code == 0
    for name in SHARED_FILES:
        assert rows[name][0] == "found" and rows[name][-1] == "ok", (name, rows[name])
    assert rows["CIFAR-10 (JPEG-q75 proxy npz)"][-3:-1] == ["x_train:50000", "x_test:10000"]
    assert rows["CIFAR-C frost textures"][:2] == ["found", "5/5"] and rows["CIFAR-C frost textures"][-1] == "unknown"
    assert rows["CIFAR-10.1 v6"][0] == "missing"
    assert "https://github.com/modestyachts/CIFAR-10.1" in out


def test_empty_root_is_a_report_not_a_failure(capsys, tmp_path):
    code, rows, out = _run(capsys, "--data-root", str(tmp_path / "nothing"))
    assert code == 0
    assert len(rows) == 13 and {r[0] for r in rows.values()} == {"missing"}
    for url in ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                "https://zenodo.org/record/2535967", "https://zenodo.org/record/3555552",
                "https://github.com/charismaticchiu/"):
        assert url in out


def test_data_root_from_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWAUG_DATA", str(tmp_path))
    main(["data", "check"])
    assert f"data root: {tmp_path}" in capsys.readouterr().out


def test_mismatch_gives_a_non_zero_exit_and_no_hash_skips(capsys, synthetic):
    synthetic.write_bytes("cifar10b/cifar10_bgd_cl2img_gp_fine.npy", b"not the authors' file")
    code, rows, out = _run(capsys, "--data-root", str(synthetic.root))
    assert code == 1 and rows["CIFAR10-B"][-1] == "MISMATCH" and "MISMATCH: CIFAR10-B" in out
    code, rows, _ = _run(capsys, "--data-root", str(synthetic.root), "--no-hash")
    assert code == 0 and rows["CIFAR10-B"][-1] == "skipped"


def test_official_pickles_are_checked_against_torchvision_md5(capsys, synthetic):
    synthetic.write_pickles("cifar10")
    code, rows, _ = _run(capsys, "--data-root", str(synthetic.root))
    assert code == 1
    assert rows["CIFAR-10 (official pickles)"][:2] == ["partial", "6/7"]
    assert rows["CIFAR-10 (official pickles)"][-1] == "MISMATCH"


def test_partial_cifar_c_counts_images(capsys, synthetic):
    synthetic.write_cifar_c("CIFAR-10-C", ("fog", "snow"), np.arange(4) % 10)
    code, rows, out = _run(capsys, "--data-root", str(synthetic.root))
    assert code == 0
    assert rows["CIFAR-10-C"][:2] == ["partial", "3/20"]
    assert "2 x 20 images" in " ".join(rows["CIFAR-10-C"]) and rows["CIFAR-10-C"][-1] == "unknown"
    assert "CIFAR-10-C: https://zenodo.org/record/2535967" in out


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_file_digest_matches_hashlib(tmp_path, algorithm):
    path = tmp_path / "blob"
    content = bytes(range(256)) * 41
    path.write_bytes(content)
    assert file_digest(path, algorithm, chunk_size=7) == hashlib.new(algorithm, content).hexdigest()


def test_known_checksums_are_well_formed():
    lengths = {"md5": 32, "sha256": 64}
    for relative, (algorithm, digest) in KNOWN_CHECKSUMS.items():
        assert len(digest) == lengths[algorithm] and int(digest, 16) >= 0, relative
