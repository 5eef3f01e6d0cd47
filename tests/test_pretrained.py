"""Pretrained registry: manifest parsing, hash verification, loading flows and classifiers."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from flowaug.errors import CheckpointError, ChecksumMismatchError, DataFormatError, UnknownPretrainedError
from flowaug.flow import DecoupledFlow, get_preset, save_flow
from flowaug.fileio import sha256_file
from flowaug.models import build_classifier, save_classifier
from flowaug.pretrained import (MANIFEST_NAME, SOURCE_PRETRAINED_DIR, PretrainedEntry, available_pretrained, load_model,
                                load_pretrained, read_registry, register_pretrained, weights_cache, write_registry)


@pytest.fixture()
def registry_dir(tmp_path):
    """A pretrained directory with a tiny flow ("toy-flow") and a small classifier ("toy-classifier")."""
    torch.manual_seed(0)
    flow = DecoupledFlow(get_preset("tiny"))
    flow.initialize(torch.rand(4, 3, 32, 32))
    save_flow(flow, tmp_path / "toy.pt", meta={"note": "test"})
    save_classifier(build_classifier("small", 10), tmp_path / "toy-classifier.pt", "small", 10)
    register_pretrained("toy-flow", "toy.pt", "flow", "tiny test flow", registry_dir=tmp_path)
    register_pretrained("toy-classifier", "toy-classifier.pt", "classifier", "test classifier", registry_dir=tmp_path)
    return tmp_path


def test_manifest_lists_one_entry_per_line(registry_dir):
    lines = (registry_dir / MANIFEST_NAME).read_text().splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and len(lines) == 4
    assert json.loads("{" + lines[1].rstrip(",") + "}")["toy-classifier"]["kind"] == "classifier"
    assert available_pretrained(registry_dir) == ["toy-classifier", "toy-flow"]
    assert read_registry(registry_dir)["toy-flow"].sha256 == sha256_file(registry_dir / "toy.pt")


def test_load_flow(registry_dir):
    flow = load_pretrained("toy-flow", registry_dir=registry_dir)
    reference = DecoupledFlow.from_checkpoint(registry_dir / "toy.pt")
    x = torch.rand(2, 3, 32, 32)
    assert isinstance(flow, DecoupledFlow) and flow.meta == {"note": "test"}
    with torch.no_grad():
        assert torch.equal(flow.encode(x).semantic, reference.encode(x).semantic)


def test_load_classifier(registry_dir):
    classifier = load_pretrained("toy-classifier", registry_dir=registry_dir)
    with torch.no_grad():
        assert classifier(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_environment_variable_selects_directory(registry_dir, monkeypatch):
    monkeypatch.setenv("FLOWAUG_PRETRAINED", str(registry_dir))
    assert available_pretrained() == ["toy-classifier", "toy-flow"]
    assert isinstance(load_pretrained("toy-flow"), DecoupledFlow)


def test_unknown_name_lists_choices(registry_dir):
    with pytest.raises(ValueError, match="toy-classifier"):
        load_pretrained("imagenet", registry_dir=registry_dir)


def test_missing_manifest_means_empty_registry(tmp_path):
    assert available_pretrained(tmp_path) == []
    with pytest.raises(ValueError, match="missing or empty"):
        load_pretrained("cifar10", registry_dir=tmp_path)


def test_missing_weights_file(registry_dir):
    (registry_dir / "toy.pt").unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained("toy-flow", registry_dir=registry_dir)


def test_hash_mismatch(registry_dir):
    with open(registry_dir / "toy.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        load_pretrained("toy-flow", registry_dir=registry_dir)


@pytest.mark.parametrize("kind", ["flow", "classifier"])
def test_corrupt_file_with_matching_hash(tmp_path, kind):
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    register_pretrained("bad", "bad.pt", kind, "corrupt", registry_dir=tmp_path)
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_pretrained("bad", registry_dir=tmp_path)


def test_register_requires_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="copy the weights"):
        register_pretrained("x", "absent.pt", "flow", "missing", registry_dir=tmp_path)


GOOD_FIELDS = {"filename": "a.pt", "sha256": "0" * 64, "kind": "flow", "description": "d"}


@pytest.mark.parametrize("text", [
    "{not json",
    "[]",
    json.dumps({"a": {k: v for k, v in GOOD_FIELDS.items() if k != "sha256"}}),
    json.dumps({"a": {**GOOD_FIELDS, "kind": "gan"}}),
    json.dumps({"a": {**GOOD_FIELDS, "sha256": "abc"}}),
    json.dumps({"a": {**GOOD_FIELDS, "filename": "../a.pt"}}),
    json.dumps({"a": {**GOOD_FIELDS, "url": "http://x"}}),
])
def test_malformed_manifest(tmp_path, text):
    (tmp_path / MANIFEST_NAME).write_text(text)
    with pytest.raises(DataFormatError, match="malformed"):
        available_pretrained(tmp_path)


def test_shipped_manifest_entries_exist_and_match():
    for name, entry in read_registry(SOURCE_PRETRAINED_DIR).items():
        path = SOURCE_PRETRAINED_DIR / entry.filename
        assert path.is_file(), f"registry entry {name!r}: {path} is missing"
        assert sha256_file(path) == entry.sha256, f"registry entry {name!r}: hash differs"


def test_load_model_names_a_missing_checkpoint_path(tmp_path):
    with pytest.raises(CheckpointError, match="typo.pt does not exist"):
        load_model(tmp_path / "typo.pt", kind="flow")
    with pytest.raises(UnknownPretrainedError, match="unknown pretrained weights 'no-such-model'"):
        load_model("no-such-model", kind="classifier")


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """A local hub-style folder (``<root>/<owner>/<repo>/<revision>/<file>``) served in place of the
    Hugging Face Hub, and an empty weights cache; ``hub.calls`` counts the fetches."""
    import shutil

    import huggingface_hub

    root, calls = tmp_path / "hub", []

    def fake_download(repo_id, filename, *, revision=None, local_dir=None, **_):
        calls.append((repo_id, filename, revision))
        source = root / repo_id / (revision or "main") / filename
        if not source.is_file():
            raise huggingface_hub.errors.EntryNotFoundError(f"{filename} is not in {repo_id}")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("FLOWAUG_CACHE", str(tmp_path / "cache"))
    return SimpleNamespace(root=root, calls=calls)


def move_to_hub(registry_dir: Path, hub, name: str, hf_hub_id: str) -> Path:
    """Give entry ``name`` an ``hf_hub_id`` and move its file from the registry into the hub folder."""
    entries = read_registry(registry_dir)
    write_registry({**entries, name: replace(entries[name], hf_hub_id=hf_hub_id)}, registry_dir)
    repo, _, revision = hf_hub_id.partition("@")
    target = hub.root / repo / (revision or "main") / entries[name].filename
    target.parent.mkdir(parents=True)
    (registry_dir / entries[name].filename).rename(target)
    return target


def test_weights_not_shipped_are_fetched_once_into_the_cache_and_verified(registry_dir, hub):
    move_to_hub(registry_dir, hub, "toy-flow", "owner/repo@v1")
    assert '"hf_hub_id": "owner/repo@v1"' in (registry_dir / MANIFEST_NAME).read_text()
    flow = load_pretrained("toy-flow", registry_dir=registry_dir)
    assert isinstance(flow, DecoupledFlow) and hub.calls == [("owner/repo", "toy.pt", "v1")]
    cached = weights_cache() / "toy.pt"
    assert cached.is_file()
    load_pretrained("toy-flow", registry_dir=registry_dir)
    assert len(hub.calls) == 1, "the second load reads the cache"
    cached.write_bytes(b"not the weights")
    with pytest.raises(ChecksumMismatchError, match="delete it to fetch it again"):
        load_pretrained("toy-flow", registry_dir=registry_dir)


def test_weights_placed_by_hand_in_the_cache_need_no_hub(registry_dir, hub):
    file = move_to_hub(registry_dir, hub, "toy-classifier", "owner/repo")
    weights_cache().mkdir(parents=True)
    file.rename(weights_cache() / file.name)
    assert isinstance(load_pretrained("toy-classifier", registry_dir=registry_dir), torch.nn.Module)
    assert hub.calls == []


def test_without_network_the_error_names_the_entry_the_cache_and_the_address(registry_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWAUG_CACHE", str(tmp_path / "cache"))
    entries = read_registry(registry_dir)
    write_registry({**entries, "toy-flow": replace(entries["toy-flow"], hf_hub_id="owner/repo")}, registry_dir)
    (registry_dir / "toy.pt").unlink()
    with pytest.raises(CheckpointError) as error:  # the real huggingface_hub, offline (tests/conftest.py)
        load_pretrained("toy-flow", registry_dir=registry_dir)
    message = str(error.value)
    assert "'toy-flow' do not ship with this install" in message and "owner/repo" in message
    assert "https://huggingface.co/owner/repo/resolve/main/toy.pt" in message
    assert str(tmp_path / "cache" / "weights" / "toy.pt") in message


@pytest.mark.parametrize("hub_id", ["no-slash", "a/b/c", "owner/repo@", "own er/repo"])
def test_a_bad_hub_id_is_named(hub_id):
    with pytest.raises(ValueError, match="hf_hub_id must be owner/repo"):
        PretrainedEntry("x", "x.pt", "0" * 64, "flow", "d", hub_id)
