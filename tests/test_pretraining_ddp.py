"""Flow pretraining under DDP: 2 CPU processes (gloo) end with identical weights; only rank 0 writes."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

import flowaug.training.flow_trainer as loop
from flowaug.training import PretrainConfig, pretrain

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, tmp: str) -> None:
    """One torchrun-like process: environment, pretrain, then dump the trained (non-EMA) weights."""
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE))
    trained = []

    class RecordingFlow(loop.DecoupledFlow):
        def __init__(self, config):
            super().__init__(config)
            trained.append(self)

    loop.DecoupledFlow = RecordingFlow
    cfg = PretrainConfig(dataset=f"npz:{tmp}/data.npz", out=f"{tmp}/run", preset="tiny", epochs=1,
                         batch_size=8, warmup_steps=1, val_images=4, sample_images=2, log_every=1,
                         threads=1, device="cpu")
    pretrain(cfg)
    torch.save(trained[0].state_dict(), f"{tmp}/rank{rank}.pt")


def test_two_gloo_processes_end_with_identical_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x_train=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8),
             x_test=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    weights = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    initial = loop.DecoupledFlow(loop.get_preset("tiny")).state_dict()
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    assert any(not torch.equal(weights[0][k], initial[k]) for k in initial if initial[k].is_floating_point())
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if r["kind"] == "step"] == [1, 2, 3]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["world_size"] == WORLD_SIZE
    assert (tmp_path / "run" / "flow.pt").exists()
