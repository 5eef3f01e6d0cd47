"""Classifier zoo: shapes, internal normalisation, checkpoint round trip and checkpoint errors."""
from __future__ import annotations

import pytest
import torch

from flowaug.errors import CheckpointError
from flowaug.models import CLASSIFIERS, build_classifier, load_classifier, save_classifier
from flowaug.models.layers import CIFAR_MEAN, Normalize


@pytest.mark.parametrize("arch", sorted(CLASSIFIERS))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_output_shape(arch, num_classes):
    model = build_classifier(arch, num_classes).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, num_classes)


def test_resnet18_has_the_cifar_resnet18_size():
    # CIFAR ResNet-18 (3x3 stem, no max-pool, 10 classes) has 11,173,962 parameters
    assert sum(p.numel() for p in build_classifier("resnet18", 10).parameters()) == 11_173_962


def test_models_normalise_internally():
    mean_image = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    assert torch.allclose(Normalize()(mean_image), torch.zeros(1, 3, 32, 32), atol=1e-6)
    assert isinstance(build_classifier("small", 10).features[0], Normalize)


@pytest.mark.parametrize(("arch", "num_classes", "message"), [("vgg", 10, "small"), ("small", 0, "positive")])
def test_build_rejects_bad_arguments(arch, num_classes, message):
    with pytest.raises(ValueError, match=message):
        build_classifier(arch, num_classes)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("small", 10)
    model.train()(torch.rand(8, 3, 32, 32))  # move the BatchNorm running statistics away from their init
    model.eval()
    path = tmp_path / "sub" / "clf.pt"
    save_classifier(model, path, "small", 10, meta={"test_accuracy": 12.5})
    loaded = load_classifier(path)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.meta == {"test_accuracy": 12.5}
    assert not loaded.training


def test_meta_is_stored_as_plain_data(tmp_path):
    path = tmp_path / "clf.pt"
    save_classifier(build_classifier("small", 10), path, "small", 10, meta={"torch": torch.__version__})
    assert type(load_classifier(path).meta["torch"]) is str  # TorchVersion would break weights_only loading
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_classifier(build_classifier("small", 10), path, "small", 10, meta={"bad": object()})


def edit_checkpoint(path, **changes):
    checkpoint = torch.load(path, weights_only=True)
    checkpoint.update(changes)
    torch.save(checkpoint, path)


@pytest.mark.parametrize(("corrupt", "message"), [
    (lambda path: path.unlink(), "does not exist"),
    (lambda path: path.write_bytes(b"not a checkpoint"), "not a readable torch checkpoint"),
    (lambda path: path.write_bytes(path.read_bytes()[:1000]), "not a readable torch checkpoint"),
    (lambda path: torch.save({"weights": 1}, path), "not a flowaug classifier checkpoint"),
    (lambda path: edit_checkpoint(path, format="flowaug-flow"), "not a flowaug classifier checkpoint"),
    (lambda path: edit_checkpoint(path, version=99), "version 99"),
    (lambda path: edit_checkpoint(path, arch="vgg"), "unknown classifier arch 'vgg'"),
    (lambda path: edit_checkpoint(path, num_classes=5), "do not match"),
    (lambda path: edit_checkpoint(path, arch="resnet18"), "do not match"),
])
def test_bad_checkpoints_raise_checkpoint_error(tmp_path, corrupt, message):
    path = tmp_path / "clf.pt"
    save_classifier(build_classifier("small", 10), path, "small", 10)
    corrupt(path)
    with pytest.raises(CheckpointError, match=message):
        load_classifier(path)
