"""Cost of FlowAug versus common batch augmentations and versus one classifier training step.

Run from the repository root (on a shared CPU, under ``nice``):

    nice -n 10 .venv/bin/python benchmarks/augment_cost.py [--flow runs/flow-cpu-small/flow.pt]

On the same batch of ``--batch-size`` CIFAR-10 test images (the first ones of the split), each
method below runs once per round, ``--repeats`` rounds after one warm-up round, in a rotating
round-robin order so that all methods see the same machine load; the median seconds per batch
is reported:

- FlowAug: ``FlowAug(flow, p=1, mode="swap")(x)`` as a user runs it: for a flow whose code enters
  only its colour map (the default ``cifar10``) the posterior encoder and the colour map, else
  encode + decode of every image;
- FlowAug through the Glow: the same flow forced onto the general path (encode + decode, the work
  that cancels for a colour flow), uncached and with the semantic latents cached in float16
  (``aug.cache_latents(x)``, then ``aug(x)``: rows found by content, decode only);
- RegionalColourSwap (p=1, swap, 4x4 grid), FlowAug's non-learned twin;
- kornia ColorJitter(0.4, 0.4, 0.4, 0.1), RandAugment(n=2, m=10), AutoAugment("cifar10");
  kornia's auto-augment policies draw one sub-policy per call for the whole batch;
- torchvision v2 AugMix on the uint8 batch (ONE op chain per call, shared by the batch) and,
  with ``--augmix-per-image`` (default on), applied image by image (the per-sample cost);
- one training step (forward, backward, SGD step; channels_last, as flowaug.training) of the
  recipe's "small" network and of ResNet-18.

Ratios to the two training steps are the portable numbers; the target is FlowAug (as a user
runs it, default flow) <= 0.25 x a small-CNN step at B = 256. On a CPU the absolute numbers hold for this machine
only. Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` during one call minus the memory
allocated before it; on a CPU (Linux) each method runs in a fresh child process, which resets its
peak-RSS mark after setup (data, models, latent cache, optimizer built) and reports the peak
resident-set increase during its first call (first-call allocations such as gradients and
optimizer buffers included).
Writes ``--out`` (JSON).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common import (DEFAULT_DATA_ROOT, REPO, cifar10_test_batch, command_line, DEFAULT_FLOW, environment,
                    write_json)

from flowaug.augmentation import FlowAug, RegionalColourSwap
from flowaug.errors import FlowaugError
from flowaug.models import build_classifier
from flowaug.pretrained import load_model
from flowaug.training import OPTIMIZERS

TARGET_TO_SMALL_STEP = 0.25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow", default=DEFAULT_FLOW,
                        help="flow checkpoint path or registry name (default: runs/flow-cpu-small/flow.pt "
                             "if it exists, else the registry's cifar10)")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augmix-per-image", action=argparse.BooleanOptionalAction, default=True,
                        help="also time AugMix applied image by image")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="measure peak memory per method")
    parser.add_argument("--probe-memory", default=None, help=argparse.SUPPRESS)  # child-process mode
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "augment_cost.json")
    args = parser.parse_args(argv)
    if args.batch_size < 2 or args.repeats < 1 or args.threads < 1:
        parser.error("--batch-size must be >= 2, --repeats and --threads >= 1")
    return args


@dataclass
class Bench:
    """The shared batch: float32 x (B,3,32,32) in [0,1], uint8 x_u8 (B,3,32,32), labels y (B,), on ``device``."""

    x: torch.Tensor
    y: torch.Tensor
    flow_spec: str
    device: torch.device
    seed: int
    x_u8: torch.Tensor = field(init=False)
    cache_bytes: int | None = None  # set by flowaug_through_glow_cached: memory of its latent cache

    def __post_init__(self) -> None:
        self.x_u8 = (self.x * 255).round().to(torch.uint8)

    @cached_property
    def flow(self) -> torch.nn.Module:
        return load_model(self.flow_spec, "flow").to(self.device)


Step = Callable[[], object]


def through_glow(flow: torch.nn.Module) -> torch.nn.Module:
    """The same flow (shared weights) that FlowAug takes down the general path: encode, decode."""
    clone = copy.copy(flow)
    clone.__class__ = type("ThroughGlow", (type(flow),), {"code_enters_image_end_only": property(lambda self: False)})
    return clone


def flowaug(bench: Bench) -> Step:
    aug = FlowAug(bench.flow, p=1.0, mode="swap", generator=bench.seed)
    return lambda: aug(bench.x)


def flowaug_through_glow(bench: Bench) -> Step:
    aug = FlowAug(through_glow(bench.flow), p=1.0, mode="swap", generator=bench.seed)
    return lambda: aug(bench.x)


def flowaug_through_glow_cached(bench: Bench) -> Step:
    aug = FlowAug(through_glow(bench.flow), p=1.0, mode="swap", generator=bench.seed)
    bench.cache_bytes = aug.cache_latents(bench.x, dtype=torch.float16, progress=False).nbytes
    return lambda: aug(bench.x)


def regional_colour_swap(bench: Bench) -> Step:
    aug = RegionalColourSwap(p=1.0, mode="swap", generator=bench.seed)
    return lambda: aug(bench.x)


def kornia_op(name: str) -> Callable[[Bench], Step]:
    def build(bench: Bench) -> Step:
        import kornia.augmentation as K

        ops = {"ColorJitter": lambda: K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0),
               "RandAugment": lambda: K.auto.RandAugment(n=2, m=10),
               "AutoAugment": lambda: K.auto.AutoAugment(policy="cifar10")}
        op = ops[name]().to(bench.device)
        return lambda: op(bench.x)
    return build


def augmix(per_image: bool) -> Callable[[Bench], Step]:
    def build(bench: Bench) -> Step:
        from torchvision.transforms import v2

        op = v2.AugMix()
        if per_image:
            return lambda: [op(image) for image in bench.x_u8]
        return lambda: op(bench.x_u8)
    return build


def train_step(arch: str) -> Callable[[Bench], Step]:
    def build(bench: Bench) -> Step:
        model = build_classifier(arch, 10).to(bench.device, memory_format=torch.channels_last).train()
        optimizer = OPTIMIZERS["sgd"](model.parameters(), lr=0.01, weight_decay=5e-4)
        x = bench.x.contiguous(memory_format=torch.channels_last)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), bench.y).backward()
            optimizer.step()
        return step
    return build


METHODS: dict[str, Callable[[Bench], Step]] = {
    "flowaug": flowaug,
    "flowaug_through_glow": flowaug_through_glow,
    "flowaug_through_glow_cached": flowaug_through_glow_cached,
    "regional_colour_swap": regional_colour_swap,
    "kornia_color_jitter": kornia_op("ColorJitter"),
    "kornia_randaugment": kornia_op("RandAugment"),
    "kornia_autoaugment": kornia_op("AutoAugment"),
    "torchvision_augmix_batch": augmix(per_image=False),
    "torchvision_augmix_per_image": augmix(per_image=True),
    "train_step_small": train_step("small"),
    "train_step_resnet18": train_step("resnet18"),
}
REFERENCES = {"small": "train_step_small", "resnet18": "train_step_resnet18"}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin(steps: dict[str, Step], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of every step: one untimed warm-up round, then ``repeats`` rounds, each in
    an order rotated by one so no method always follows the same neighbour."""
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in tqdm(range(repeats + 1), desc="timing rounds", unit="round"):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            steps[name]()
            synchronize(device)
            if round_index:
                times[name].append(time.perf_counter() - start)
    return times


def cuda_peak_memory(step: Step, device: torch.device) -> dict[str, Any]:
    """Peak CUDA memory allocated during one call beyond what was allocated before it."""
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    synchronize(device)
    return {"peak_mb": round((torch.cuda.max_memory_allocated(device) - before) / 2**20, 2),
            "measures": "torch.cuda.max_memory_allocated during one call minus memory allocated before it"}


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {key}")


def probe_rss(bench: Bench, name: str) -> dict[str, Any]:
    """In a fresh process: set up ``name``, reset the peak-RSS mark, run one call, report the increase."""
    step = METHODS[name](bench)
    with open("/proc/self/clear_refs", "w") as clear:  # "5" resets VmHWM (peak RSS) to the current RSS
        clear.write("5")
    before = _status_kb("VmRSS")
    step()
    return {"peak_rss_increase_mb": round((_status_kb("VmHWM") - before) / 1024, 2),
            "rss_after_setup_mb": round(before / 1024, 2)}


def cpu_peak_memory(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`probe_rss` for ``name`` in a child process (same flow, batch, threads, seed)."""
    command = [sys.executable, __file__, "--probe-memory", name, "--flow", args.flow, "--data-root",
               args.data_root, "--device", "cpu", "--batch-size", str(args.batch_size),
               "--threads", str(args.threads), "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"peak_mb": None, "error": done.stderr.strip().splitlines()[-1:] or ["no output"]}
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    return {"peak_mb": probe["peak_rss_increase_mb"], "rss_after_setup_mb": probe["rss_after_setup_mb"],
            "measures": "peak RSS increase during the first call in a fresh child process, after setup"}


def summarise(times: dict[str, list[float]], batch_size: int, on_cpu: bool) -> dict[str, dict[str, Any]]:
    """Median seconds, images/s and the ratios to both training steps, per method."""
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = {}
    for name, seconds in medians.items():
        absolute = {"seconds_per_batch_median": round(seconds, 5), "images_per_s": round(batch_size / seconds, 1),
                    "all_seconds": [round(t, 5) for t in times[name]]}
        rows[name] = {
            **{f"ratio_to_{arch}_step": round(seconds / medians[ref], 4) for arch, ref in REFERENCES.items()},
            ("this_machine_only" if on_cpu else "absolute"): absolute,
        }
    return rows


def print_table(rows: dict[str, dict[str, Any]], memory: dict[str, dict[str, Any]], on_cpu: bool) -> None:
    key = "this_machine_only" if on_cpu else "absolute"
    label = "img/s (this machine only)" if on_cpu else "img/s"
    print("\nratios = median seconds per batch / median seconds of one training step on the same batch")
    print(f"\n{'method':30s} {'/ small step':>12s} {'/ ResNet-18 step':>17s} {label:>26s} {'peak MB':>9s}")
    for name, row in rows.items():
        peak = memory.get(name, {}).get("peak_mb")
        print(f"{name:30s} {row['ratio_to_small_step']:12.3f} {row['ratio_to_resnet18_step']:17.3f} "
              f"{row[key]['images_per_s']:26.1f} {'n/a' if peak is None else f'{peak:.1f}':>9s}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    load_start = os.getloadavg()[0]
    try:
        images, labels, description = cifar10_test_batch(args.data_root, args.batch_size)
        bench = Bench(images.to(device), labels.to(device), args.flow, device, args.seed)
        bench.flow  # load now: a bad --flow fails here with a one-line error
    except (FlowaugError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.probe_memory:
        print(json.dumps(probe_rss(bench, args.probe_memory)))
        return 0

    names = [name for name in METHODS if args.augmix_per_image or name != "torchvision_augmix_per_image"]
    print(f"{description}: batch {args.batch_size}, device {device}, {args.threads} thread(s), flow {args.flow}")
    steps = {name: METHODS[name](bench) for name in tqdm(names, desc="setup", unit="method")}
    times = time_round_robin(steps, args.repeats, device)
    if not args.memory:
        memory = {}
    elif device.type == "cuda":
        memory = {name: cuda_peak_memory(steps[name], device) for name in names}
    else:
        memory = {name: cpu_peak_memory(name, args) for name in tqdm(names, desc="memory (child processes)")}
    rows = summarise(times, args.batch_size, device.type == "cpu")
    print_table(rows, memory, device.type == "cpu")

    ratio = rows["flowaug"]["ratio_to_small_step"]
    passed = ratio <= TARGET_TO_SMALL_STEP
    speedup = rows["flowaug_through_glow"]["ratio_to_small_step"] / ratio
    print(f"\nTARGET FlowAug / small-CNN training step = {ratio:.3f} (target <= {TARGET_TO_SMALL_STEP}): "
          f"{'PASS' if passed else 'FAIL'}; {speedup:.1f}x faster than through the Glow")
    flow = bench.flow
    report = {
        "benchmark": "augment_cost",
        "data": description,
        "command": command_line(),
        "batch_size": args.batch_size, "repeats": args.repeats, "seed": args.seed,
        "flow": {"source": args.flow, "config": flow.config.to_dict(), "meta": getattr(flow, "meta", {})},
        "latent_cache_bytes_for_batch": bench.cache_bytes,
        "target": {"measure": "flowaug / train_step_small", "bound": f"<= {TARGET_TO_SMALL_STEP}",
                   "measured": ratio, "pass": passed},
        "speedup_over_the_glow_path": round(speedup, 2),
        "methods": {name: {**rows[name], "peak_memory": memory.get(name)} for name in names},
        "notes": ["kornia RandAugment/AutoAugment and torchvision AugMix (batch) draw one op chain per call "
                  "for the whole batch; augmix_per_image draws one per image",
                  "training steps: SGD (Nesterov, momentum 0.9, wd 5e-4), channels_last, as flowaug.training"],
        "environment": environment(device, load_start),
    }
    write_json(report, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
