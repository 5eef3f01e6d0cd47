"""Speed of the 19 CIFAR-C corruptions: images/s per corruption and the projected time of a
full CIFAR-10-C (19 corruptions x 5 severities x 10,000 images).

Run from the repository root:

    .venv/bin/python benchmarks/cifar_c_speed.py [--data-root ../shared/data] [--images 1000]

Each corruption runs on the first ``--images`` real test images (the CIFAR-10 JPEG-q75 proxy
from ../shared/data by default) at every severity, in batches of the generator's size, in
one process; the projection sums 50,000 / rate over corruptions and divides by the worker
count for ``--workers`` > 1 (ideal scaling). Writes benchmarks/results/cifar_c_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from flowaug.data.cifar import load_cifar
from flowaug.data.cifar_c import ALL_CORRUPTIONS, SEVERITIES, TEST_SIZE
from flowaug.data.make_cifar_c import corrupt_block
from flowaug.fileio import atomic_write_text

TARGET_S = 20 * 60
REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--images", type=int, default=1000, help="test images per severity")
    parser.add_argument("--workers", type=int, default=2, help="workers assumed by the second projection")
    parser.add_argument("--shared-note", default="the 2-core machine was shared with other engineers' jobs "
                        "during the measurement; rates are lower bounds")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "cifar_c_speed.json"))
    args = parser.parse_args()

    data = load_cifar("cifar10", "test", args.data_root)
    images = data.images[: args.images]
    frost_dir = Path(args.data_root) / "cifar_c_frost"
    corrupt_block(images[:8], "zoom_blur", 1, 0)  # warm caches (kernels, operators, textures)
    rows = []
    print(f"{data.description}, {len(images)} images x {len(SEVERITIES)} severities per corruption")
    print(f"{'corruption':18s} {'img/s':>8s} {'full 50k (s)':>13s}")
    for name in ALL_CORRUPTIONS:
        start = time.perf_counter()
        for severity in SEVERITIES:
            corrupt_block(images, name, severity, seed=0, frost_dir=frost_dir)
        seconds = time.perf_counter() - start
        rate = len(images) * len(SEVERITIES) / seconds
        full = len(SEVERITIES) * TEST_SIZE / rate
        rows.append({"corruption": name, "images_per_s": round(rate, 1), "projected_full_s": round(full, 1)})
        print(f"{name:18s} {rate:8.0f} {full:13.1f}")
    total = sum(row["projected_full_s"] for row in rows)
    parallel = total / args.workers
    print(f"projected full CIFAR-10-C, 1 process: {total:.0f} s ({total / 60:.1f} min); "
          f"{args.workers} workers (ideal): {parallel:.0f} s; target {TARGET_S} s "
          f"-> 1-process ratio to target {total / TARGET_S:.2f}")
    result = {
        "benchmark": "cifar_c_speed",
        "dataset": data.description,
        "images_per_severity": len(images),
        "command": "python " + " ".join([os.path.relpath(__file__, REPO)] + sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
        "note": args.shared_note,
        "per_corruption": rows,
        "projected_full_cifar10c_s": {"one_process": round(total, 1), f"{args.workers}_workers_ideal": round(parallel, 1)},
        "target_s": TARGET_S,
        "ratio_one_process_to_target": round(total / TARGET_S, 3),
    }
    atomic_write_text(json.dumps(result, indent=2) + "\n", args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
