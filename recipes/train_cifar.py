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
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from flowaug.arguments import HelpFormatter, non_negative_int, positive_int
from flowaug.augmentation import FlowAug, reseed
from flowaug.augmentation.baselines import AugmentContext, build_augment, parse_augmentations
from flowaug.data import CIFAR10_1, load_cifar
from flowaug.data.cifar_c import cifar_c_dir
from flowaug.data.make_cifar_c import generate_once, shared_cifar_c_dir
from flowaug.errors import DatasetNotFoundError, FlowaugError
from flowaug.evaluation import SUITES, evaluate
from flowaug.fileio import atomic_write_text, claim_run_folder
from flowaug.models.classifiers import CLASSIFIERS, build_classifier, save_classifier
from flowaug.pretrained import load_model
from flowaug.seeding import seeded_generator
from flowaug.training import OPTIMIZERS, as_image_tensor, as_label_tensor, device_name, load_train_state, one_cycle, \
    run_progress, save_train_state, to_float_images, train_epoch


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


def headline(entry: dict[str, Any]) -> str:
    """The main numbers of one suite entry of a :func:`flowaug.evaluate` report."""
    if "summary" in entry:
        return (f"mean benchmark-corruption accuracy {entry['summary']['benchmark']['mean']:.2f}%, "
                f"mean MacroStd {entry['macro_std_summary']['benchmark']['mean']:.2f}")
    text = f"accuracy {entry['accuracy']:.2f}%"
    if "macro_std" in entry:
        text += f", MacroStd {entry['macro_std']:.2f}, worst group {entry['worst_group']['subgroup_accuracy']:.2f}%"
    return text


def join_process_group(device: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device) from ``torchrun``'s environment; gloo on CPU, nccl on CUDA."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    torch_device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if world_size == 1:
        return 0, 1, torch_device
    if use_cuda:
        torch.cuda.set_device(torch_device)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), world_size, torch_device


def flowaug_counts(augment: nn.Module) -> dict[str, int]:
    """FlowAug's counters (:attr:`flowaug.FlowAug.COUNTERS`: images changed, non-finite
    fallbacks, rejected by the guard, ...) summed over its instances in ``augment``, of this process
    (under DDP: rank 0's share); empty without FlowAug."""
    instances = [module for module in augment.modules() if isinstance(module, FlowAug)]
    return {f"flowaug_{name}": sum(getattr(module, name) for module in instances)
            for name in FlowAug.COUNTERS} if instances else {}


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train, checkpoint every epoch, evaluate; returns the report (rank 0) or {} (other ranks)."""
    started = time.perf_counter()
    rank, world_size, device = join_process_group(args.device)
    is_main = rank == 0
    out: Path = args.out

    if is_main:
        print(f"loading the {args.dataset} training split (a few seconds) ...", flush=True)
    train_set = load_cifar(args.dataset, "train", args.data_root)
    images, labels = train_set.images[:args.train_images], train_set.labels[:args.train_images]
    x_all, y_all = as_image_tensor(images, device), as_label_tensor(labels, len(images), device)
    num_classes = len(train_set.classes)
    aug_names = parse_augmentations(args.aug)
    if is_main:
        print(f"{train_set.description}: {len(x_all)} train images, {args.model}, aug {'+'.join(aug_names)}, "
              f"{args.epochs} epochs, {world_size} process(es) on {device} with {torch.get_num_threads()} CPU "
              f"thread(s) (FLOWAUG_THREADS), out {out}", flush=True)
    flow = load_model(args.flow, kind="flow") if "flowaug" in aug_names else args.flow
    build_cache = args.flowaug_cache and not flow.code_enters_colour_only  # a colour flow needs none
    cache_images = to_float_images(x_all) if build_cache else None  # FlowAug sees untouched images
    augment = build_augment(args.aug, AugmentContext(num_classes, flow, FLOWAUG_P, FLOWAUG_MODE, device,
                                                     args.aug_workers, cache_images))
    del cache_images
    torch.manual_seed(args.seed)  # the model's initial weights
    model = build_classifier(args.model, num_classes)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    net = DistributedDataParallel(model) if world_size > 1 else model
    optimizer = OPTIMIZERS[OPTIMIZER](model.parameters(), args.lr, WEIGHT_DECAY)
    total_steps = args.epochs * (len(x_all) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: one_cycle(step, total_steps, WARMUP_FRACTION))

    config = {"aug": aug_names, "model": args.model, "dataset": args.dataset, "data": train_set.description,
              "train_images": len(x_all), "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "seed": args.seed, "amp": args.amp, "channels_last": args.channels_last, "optimizer": OPTIMIZER,
              "weight_decay": WEIGHT_DECAY, "label_smoothing": LABEL_SMOOTHING, "warmup_fraction": WARMUP_FRACTION,
              "flow": str(args.flow) if "flowaug" in aug_names else None, "flowaug_p": FLOWAUG_P,
              "flowaug_mode": FLOWAUG_MODE, "flowaug_cache": args.flowaug_cache, "world_size": world_size}
    state_path = out / "train_state.pt"
    resuming = state_path.exists()  # the same command continues an interrupted run; other settings are refused
    history = load_train_state(state_path, model, optimizer, scheduler, config) if resuming else []
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

    last_epoch = min(args.epochs, args.stop_after or args.epochs)
    steps_per_epoch = len(x_all) // args.batch_size
    overall = run_progress(args.epochs * steps_per_epoch, len(history) * steps_per_epoch, enabled=is_main)
    for epoch in range(len(history) + 1, last_epoch + 1):
        reseed(augment, args.seed, epoch, rank + 1)
        overall.set_description(f"training, epoch {epoch}/{args.epochs} (evaluation follows)")
        counts_before = flowaug_counts(augment)
        record = train_epoch(net, optimizer, scheduler, x_all, y_all, batch_size=args.batch_size, augment=augment,
                             shuffle_generator=seeded_generator(device, args.seed, epoch),
                             memory_format=memory_format, amp=args.amp, label_smoothing=LABEL_SMOOTHING,
                             rank=rank, world_size=world_size, progress=is_main, overall=overall)
        counts = {name: count - counts_before[name] for name, count in flowaug_counts(augment).items()}
        history.append({"epoch": epoch, **record, **counts})
        if is_main:
            save_train_state(state_path, model, optimizer, scheduler, history, config)
            atomic_write_text("".join(json.dumps(r) + "\n" for r in history), out / "metrics.jsonl")
            overall.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in history[-1].items()))
    overall.close()
    if world_size > 1:
        dist.barrier()
    if len(history) < args.epochs or not is_main:
        return {}

    model.to(memory_format=torch.contiguous_format).eval()
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
    try:
        if (args.out / "report.json").is_file():
            print(f"{args.out} is finished (report.json exists); choose another --out for a new run")
            return 0
        with claim_run_folder(args.out) if os.environ.get("RANK", "0") == "0" else nullcontext():
            train(args)
    except (FlowaugError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
