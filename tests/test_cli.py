"""The flowaug command: numbers are validated where they are typed, --version."""
from __future__ import annotations

import pytest

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
