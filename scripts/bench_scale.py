#!/usr/bin/env python
"""How the index's cost grows: build time, memory, size, recall@10 and query latency against the
number of vectors, for every index type ``index=auto`` can choose, and which one it chooses.

Each (size, type) is built by ``rag_flamingo.indexing.faiss_index.build_index`` (the code build_index runs,
recall tuning included) in a fresh subprocess, so its peak memory is its own. Vectors are synthetic,
clustered, unit-length 512-d float32 (seeded), written once per size to a scratch folder; or, with
``--vectors``, given .npy files (one per size, e.g. real clip embeddings from
``scripts/make_real_vectors.py``) with ``--queries``, a .npy of held-out query vectors that are not
in the index: the tuned index is then also measured on them (``heldout_recall_at_10`` against exact
search; the latency uses them too), and the same efSearch / nprobe ladder is climbed again until
they reach the recall target (``heldout_tuned``, its recall and one-query latency).

  python scripts/bench_scale.py --sizes 10000,100000 --out outputs/bench_scale
  python scripts/bench_scale.py --vectors real/real_100000.npy --queries real/real_queries.npy --out outputs/bench_real
  python scripts/bench_scale.py --sizes 1000000 --types ivf_pq --nlist 1024 --out outputs/bench_scale
  python scripts/bench_scale.py --plot outputs/bench_scale/results.jsonl --png docs/bench_scale.png

Figures: ``build_s`` (choose + train + add + recall tuning), ``tune_s`` (of which the recall
tuning), ``peak_rss_gb`` (the subprocess's peak resident memory, vectors included),
``vectors_gb``, ``index_mb`` (serialised size = index.faiss), ``recall_at_10`` (at the tuned
efSearch / nprobe, over 1,000 stored vectors used as queries, each one's own row left out), ``query_ms``
(median latency of one query at a time on one thread at the tuned setting).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM = 512
TYPES = ("flat", "hnsw", "ivf_flat", "ivf_pq")


def vectors_file(scratch: Path, n: int, seed: int = 0) -> Path:
    """Clustered unit vectors (n // 100 centres, at most 10,000), generated in blocks, cached."""
    path = scratch / f"vectors_{n}_{DIM}.npy"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((min(10_000, max(10, n // 100)), DIM)).astype(np.float32)
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n, DIM))
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centres[rng.integers(0, len(centres), m)] + 0.35 * rng.standard_normal((m, DIM), dtype=np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    del out
    path.with_suffix(".tmp.npy").rename(path)
    return path


def measure_one(path: Path, kind: str, nlist: int | None, held_out: Path | None = None) -> dict:
    """Build one index in this process and measure it (run in a subprocess by ``main``)."""
    import faiss

    from rag_flamingo.config import IndexConfig
    from rag_flamingo.indexing.faiss_index import build_index, choose_index, recall_at_k, search_ladder
    from rag_flamingo.store.index_store import apply_search_params

    vectors = np.load(path)
    n = vectors.shape[0]
    opts = IndexConfig(type=kind, nlist=nlist, use_gpu=False)
    start = time.perf_counter()
    index, report = build_index(vectors, opts)
    build_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    extra: dict = {}
    if held_out is None:
        queries = vectors[np.random.default_rng(1).choice(n, 200, replace=False)]
    else:
        queries = np.ascontiguousarray(np.load(held_out), dtype=np.float32)
        _, truth = faiss.knn(queries, vectors, 10, metric=faiss.METRIC_INNER_PRODUCT)
        extra = {"heldout_recall_at_10": round(recall_at_k(index, queries, truth, 10), 4), "heldout": len(queries)}
    query_ms = one_query_ms(index, queries)
    if held_out is not None and kind != "flat":
        # the same ladder as the build's tuning, judged on the held-out queries
        name, values = search_ladder(index, kind, 10)
        for value in values:
            apply_search_params(index, {name: value})
            recall = recall_at_k(index, queries, truth, 10)
            if recall >= opts.recall_target:
                break
        extra |= {
            "heldout_tuned": {name: int(value)},
            "heldout_tuned_recall": round(recall, 4),
            "heldout_tuned_query_ms": round(one_query_ms(index, queries), 3),
        }
    return {
        "n": n,
        "type": kind,
        "factory": report.factory,
        "auto": choose_index(n, DIM, IndexConfig())[1],
        "build_s": round(build_s, 2),
        "peak_rss_gb": round(peak / 1024**3, 3),
        "vectors_gb": round(vectors.nbytes / 1024**3, 3),
        "index_mb": round(faiss.serialize_index(index).nbytes / 1024**2, 1),
        "recall_at_10": round(report.recall_at_10, 4),
        "search_params": report.search_params,
        "query_ms": round(query_ms, 3),
        "threads": faiss.omp_get_max_threads(),
        "data": path.name,
        **extra,
    }


def one_query_ms(index, queries: np.ndarray) -> float:
    """Median latency (ms) of one query at a time on one thread."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    times = []
    for q in queries:
        t0 = time.perf_counter()
        index.search(q[None], 10)
        times.append(time.perf_counter() - t0)
    faiss.omp_set_num_threads(threads)
    return 1000 * float(np.median(times))


def plot(results: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    panels = [
        ("build_s", "build + tune (s)"),
        ("peak_rss_gb", "peak memory (GB)"),
        ("query_ms", "one query, 1 thread (ms)"),
        ("recall_at_10", "recall@10 (tuned)"),
    ]
    for ax, (key, title) in zip(axes, panels):
        for kind in TYPES:
            rows = sorted((r for r in results if r["type"] == kind), key=lambda r: r["n"])
            if rows:
                ax.plot([r["n"] for r in rows], [r[key] for r in rows], "o-", label=kind)
        ax.set_xscale("log")
        if key != "recall_at_10":
            ax.set_yscale("log")
        ax.set_xlabel("vectors (512-d)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("scripts/bench_scale.py: FAISS index cost vs size (2 shared CPU cores)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)


def checked_dim(path: Path, error, rows: int = 1000) -> int:
    """The dimension of the 2-D float array of finite values in ``path`` with at least ``rows`` rows (the
    recall check samples 1,000); else ``error`` (one line) says what is wrong."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        error(f"{path}: not a .npy file of numbers (np.save of a float array)")
    if array.ndim != 2 or array.dtype.kind != "f" or len(array) < rows:
        error(f"{path}: {array.shape} {array.dtype}; give rows of float vectors, {rows} or more")
    if not np.isfinite(np.asarray(array[:100_000])).all():
        error(f"{path}: holds NaN or infinite values")
    return int(array.shape[1])


def main(argv: list[str] | None = None) -> int:
    from index_builder.manifests.cli_args import OneLineParser

    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--vectors", default=None, help="comma-separated .npy files of unit vectors instead of --sizes")
    ap.add_argument("--queries", type=Path, default=None, help="held-out query vectors (.npy) for --vectors")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--nlist", type=int, default=None, help="force the IVF list count (default: as auto chooses)")
    ap.add_argument("--out", type=Path, default=Path("outputs/bench_scale"))
    ap.add_argument("--plot", type=Path, default=None, help="plot a results.jsonl instead of measuring")
    ap.add_argument("--png", type=Path, default=Path("docs/bench_scale.png"))
    ap.add_argument("--one", nargs=4, metavar=("VECTORS", "TYPE", "NLIST", "QUERIES"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        nlist = int(args.one[2]) or None
        held_out = Path(args.one[3]) if args.one[3] != "-" else None
        print(json.dumps(measure_one(Path(args.one[0]), args.one[1], nlist, held_out)))
        return 0
    if args.plot:
        try:
            rows = [json.loads(line) for line in args.plot.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            ap.error(f"--plot {args.plot}: not a results.jsonl this script wrote ({type(exc).__name__})")
        plot(rows, args.png)
        print(f"plot: {args.png}")
        return 0
    kinds = args.types.split(",")
    if unknown := [k for k in kinds if k not in TYPES]:
        ap.error(f"--types: unknown {', '.join(unknown)} (choose from {', '.join(TYPES)})")
    if args.queries is not None and not args.vectors:
        ap.error("--queries needs --vectors (synthetic runs query stored vectors)")
    if args.vectors:
        inputs = [Path(p) for p in args.vectors.split(",")]
        if missing := [str(p) for p in [*inputs, args.queries] if p is not None and not p.is_file()]:
            ap.error(f"no such file: {', '.join(missing)}")
        dims = {checked_dim(p, ap.error) for p in inputs}
        if args.queries is not None and checked_dim(args.queries, ap.error, rows=1) not in dims:
            ap.error(f"--queries {args.queries}: another dimension than the vectors ({', '.join(map(str, dims))})")
    else:
        try:
            sizes = [int(s) for s in args.sizes.split(",")]
        except ValueError:
            ap.error(f"--sizes {args.sizes!r}: write whole numbers separated by commas")
    if args.nlist is not None and args.nlist < 1:
        ap.error(f"--nlist {args.nlist}: give a positive list count")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        ap.error(f"--out {args.out}: cannot be made ({exc.strerror or exc})")
    if not args.vectors:
        inputs = [vectors_file(args.out, n) for n in sizes]
    results = args.out / "results.jsonl"
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}", flush=True)
    for path in inputs:
        for kind in kinds:
            cmd = [sys.executable, __file__, "--one", str(path), kind, str(args.nlist or 0), str(args.queries or "-")]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{path.name} {kind}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
