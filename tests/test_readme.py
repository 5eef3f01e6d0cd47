"""The README's FlowAug example runs as written (with the shipped flow and ../shared/data)."""
from __future__ import annotations

import re
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def readme_example(heading: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_flowaug_training_loop_example_runs(shared_file, capsys, monkeypatch):
    shared_file("cifar10/cifar10_jpeg_q75.npz")
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    exec(compile(readme_example("FlowAug in a training loop"), "README.md", "exec"), namespace)
    aug = namespace["aug"]
    assert aug.augmented_count + aug.fallback_count > 0
    assert torch.isfinite(namespace["loss"])
    assert "images augmented" in capsys.readouterr().out
