"""A non-editable install ships the default weights (the README example runs from another directory) and
fetches the others from the Hub into the cache (a local hub-style folder stands in for it)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib

from setuptools import find_packages

from flowaug.pretrained import read_registry
from test_readme import REPO, readme_example


def test_pyproject_lists_every_package():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    found = set(find_packages(str(REPO), include=["flowaug*"]))
    assert set(config["packages"]) == found | {"flowaug.weights"}
    assert config["package-dir"] == {"flowaug.weights": "pretrained"}


def test_non_editable_install_finds_its_weights_from_another_directory(tmp_path, shared_file):
    shared_file("cifar10/cifar10_jpeg_q75.npz")
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    for folder in ("flowaug", "pretrained"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True)
    assert (site / "flowaug" / "weights" / "registry.json").is_file()
    work = tmp_path / "elsewhere" / "work"  # the README example reads ../shared/data from where it runs
    work.mkdir(parents=True)
    (work.parent / "shared").symlink_to(REPO.parent / "shared")
    script = work / "example.py"
    script.write_text("import flowaug\nassert flowaug.__file__.startswith(%r)\n" % str(site)
                      + readme_example("FlowAug in a training loop"), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("FLOWAUG_PRETRAINED", None)
    result = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "images augmented" in result.stdout

    shipped = sorted(path.name for path in (site / "flowaug" / "weights").glob("*.pt"))
    assert shipped == ["cifar10-judge.pt", "cifar10.pt"], "only the default flow and the judge ride in the wheel"
    hub = tmp_path / "hub" / "flowaug" / "pretrained" / "main"
    hub.mkdir(parents=True)
    shutil.copy2(REPO / "pretrained" / "cifar10-film.pt", hub)
    script.write_text(FETCH_FROM_LOCAL_HUB % str(tmp_path / "hub"), encoding="utf-8")
    env["FLOWAUG_CACHE"] = str(tmp_path / "cache")
    result = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "fetched DecoupledFlow" in result.stdout
    assert (tmp_path / "cache" / "weights" / "cifar10-film.pt").is_file()


FETCH_FROM_LOCAL_HUB = """
import pathlib, shutil
import huggingface_hub

def fetch(repo_id, filename, revision=None, local_dir=None, **_):
    target = pathlib.Path(local_dir) / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pathlib.Path(%r) / repo_id / (revision or "main") / filename, target)
    return str(target)

huggingface_hub.hf_hub_download = fetch
import flowaug
print("fetched", type(flowaug.load_pretrained("cifar10-film")).__name__)
"""


def test_every_registered_file_ships_in_the_package_or_has_a_hub_address():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    bundled = set(config["package-data"]["flowaug.weights"])
    for name, entry in read_registry(REPO / "pretrained").items():
        assert entry.filename in bundled or entry.hf_hub_id, f"{name}: neither in the wheel nor on the Hub"
