"""The README: its code examples run as written (with the shipped flow and ../shared/data), its commands
are CI's, it stays short; the docs' tables of weights and of the main job's output match their sources."""
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
    flow_aug = namespace["flow_aug"]
    assert flow_aug.augmented_count > 0 and namespace["donors"].shape == (128,)
    assert torch.isfinite(namespace["loss"])
    assert "images augmented" in capsys.readouterr().out


def test_ci_runs_the_readme_install_and_test_commands():
    """The README opens with two commands; .ci/run runs the install part of the first and the second."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    install_and_main, test_command = re.search(r"```bash\n(.*?)```", readme, re.DOTALL).group(1).strip().splitlines()
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    install = next(line for line in ci_lines if line.startswith("python3 -m venv"))
    assert install_and_main.startswith(install + " && "), "CI must install exactly as the README says"
    assert "recipes/train_cifar.py" in install_and_main and "--flow" not in install_and_main, \
        "the main job trains with the shipped flow (the default)"
    assert test_command in ci_lines


def test_spurious_backgrounds_example_runs():
    namespace: dict = {}
    exec(compile(readme_example("A controlled background shortcut: SpuriousBackgrounds, masking and FlowAug"),
                 "README.md", "exec"), namespace)
    assert len(namespace["train"]) == 20000 and namespace["masks"].shape == (5000, 1, 32, 32)


def docs_page(name: str) -> str:
    return (REPO / "docs" / name).read_text(encoding="utf-8")


def test_the_readme_stays_short():
    assert len((REPO / "README.md").read_bytes()) <= 12_000, "detail belongs in docs/"


def test_the_pretrained_table_states_each_flows_guard_and_where_it_ships():
    import tomllib

    from flowaug.pretrained import load_pretrained, read_registry

    rows = {cells[1].strip("` "): [cell.strip() for cell in cells[2:-1]]
            for cells in (line.split("|") for line in docs_page("pretrained.md").splitlines())
            if len(cells) > 2 and cells[1].strip().startswith("`")}
    registry = read_registry(REPO / "pretrained")
    assert set(rows) == set(registry), "one row per registry entry"
    bundled = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["flowaug.weights"]
    for name, entry in registry.items():
        _, guard, shipped = rows[name]
        assert shipped == ("yes" if entry.filename in bundled else "Hub"), name
        if entry.kind == "flow":
            bits = load_pretrained(name).meta.get("guard_bits")
            assert guard.startswith("off (no threshold") if bits is None else guard == f"on, {bits:.2f} bits/dim", name


def test_the_main_job_expectation_has_one_source():
    """The docs' printed output of the main job, the printed note and the model card quote the published sweep."""
    import json

    from conftest import load_recipe

    from flowaug.evaluation import headline

    recipe = load_recipe("train_cifar")
    note = recipe.published_expectation("quick", "cifar10", "standard,flowaug", "cifar10")
    assert note.startswith("published for these settings"), "the sweep has the main job's row with seed 0"
    printed = re.search(r"and printed:\n\n```\n(.*?)```", docs_page("recipes.md"), re.DOTALL).group(1)
    report = json.loads(recipe.PUBLISHED.with_suffix("").joinpath("standard+flowaug-s0.json").read_text())
    for name, entry in report["suites"].items():
        assert f"{name}: {headline(entry)}  [{entry['description']}]\n" in printed, name
    assert printed.endswith(f"note: {note}\n")
    seed0 = json.loads(recipe.PUBLISHED.read_text())["methods"]["standard,flowaug"]["runs"]["0"]
    assert recipe.expected_numbers(seed0) in (REPO / "pretrained" / "MODEL_CARD.md").read_text(encoding="utf-8")
