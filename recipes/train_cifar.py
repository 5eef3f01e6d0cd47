"""Train a CIFAR classifier with FlowAug or a baseline augmentation, then evaluate its fairness and robustness.

    python recipes/train_cifar.py --aug standard,flowaug            # the README's main job (profile quick)
    python recipes/train_cifar.py --aug standard,randaugment --profile cpu --seed 1 --out runs/cifar/ra-s1
    python recipes/train_cifar.py --aug standard,flowaug --profile smoke --flow runs/flow-cpu-small/checkpoint.pt
    torchrun --nproc_per_node=2 recipes/train_cifar.py --aug standard,flowaug --profile gpu   # DDP

Every method gets the same model, epochs, schedule and seeds; only ``--aug`` differs (names and
how each draws per sample: :mod:`flowaug.augmentation.baselines`). The run folder ``--out`` holds
``config.json``, ``metrics.jsonl`` (one line per epoch), ``train_state.pt`` (the same command continues it),
``model.pt`` (:func:`flowaug.save_classifier`) and ``report.json``: the :func:`flowaug.evaluate`
report (clean accuracy; CIFAR-B subgroup accuracies, MacroStd, worst group; CIFAR-C from the official
files under the data root or ``--c-dir``, else generated first by ``flowaug make-cifar-c`` from the
first ``--c-limit`` test images unless ``--no-make-c``, once per data root, image count and seed
into the shared cache (:func:`flowaug.data.make_cifar_c.shared_cifar_c_dir`) so later runs reuse it;
CIFAR-10.1 when present) plus the wall time split into data, augmentation, model and evaluation.
``FLOWAUG_THREADS`` sets torch's CPU threads (default: 1, printed at the start).
One progress bar covers the whole training run, with an ETA smoothed over many steps.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowaug.arguments import HelpFormatter, non_negative_int, positive_int
from flowaug.augmentation import FlowAug
from flowaug.augmentation.baselines import AugmentContext, build_augment, parse_augmentations
from flowaug.data import CIFAR10_1, load_cifar
from flowaug.data.cifar_c import cifar_c_dir
from flowaug.data.make_cifar_c import generate_once, shared_cifar_c_dir
from flowaug.errors import DatasetNotFoundError, FlowaugError
from flowaug.evaluation import SUITES, evaluate, headline
from flowaug.fileio import atomic_write_text, claim_run_folder, finished_run
from flowaug.models import CLASSIFIERS, build_classifier, save_classifier
from flowaug.pretrained import load_model
from flowaug.data.base import to_float_images
from flowaug.training import Runtime, device_name, train_classifier


@dataclass(frozen=True)
class Profile:
    """Defaults of one scale; every field can be overridden on the command line."""

    model: str
    epochs: int
    batch_size: int
    lr: float
    train_images: int | None   # None: the whole training split
    eval_limit: int | None     # None: every test image of every suite
    c_limit: int | None        # images per CIFAR-C block (None: eval_limit)
    amp: bool
    channels_last: bool
    flowaug_cache: bool = False  # encode the training set once; FlowAug then only decodes per step
    expect: str = ""           # printed with the results: what a healthy run of this profile looks like (for
                               # quick, :func:`published_expectation` when the sweep published the settings)


PUBLISHED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "cifar10b_cpu_quick_5seeds.json"
PROFILES = {
    "smoke": Profile("small", epochs=2, batch_size=256, lr=0.2, train_images=4096, eval_limit=200,
                     c_limit=None, amp=False, channels_last=False,
                     expect="the smoke profile checks the pipeline, not the method: after 2 epochs on 4,096 images "
                            "expect roughly 20-35% clean accuracy, a worst group near 0% and a large MacroStd"),
    "quick": Profile("small", epochs=5, batch_size=256, lr=0.2, train_images=None, eval_limit=None,
                     c_limit=1000, amp=False, channels_last=False, flowaug_cache=True),
    "cpu": Profile("small", epochs=10, batch_size=256, lr=0.2, train_images=None, eval_limit=None,
                   c_limit=1000, amp=False, channels_last=False),
    "gpu": Profile("resnet18", epochs=40, batch_size=512, lr=0.2, train_images=None, eval_limit=None,
                   c_limit=None, amp=True, channels_last=True),
}
OPTIMIZER = "sgd"          # Nesterov, momentum 0.9 (flowaug.training.OPTIMIZERS)
WEIGHT_DECAY = 5e-4
LABEL_SMOOTHING = 0.2
WARMUP_FRACTION = 0.2      # one-cycle: linear warm-up, then linear decay to 0
FLOW = "cifar10"           # registry name or checkpoint path of the pretrained flow
FLOWAUG_P = 0.5            # probability that an image is FlowAug-ed
FLOWAUG_MODE = "swap"      # nuisance code of another image of the batch
SEED = 0
DEFAULT_THREADS = 1        # torch CPU threads unless FLOWAUG_THREADS says otherwise: on the 2-core development
                           # machine one thread was 5x faster than torch's default of two (issue 15's A/B)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--aug", default="standard,flowaug",
                        help="augmentation(s), comma-separated: see flowaug.augmentation.baselines")
    parser.add_argument("--profile", default="quick", choices=list(PROFILES),
                        help="quick: the README's main job, 5 epochs with the latent cache; cpu: the published CPU "
                             "protocol, 10 epochs; gpu: ResNet-18, 40 epochs; smoke: a pipeline check")
    parser.add_argument("--model", choices=sorted(CLASSIFIERS), help="default: the profile's")
    parser.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100"])
    parser.add_argument("--data-root", help="data root (default: $FLOWAUG_DATA)")
    parser.add_argument("--epochs", type=positive_int)
    parser.add_argument("--batch-size", type=positive_int, help="global batch (split across torchrun processes)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=non_negative_int, default=SEED)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bfloat16 autocast (default: profile)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, help="default: profile")
    parser.add_argument("--train-images", type=positive_int, help="train on the first N images (default: profile)")
    parser.add_argument("--aug-workers", type=non_negative_int, default=0,
                        help="processes for the per-image policies (randaugment, autoaugment, trivialaugment, "
                             "augmix); 0: in the training process")
    parser.add_argument("--flowaug-cache", action=argparse.BooleanOptionalAction,
                        help="encode the training set once (float32 latent cache, 614 MB for CIFAR-10) so FlowAug "
                             "only decodes per step; the same augmentation up to float rounding (default: profile; "
                             "ignored without flowaug in --aug and for a colour flow such as cifar10, which "
                             "decodes no semantic latent)")
    parser.add_argument("--flow", default=FLOW, help="FlowAug's flow: registry name or checkpoint path")
    parser.add_argument("--out", type=Path, help="run folder (default: runs/train_cifar/<profile>/<aug>-s<seed>)")
    parser.add_argument("--stop-after", type=positive_int, help="stop after this epoch (checkpointed; run the same command "
                        "again to continue)")
    parser.add_argument("--eval-suites", nargs="+",
                        help="default: clean, B, C (see --make-c) and 10.1 where its files exist")
    parser.add_argument("--c-dir", type=Path,
                        help="CIFAR-C folder (official or from `flowaug make-cifar-c`); default: the official folder "
                             "under the data root, else the shared cache folder ($FLOWAUG_CACHE or ~/.cache/flowaug, "
                             "cifar-c/)")
    parser.add_argument("--make-c", action=argparse.BooleanOptionalAction, default=True,
                        help="when the CIFAR-C folder has no files, generate them first with `flowaug make-cifar-c` "
                             "(first --c-limit test images; once per data root, image count and seed, shared by runs)")
    parser.add_argument("--eval-limit", type=positive_int, help="evaluate the first N images of every set (default: profile)")
    parser.add_argument("--c-limit", type=positive_int,
                        help="first N images of every CIFAR-C corruption x severity block (default: profile, "
                             "else --eval-limit)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    args = parser.parse_args(argv)
    args.command = shlex.join(["recipes/train_cifar.py", *(sys.argv[1:] if argv is None else argv)])
    if args.flowaug_cache and "flowaug" not in args.aug.split(","):
        parser.error(f"--flowaug-cache needs flowaug in --aug (got {args.aug!r})")
    profile = PROFILES[args.profile]
    overridden = [field for field in asdict(profile) if getattr(args, field, None) is not None]
    for field, value in asdict(profile).items():
        if getattr(args, field, None) is None:
            setattr(args, field, value)
    if not set(overridden) - {"flowaug_cache"}:  # the profile as published (the cache changes float rounding only)
        args.expect = published_expectation(args.profile, args.dataset, args.aug, str(args.flow)) or args.expect
    args.flowaug_cache = args.flowaug_cache and "flowaug" in args.aug.split(",")
    args.out = args.out or Path("runs/train_cifar") / args.profile / f"{args.aug.replace(',', '+')}-s{args.seed}"
    return args


def expected_numbers(run: dict[str, Any]) -> str:
    """One run's headline as the expectation states it, e.g. ``clean 81.52%, MacroStd 5.11, worst group
    76.79%, CIFAR-10-C 67.66%`` (``run``: a run summary of :mod:`recipes.reproduce`'s JSON)."""
    return (f"clean {run['clean_accuracy']:.2f}%, MacroStd {run['macro_std']:.2f}, worst group "
            f"{run['worst_group_accuracy']:.2f}%, CIFAR-10-C {run['cifar_c_accuracy']:.2f}%")


def published_expectation(profile: str, dataset: str, aug: str, flow: str, published: Path = PUBLISHED) -> str:
    """What a healthy run with these settings prints, from the published five-seed sweep of the quick
    profile (:data:`PUBLISHED`, its row for ``aug`` and ``flow``): seed 0's numbers and minutes, and the
    mean and sample std over the seeds; "" when the sweep has no such row."""
    if profile != "quick" or dataset != "cifar10" or not published.is_file():
        return ""
    results = json.loads(published.read_text())
    names = set(aug.split(","))
    for row, entry in results["methods"].items():
        methods, _, row_flow = row.partition("@")
        if set(methods.split(",")) != names or ("flowaug" in names and (row_flow or FLOW) != flow):
            continue
        if "0" not in entry["runs"]:
            return ""
        seed0 = entry["runs"]["0"]
        spread = {key: f"{entry[key]['mean']:.2f} ± {entry[key]['std']:.2f}" for key in
                  ("clean_accuracy", "macro_std", "worst_group_accuracy", "cifar_c_accuracy")} \
            if entry["clean_accuracy"]["std"] is not None else None
        text = (f"published for these settings ({published.stem}, {', '.join(results['hardware'])}, one thread "
                f"beside one other run): seed 0 printed {expected_numbers(seed0)} in {seed0['wall_minutes']:.0f} min")
        if spread:
            text += (f"; over seeds {', '.join(str(s) for s in entry['seeds'])}: clean {spread['clean_accuracy']}%, "
                     f"MacroStd {spread['macro_std']}, worst group {spread['worst_group_accuracy']}%, CIFAR-10-C "
                     f"{spread['cifar_c_accuracy']}% (mean ± sample std)")
        return text + "; another CPU rounds differently and lands within about the seed spread"
    return ""


def cifar_c_folder(args: argparse.Namespace) -> Path | None:
    """The CIFAR-C folder to evaluate on: ``--c-dir``, else the official one under the data root, else
    the shared cache folder of the first N = ``--c-limit`` test images
    (:func:`flowaug.data.make_cifar_c.shared_cifar_c_dir`: one copy for every run on the same pixels).
    Generated now when it holds no ``labels.npy`` and ``--make-c`` is on (17 s for 1,000 images
    on 2 CPU cores beside one training run); None when there is none."""
    official = cifar_c_dir(args.dataset, args.data_root)
    if args.c_dir is None and (official / "labels.npy").is_file():
        return official
    limit = args.c_limit or args.eval_limit
    folder = args.c_dir or shared_cifar_c_dir(args.dataset, args.data_root, limit)
    if not (folder / "labels.npy").is_file():
        if not args.make_c:
            return None
        generate_once(args.dataset, args.data_root, folder, limit, workers=os.cpu_count() or 1)
    return folder


def default_suites(dataset: str, data_root: str | None, c_dir: Path | None) -> list[str]:
    """Clean and CIFAR-B always; CIFAR-C when there is a folder for it; CIFAR-10.1 when present."""
    suites = ["clean", f"{dataset}b"]
    if c_dir is not None:
        suites.append(f"{dataset}c")
    if dataset == "cifar10":
        try:
            CIFAR10_1(data_root)
            suites.append("cifar10.1")
        except DatasetNotFoundError:
            pass
    return suites


def flowaug_counts(augment: nn.Module) -> dict[str, int]:
    """FlowAug's counters (:attr:`flowaug.FlowAug.COUNTERS`: images changed, non-finite
    fallbacks, rejected by the guard, ...) summed over its instances in ``augment``, of this process
    (under DDP: rank 0's share); empty without FlowAug."""
    instances = [module for module in augment.modules() if isinstance(module, FlowAug)]
    return {f"flowaug_{name}": sum(getattr(module, name) for module in instances)
            for name in FlowAug.COUNTERS} if instances else {}


def train(args: argparse.Namespace, runtime: Runtime) -> dict[str, Any]:
    """Train (a checkpoint every epoch; the same command continues an interrupted run), evaluate;
    returns the report (rank 0) or {} (other ranks, or stopped by --stop-after)."""
    started = time.perf_counter()
    device, is_main, out = runtime.device, runtime.is_main, args.out
    if is_main:
        print(f"loading the {args.dataset} training split (a few seconds) ...", flush=True)
    train_set = load_cifar(args.dataset, "train", args.data_root)
    images, labels = train_set.images[:args.train_images], train_set.labels[:args.train_images]
    num_classes = len(train_set.classes)
    aug_names = parse_augmentations(args.aug)
    if is_main:
        print(f"{train_set.description}: {len(images)} train images, {args.model}, aug {'+'.join(aug_names)}, "
              f"{args.epochs} epochs, {runtime.world_size} process(es) on {device} with {torch.get_num_threads()} "
              f"CPU thread(s) (FLOWAUG_THREADS), out {out}", flush=True)
    flow = load_model(args.flow, kind="flow") if "flowaug" in aug_names else args.flow
    build_cache = args.flowaug_cache and not flow.code_enters_image_end_only  # a colour flow needs none
    cache_images = to_float_images(torch.as_tensor(images).to(device)) if build_cache else None  # FlowAug sees untouched images
    augment = build_augment(args.aug, AugmentContext(num_classes, flow, FLOWAUG_P, FLOWAUG_MODE, device,
                                                     args.aug_workers, cache_images))
    del cache_images
    torch.manual_seed(args.seed)  # the model's initial weights
    model = build_classifier(args.model, num_classes)

    config = {"aug": aug_names, "model": args.model, "dataset": args.dataset, "data": train_set.description,
              "train_images": len(images), "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "seed": args.seed, "amp": args.amp, "channels_last": args.channels_last, "optimizer": OPTIMIZER,
              "weight_decay": WEIGHT_DECAY, "label_smoothing": LABEL_SMOOTHING, "warmup_fraction": WARMUP_FRACTION,
              "flow": str(args.flow) if "flowaug" in aug_names else None, "flowaug_p": FLOWAUG_P,
              "flowaug_mode": FLOWAUG_MODE, "flowaug_cache": args.flowaug_cache, "world_size": runtime.world_size}
    if is_main:
        atomic_write_text(json.dumps({**config, "profile": args.profile, "command": args.command,
                                      "device": str(device), "torch": str(torch.__version__),
                                      "host": platform.node()}, indent=2) + "\n", out / "config.json")
    wants_c = args.eval_suites is None or any(SUITES[name].kind == "corruptions" for name in args.eval_suites)
    c_dir = cifar_c_folder(args) if is_main and wants_c else None  # before training: a failure costs nothing
    if is_main and args.eval_suites and wants_c and c_dir is None:
        missing = args.c_dir or cifar_c_dir(args.dataset, args.data_root)
        raise DatasetNotFoundError(f"--eval-suites asks for CIFAR-C but {missing} has no labels.npy; "
                                   "pass --c-dir or drop --no-make-c")

    counted = flowaug_counts(augment)

    def epoch_counts(epoch: int, _: nn.Module) -> dict[str, int]:
        """FlowAug's counters of this epoch (the difference to the last epoch's end)."""
        nonlocal counted
        now = flowaug_counts(augment)
        counts, counted = {name: now[name] - counted[name] for name in now}, now
        return counts

    history = train_classifier(model, images, labels, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               weight_decay=WEIGHT_DECAY, seed=args.seed, augment=augment, optimizer=OPTIMIZER,
                               warmup_fraction=WARMUP_FRACTION, label_smoothing=LABEL_SMOOTHING,
                               channels_last=args.channels_last, amp=args.amp, on_epoch_end=epoch_counts,
                               run_dir=out, config=config, stop_after=args.stop_after, runtime=runtime)
    if len(history) < args.epochs or not is_main:
        return {}

    save_classifier(model, out / "model.pt", args.model, num_classes, meta=config)
    eval_start = time.perf_counter()
    suites = args.eval_suites or default_suites(args.dataset, args.data_root, c_dir)
    corrupted = [name for name in suites if SUITES[name].kind == "corruptions"]
    report = evaluate(model, [name for name in suites if name not in corrupted], args.data_root,
                      dataset=args.dataset, device=device, limit=args.eval_limit)
    if corrupted:  # CIFAR-C has 95 blocks of 10000 images: it gets its own (fixed, first-N) subset size
        report["suites"].update(evaluate(model, corrupted, args.data_root, dataset=args.dataset, device=device,
                                         limit=args.c_limit or args.eval_limit, c_dir=c_dir)["suites"])
    report["suites"] = {name: report["suites"][name] for name in suites}
    phases = ("data_seconds", "augment_seconds", "model_seconds")
    report["timing"] = {**{p: sum(r[p] for r in history) for p in phases},
                        "train_seconds": sum(r["seconds"] for r in history),
                        "eval_seconds": time.perf_counter() - eval_start,
                        "this_process_wall_seconds": time.perf_counter() - started}
    report["config"] = config
    report["hardware"] = {"device": device_name(device),
                          "cpu_threads": torch.get_num_threads(), "torch": str(torch.__version__)}
    report["final_epoch"] = history[-1]
    report["flowaug_counts"] = {name: sum(r.get(name, 0) for r in history) for name in history[-1] if name.startswith("flowaug_")}
    atomic_write_text(json.dumps(report, indent=2) + "\n", out / "report.json")
    for name, entry in report["suites"].items():
        print(f"{name}: {headline(entry)}  [{entry['description']}]")
    if args.expect:
        print(f"note: {args.expect}")
    print(f"wrote {out / 'report.json'}")
    return report


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(int(os.environ.get("FLOWAUG_THREADS", DEFAULT_THREADS)))
    args = parse_args(argv)
    if finished_run(args.out):
        print(f"{args.out} is finished (report.json exists); choose another --out for a new run")
        return 0
    runtime = None
    try:
        runtime = Runtime.from_env(args.device)
        with claim_run_folder(args.out) if runtime.is_main else nullcontext():
            train(args, runtime)
    except (FlowaugError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if runtime is not None:
            runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
