"""Pretrain the cpu-small DecoupledFlow on CIFAR-10, the way the shipped ``cifar10-v2`` weights were made:
a warm start from ``cifar10-film`` (itself this recipe from scratch with ``INIT_FROM = None``,
``LR = 1e-3``), trained on with a fresh warm-up and cosine schedule. The default ``cifar10`` flow
(``cpu-small-colour`` with ``colour_anchor``) was made in four warm-started stages: see
``pretrained/MODEL_CARD.md``.

    python recipes/pretrain_flow.py --data-root ../shared/data --out runs/flow-cpu-small --time-limit 90
    torchrun --nproc_per_node=2 recipes/pretrain_flow.py --data-root DIR --out DIR   # DDP, one process per GPU

Everything below is a setting of :class:`flowaug.PretrainConfig`; the training loop
itself is :func:`flowaug.pretrain` (the same code as ``flowaug pretrain``).
Stopped runs (``--time-limit``, Ctrl-C after a checkpoint) continue exactly with ``--resume``.
"""
from __future__ import annotations

import argparse

from flowaug.arguments import HelpFormatter
from flowaug.training import PretrainConfig, pretrain

DATASET = "cifar10"        # or cifar100, folder:PATH, npz:PATH
PRESET = "cpu-small"       # tiny | cpu-small | cpu-small-shift | cpu-small-colour | gpu-base
IMAGE_SIZE = 32
INIT_FROM = "cifar10-film"  # warm start (registry name or checkpoint path); None trains from scratch
EPOCHS = 7                 # the cosine schedule ends here; match it to the time you have
BATCH_SIZE = 64            # global batch (split across torchrun processes)
LR = 5e-4                  # Adam peak learning rate
WARMUP_STEPS = 200
GRAD_CLIP = 50.0
EMA_DECAY = 0.999          # exported weights are the EMA
HFLIP = True
SEED = 0
CHECKPOINT_EVERY = 300     # steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--data-root", help="folder with cifar-10-batches-py/ or cifar10/cifar10_jpeg_q75.npz")
    parser.add_argument("--out", default="runs/flow-cpu-small")
    parser.add_argument("--time-limit", type=float, help="minutes; stop with a checkpoint, continue with --resume")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    cfg = PretrainConfig(
        dataset=DATASET, out=args.out, preset=PRESET, data_root=args.data_root, image_size=IMAGE_SIZE,
        epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR, warmup_steps=WARMUP_STEPS, grad_clip=GRAD_CLIP,
        ema=EMA_DECAY, hflip=HFLIP, seed=SEED, checkpoint_every=CHECKPOINT_EVERY,
        time_limit=args.time_limit, resume=args.resume, threads=args.threads, init_from=INIT_FROM,
    )
    print(f"flow weights: {pretrain(cfg)}")


if __name__ == "__main__":
    main()
