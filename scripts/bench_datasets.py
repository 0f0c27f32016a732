"""Benchmark the dataset sources: demo generation, folder scan, a manifest maker at full size.

    python scripts/bench_datasets.py [--repeats 3]

Prints one line per measurement (best of ``--repeats`` wall-clock runs).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from index_builder.manifests import make_manifests
from rag_flamingo.datasets.demo import generate_demo
from rag_flamingo.datasets.folder import scan_folder


def best_of(repeats: int, fn) -> str:
    """Best wall-clock and best CPU (process) time of ``repeats`` runs, as text."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return f"{min(wall):.3f} s wall, {min(cpu):.3f} s CPU"


def fsd50k_sized_metadata(root: Path, clips: int = 51197) -> None:
    """FSD50K-sized ground truth (dev 40,966 + eval 10,231 rows) in the official layout."""
    gt = root / "FSD50K.ground_truth"
    gt.mkdir(parents=True)
    labels = [f"Class_{i}" for i in range(200)]
    with open(gt / "vocabulary.csv", "w", newline="") as f:
        csv.writer(f).writerows([i, name, f"/m/{i:05d}"] for i, name in enumerate(labels))
    for name, first, count, with_split in (("dev", 0, 40966, True), ("eval", 40966, clips - 40966, False)):
        with open(gt / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["fname", "labels", "mids"] + (["split"] if with_split else []))
            for k in range(first, first + count):
                chosen = [labels[(k + j * 37) % 200] for j in range(3)]
                row = [k, ",".join(chosen), ",".join(f"/m/{labels.index(c):05d}" for c in chosen)]
                writer.writerow(row + (["train" if k % 10 else "val"] if with_split else []))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = best_of(args.repeats, lambda: generate_demo(tmp / "demo"))
        print(f"demo generation (144 wav files, 44.1 kHz, 2 manifests): {t}")
        t = best_of(args.repeats, lambda: scan_folder(tmp / "demo"))
        print(f"folder scan of the demo folder (144 files): {t}")
        fsd50k_sized_metadata(tmp / "fsd50k")
        t = best_of(args.repeats, lambda: make_manifests("fsd50k", tmp / "fsd50k", tmp / "fsd50k_out"))
        print(f"fsd50k maker, 51,197 clips (4 manifests written): {t}")


if __name__ == "__main__":
    main()
