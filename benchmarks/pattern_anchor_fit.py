"""Can a nuisance code carry a background's pattern? Fit the pattern anchor alone.

    python benchmarks/pattern_anchor_fit.py --out benchmarks/results/pattern_anchor_fit.json

A ``"texture"`` flow (:class:`~flowaug.flow.layers.PatternField`) can move a background's pattern
in a swap only if its code pins the pattern down: a swap subtracts the image's own pattern under
its own code and adds the donor's. This benchmark asks whether that is learnable at all, apart
from the Glow: the posterior encoder and the pattern field of a fresh ``cpu-small-texture`` flow
are trained on :meth:`~flowaug.flow.model.DecoupledFlow.pattern_anchor_error` alone (Adam,
``--steps`` steps of batch 64) on

- ``spurious-texture``: SpuriousBackgrounds' texture cue (training split; stripes, checks, dots,
  rings, grid, grain, each image with a random phase, a period within +-10% and a tilt within
  +-8 degrees): all ten pattern families, and the images of one (``stripes-0``) or two
  (``stripes-0,90``) families only, to see whether the phase or the number of families is in the way;
- ``one-phase-stripes``: a control with the same contrast: vertical or horizontal stripes of
  period 4 with one phase on a flat background, a square object in the middle (the code needs one
  bit);
- ``four-phase-stripes``: the same stripes at one of four phases (the code needs three bits: the
  direction and the phase, as every SpuriousBackgrounds pattern needs its phase);
- ``any-phase-stripes``: the same stripes at a phase drawn uniformly (as SpuriousBackgrounds draws
  it, without its tilt and period jitter).

Reported per dataset (and per pattern family for SpuriousBackgrounds) on held-out images: the
anchor error after training and the error of predicting no pattern (the target's variance), and
their ratio, ``explained`` = 1 - error / variance; for the pattern field as it ships
(``code_map: default``, only its last conv zero-initialised) and with its code map zeroed as well
(``code_map: zero``, the first design), side by side from the same seed.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from common import command_line, environment, write_json
from flowaug.data.spurious import PATTERNS, SpuriousBackgrounds
from flowaug.flow import DecoupledFlow, get_preset


CODE_MAPS = ("default", "zero")
FAMILY_SUBSETS = {"stripes-0": ("stripes-0",), "stripes-0,90": ("stripes-0", "stripes-90"), "all": PATTERNS}
CONTROL_PHASES = {"one": 1, "four": 4, "any": None}
DATASETS = (*(f"spurious-texture/{subset}" for subset in FAMILY_SUBSETS),
            *(f"{name}-phase-stripes" for name in CONTROL_PHASES))


def control_stripes(n: int, seed: int, phases: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,3,32,32) images and (n,1,32,32) masks: stripes of period 4, horizontal or vertical, at one
    of ``phases`` phases a quarter period apart (``None``: any phase), on a flat background around
    a square object."""
    g = torch.Generator().manual_seed(seed)
    base = 0.3 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)
    direction = torch.randint(0, 2, (n,), generator=g)
    phase = 4 * torch.rand(n, 1, generator=g) if phases is None else torch.randint(0, phases, (n, 1), generator=g)
    wave = torch.sign(torch.sin((torch.arange(32.0) + phase) * torch.pi / 2 + 0.7))
    stripes = torch.where(direction.view(n, 1, 1, 1).bool(), wave.view(n, 1, 1, 32), wave.view(n, 1, 32, 1))
    masks = torch.zeros(n, 1, 32, 32)
    masks[:, :, 10:22, 10:22] = 1
    images = torch.lerp(base + 0.095 * stripes, torch.full((n, 3, 32, 32), 0.9), masks)
    return images.clamp(0, 1), masks


@torch.no_grad()
def errors(flow: DecoupledFlow, x: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
    """(anchor error under the codes, the error of predicting no pattern) on ``x``: the second from a
    fresh flow, whose zero-initialised pattern field draws nothing."""
    codes = flow.encoder(x - 0.5)[0]
    blank = DecoupledFlow(flow.config)
    return flow.pattern_anchor_error(x, codes, masks).item(), blank.pattern_anchor_error(x, codes, masks).item()


def fit(x: torch.Tensor, masks: torch.Tensor, steps: int, lr: float, seed: int, code_map: str) -> DecoupledFlow:
    """Train a fresh texture flow's encoder and pattern field on the anchor alone; ``code_map="zero"``
    zeroes the pattern field's code map first (then no gradient reaches the code at the start)."""
    torch.manual_seed(seed)
    flow = DecoupledFlow(get_preset("cpu-small-texture"))
    if code_map == "zero":
        torch.nn.init.zeros_(flow.pattern.linear.weight)
        torch.nn.init.zeros_(flow.pattern.linear.bias)
    optimizer = torch.optim.Adam([*flow.encoder.parameters(), *flow.pattern.parameters()], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(0, len(x), (64,), generator=generator)
        codes = flow.encoder(x[rows] - 0.5)[0]
        loss = flow.pattern_anchor_error(x[rows], codes, masks[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return flow


def summary(fitted: float, zero: float) -> dict[str, float]:
    return {"anchor_error": fitted, "no_pattern_error": zero, "explained": 1.0 - fitted / zero}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--train-images", type=int, default=8192, help="SpuriousBackgrounds images, all families")
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--code-maps", nargs="+", choices=CODE_MAPS, default=list(CODE_MAPS))
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS),
                        help="which fits to run (default: all)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "pattern_anchor_fit", "command": command_line(), "steps": args.steps,
                              "lr": args.lr, "batch_size": 64, "results": {},
                              "environment": environment(torch.device("cpu"), start)}
    train = SpuriousBackgrounds("train", 0.95, args.train_images, cue="texture")
    test = SpuriousBackgrounds("test_shift", 0.95, args.test_images, cue="texture")
    x, _, train_groups, m = train.tensors()
    tx, _, groups, tm = test.tensors()
    controls = {f"{name}-phase-stripes": (control_stripes(args.train_images, args.seed, phases),
                                          control_stripes(args.test_images, args.seed + 1, phases))
                for name, phases in CONTROL_PHASES.items() if f"{name}-phase-stripes" in args.datasets}
    for code_map in args.code_maps:
        report["results"][code_map] = {}
        for subset, families in FAMILY_SUBSETS.items():
            if f"spurious-texture/{subset}" not in args.datasets:
                continue
            ks = torch.tensor([PATTERNS.index(name) for name in families])
            rows, test_rows = torch.isin(train_groups, ks), torch.isin(groups, ks)
            flow = fit(x[rows], m[rows], args.steps, args.lr, args.seed, code_map)
            entry = {**summary(*errors(flow, tx[test_rows], tm[test_rows])), "train_images": int(rows.sum()),
                     "data": test.description, "per_family": {}}
            for k in ks.tolist():
                entry["per_family"][PATTERNS[k]] = summary(*errors(flow, tx[groups == k], tm[groups == k]))
            report["results"][code_map][f"spurious-texture/{subset}"] = entry
        for name, ((sx, sm), (cx, cm)) in controls.items():
            control = fit(sx, sm, args.steps, args.lr, args.seed, code_map)
            report["results"][code_map][name] = summary(*errors(control, cx, cm))
        for name, result in report["results"][code_map].items():
            print(f"code map {code_map}, {name}:",
                  {key: round(value, 4) for key, value in result.items() if isinstance(value, (int, float))}, flush=True)
    report["seconds"] = time.perf_counter() - start
    write_json(report, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
