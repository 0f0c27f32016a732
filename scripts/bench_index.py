#!/usr/bin/env python
"""Benchmark the build_index pipeline against a serial baseline and the encoder's forward ceiling.

Same encoder, machine and files for all three:
  serial    one file at a time: decode (load_audio, the encoder's crop) then embed([wave])
            -- the reference indexer's way (AF1 precompute / aisfx's own inference loop)
  pipeline  build_index's embedding phase: DataLoader decode workers + batched embedding +
            shard writing (model load and FAISS build excluded; reported separately)
  forward   encoder.embed on pre-decoded audio in the pipeline's batches (the ceiling)

    python scripts/bench_index.py --files 48 --seconds 12 --batch-size 32 --num-workers 1

Prints a markdown table (paste into BENCHMARKS.md, section ## index).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from rag_flamingo.config import BuildIndexConfig, typed
from rag_flamingo.encoders import build_encoder
from rag_flamingo.indexing.pipeline import run
from rag_flamingo.indexing.reader import decode_item, decode_spec


def make_files(root: Path, count: int, seconds: float, seed: int = 0) -> list[dict]:
    """A mix like real corpora: 44.1/48/32 kHz, mono/stereo wav and flac, tones + noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        sr = (44100, 48000, 32000)[i % 3]
        n = int(seconds * sr)
        t = np.arange(n) / sr
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) * (1 + np.sin(2 * np.pi * rng.uniform(0.2, 3) * t))
        x = (x + 0.05 * rng.standard_normal(n)).astype(np.float32)
        data = np.stack([x, 0.8 * x], axis=1) if i % 2 else x
        ext = "flac" if i % 4 == 3 else "wav"
        path = root / f"clip_{i:04d}.{ext}"
        sf.write(path, data, sr)
        rows.append({"id": f"clip_{i:04d}", "path": path.name, "label": f"c{i % 8}"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def bench_serial(encoder, rows, root: Path) -> float:
    spec = decode_spec(encoder)
    start = time.perf_counter()
    for row in rows:
        encoder.embed([decode_item(row, root, spec)])
    return len(rows) / (time.perf_counter() - start)


def bench_forward(encoder, rows, root: Path, batch_size: int) -> float:
    spec = decode_spec(encoder)
    waves = [decode_item(row, root, spec) for row in rows]
    start = time.perf_counter()
    for i in range(0, len(waves), batch_size):
        encoder.embed(waves[i : i + batch_size])
    return len(rows) / (time.perf_counter() - start)


def bench_pipeline(args, root: Path, out: Path) -> tuple[float, float]:
    cfg = typed(
        BuildIndexConfig,
        {
            "store": str(out),
            "dataset": {"name": "bench", "manifest": str(root / "manifest.jsonl"), "root": str(root)},
            "encoder": {"name": args.encoder, **dict(kv.split("=", 1) for kv in args.encoder_option)},
            "split": "all",
            "shard_size": args.shard_size,
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "device": args.device or "auto",
            "progress": False,
        },
    )
    start = time.perf_counter()
    summary = run(cfg)
    total = time.perf_counter() - start
    return summary.embedded / summary.embed_seconds, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="aisfx")
    ap.add_argument("--encoder-option", action="append", default=[], help="key=value, e.g. max_seconds=10")
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--num-workers", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2, help="best of N for each method")
    args = ap.parse_args()
    options = {k: float(v) if k == "max_seconds" else v for k, v in (kv.split("=", 1) for kv in args.encoder_option)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "audio"
        root.mkdir()
        rows = make_files(root, args.files, args.seconds)
        encoder = build_encoder(args.encoder, **options, **({} if args.device == "auto" else {"device": args.device}))
        encoder.embed([decode_item(rows[0], root, decode_spec(encoder))])  # warm-up (librosa/numba, oneDNN)
        serial = max(bench_serial(encoder, rows, root) for _ in range(args.repeats))
        forward = max(bench_forward(encoder, rows, root, args.batch_size) for _ in range(args.repeats))
        runs = [bench_pipeline(args, root, Path(tmp) / f"store{r}") for r in range(args.repeats)]
        pipeline, total = max(runs)
    cpu = f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    print(f"machine: {platform.processor() or platform.machine()}, {cpu}; device {getattr(encoder, 'device', 'cpu')}")
    print(
        f"files: {args.files} x {args.seconds:g} s (44.1/48/32 kHz, mono/stereo, wav/flac); encoder {args.encoder} "
        f"{options or ''} crop {getattr(encoder, 'max_seconds', None)} s; batch {args.batch_size}, "
        f"decode workers {args.num_workers}; best of {args.repeats}\n"
    )
    print("| method | clips/s | vs serial | vs forward-only |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| serial (decode + embed one file at a time) | {serial:.2f} | 1.00x | {serial / forward:.0%} |")
    ratio, share = pipeline / serial, pipeline / forward
    print(f"| build_index pipeline (embedding phase) | {pipeline:.2f} | {ratio:.2f}x | {share:.0%} |")
    print(f"| forward-only on pre-decoded audio | {forward:.2f} | {forward / serial:.2f}x | 100% |")
    print(f"\nwhole build_index run incl. model load + FAISS: {total:.1f} s for {args.files} files")


if __name__ == "__main__":
    main()
