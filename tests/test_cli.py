"""The flowaug command: numbers are validated where they are typed, --version."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from flowaug import __version__
from flowaug.cli import main


@pytest.mark.parametrize("argv", [["evaluate", "--checkpoint", "x", "--batch-size", "0"],
                                  ["grid", "--images", "-8"], ["pretrain", "--dataset", "cifar10", "--out", "o",
                                                               "--max-train-images", "0"],
                                  ["make-cifar-c", "--out", "o", "--workers", "2.5"]])
def test_numbers_are_checked_where_they_are_typed(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "must be >= " in err or "whole number" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"flowaug {__version__}"


def test_grid_labels_its_rows_and_reads_the_benchmark_and_image_folders(tiny_flow_path, tmp_path, capsys):
    from PIL import Image

    from flowaug.augmentation import FlowAug
    from flowaug.cli.grid import augmentation_rows
    from flowaug.data.specs import load_image_sample

    images = load_image_sample("spurious", 3, seed=0).images
    aug = FlowAug(tiny_flow_path, mode="swap", generator=0)
    rows = augmentation_rows(aug, images, 2)
    assert [label for label, _ in rows] == ["original", "donor", "swap 1", "swap 2"] and aug.p == 0.5
    donors = rows[1][1]
    assert all(any(torch.equal(d, x) for x in images) for d in donors)
    assert not torch.equal(rows[2][1], images)

    assert main(["grid", "--flow", str(tiny_flow_path), "--images-from", "spurious", "--images", "3",
                 "--per-image", "2", "--zoom", "3", "--out", str(tmp_path / "s.png")]) == 0
    small = Image.open(tmp_path / "s.png").size
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 50, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    assert main(["grid", "--flow", str(tiny_flow_path), "--images-from", f"folder:{folder}", "--images", "3",
                 "--mode", "prior", "--per-image", "2", "--zoom", "6", "--out", str(tmp_path / "f.png")]) == 0
    assert Image.open(tmp_path / "f.png").size[0] > small[0], "a larger zoom draws larger tiles"
    assert "image folder" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["pretrain", "make-cifar-c", "make-spurious", "evaluate", "grid", "explain"])
def test_help_texts_show_no_markup_and_each_default_once(command, capsys):
    from flowaug.cli import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "(default: None)" not in text and not re.search(r"[a-z)]\.\.(\s|$)", text)
    assert not any(line.count("(default") > 1 for line in text.replace("\n                       ", " ").splitlines())
