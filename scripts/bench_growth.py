#!/usr/bin/env python
"""How the pipelines' cost grows with the data: ``evaluate`` throughput as the queries grow, and
``build_index`` peak memory as the dataset grows (it must stay flat in the item count apart from
the final index). The FAISS index alone against its size is ``scripts/bench_scale.py``.

Data: demo-like clips (``rag_flamingo.datasets.demo.render_item``: the demo's 12 synthetic classes,
item numbers past the demo's 8/4 per class), written as 16-bit wav files with JSONL manifests.

  python scripts/bench_growth.py evaluate --queries 48,192,768 --out outputs/bench_growth
  python scripts/bench_growth.py build --items 500,2000,8000 --workers 0,2 --out outputs/bench_growth
  python scripts/bench_growth.py plot --out outputs/bench_growth --png docs/bench_growth.png   # + the tables

evaluate: one store of ``--index-items`` clips (1-4 s) is built once with the ``build_index`` CLI;
then, for each query count, a fresh process runs ``rag_flamingo.evaluate.evaluate`` (the code the
``evaluate`` CLI runs) with ``predictor=knn,prototype shots=4`` on that many clips, timing the
query loop's stages by wrapping the objects ``components.prepare`` built: ``decode``
(``runner.load_for_encoders``), ``embed`` (the store's encoder), ``retrieve`` (``own_rows`` +
``search``), ``predict/<name>``; ``startup`` is ``prepare`` (store, encoder weights, manifest);
``rest`` is writing, merging and scoring the records. Figures in ``evaluate.jsonl``.

build: for each (items, decode workers), the ``build_index`` CLI runs in a child process on that
many 1 s clips (``index=auto``, aisfx, shards of 1000); a sampler reads /proc every 0.2 s for the
child and its descendants (the DataLoader decode workers): VmRSS/VmHWM of the main process, the
largest worker's RSS, the tree's summed PSS (shared pages counted once), and the main process's
RSS when each shard's done marker appears. Figures in ``build.jsonl``, each run's samples in
``build_trace_n<items>_w<workers>.jsonl``. Linux only (reads /proc;
psutil is not a dependency of the project and /proc holds all that is needed here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

from rag_flamingo.datasets import demo
from rag_flamingo.datasets.manifest import write_manifest

BUILD_INDEX = [sys.executable, "-c", "import sys; from index_builder.cli import main; sys.exit(main())"]


# --------------------------------------------------------------------------------------- data


def make_clips(root: Path, split: str, count: int, seconds: float | None = None) -> list[dict]:
    """``count`` demo-like clips of ``split`` (train | test), classes round-robin, cached on disk."""
    rows = []
    for i in range(count):
        class_index, item = i % len(demo.DEMO_CLASSES), i // len(demo.DEMO_CLASSES)
        c = demo.DEMO_CLASSES[class_index]
        name = f"{c.slug}_{item:04d}"
        rel = f"audio/{split}{'' if seconds is None else f'_{seconds:g}s'}/{name}.wav"
        path = root / rel
        if not path.exists():
            wave = demo.render_item(class_index, split, item)
            if seconds is not None:
                n = int(seconds * demo.SAMPLE_RATE)
                wave = np.pad(wave[:n], (0, max(0, n - len(wave))))
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wave, demo.SAMPLE_RATE, subtype="PCM_16", format="WAV")
        rows.append({"id": f"{split}/{name}", "path": rel, "label": c.label, "captions": list(c.captions)})
    return rows


def machine() -> dict:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def dataset_overrides(root: Path) -> list[str]:
    return [
        "dataset=folder",
        "dataset.name=growth",
        f"dataset.root={root}",
        f"dataset.manifest={root}/{{split}}.jsonl",
        "dataset.splits.index=train",
        "dataset.splits.query=test",
    ]


# --------------------------------------------------------------------------------------- evaluate


class Timer:
    """Seconds spent per stage, accumulated by wrapped callables."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.first: dict[str, float] = {}  # the first call of each stage (warm-up: numba, oneDNN)

    def wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                took = time.perf_counter() - start
                self.seconds[stage] += took
                self.first.setdefault(stage, took)

        return timed


def evaluate_one(root: Path, store: Path, split: str, out_dir: Path) -> dict:
    """One evaluate run in this process with its stages timed (run in a fresh process by ``main``)."""
    from rag_flamingo import components, runner
    from rag_flamingo import evaluate as ev_mod

    timer = Timer()
    original_prepare = components.prepare

    def prepare(cfg, encoder=None, engine=None):
        start = time.perf_counter()
        ev = original_prepare(cfg, encoder=encoder, engine=engine)
        timer.seconds["startup"] += time.perf_counter() - start
        ev.encoder.embed = timer.wrap("embed", ev.encoder.embed)
        ev.retriever.own_rows = timer.wrap("retrieve", ev.retriever.own_rows)
        ev.retriever.search = timer.wrap("retrieve", ev.retriever.search)
        for name, pred in ev.predictors.items():
            pred.predict = timer.wrap(f"predict/{name}", pred.predict)
        return ev

    ev_mod.prepare = prepare  # evaluate imported the name; wrap it where it is looked up
    runner.load_for_encoders = timer.wrap("decode", runner.load_for_encoders)
    original_run_queries = ev_mod.run_queries
    ev_mod.run_queries = timer.wrap("loop", original_run_queries)

    overrides = dataset_overrides(root) + [
        f"store={store}",
        f"query_split={split}",
        "predictor=[knn,prototype]",
        "shots=4",
        f"output_dir={out_dir}",
        "progress=false",
    ]
    cfg = ev_mod.load_config(overrides)
    start = time.perf_counter()
    summary = ev_mod.evaluate(cfg, progress=False)
    total = time.perf_counter() - start
    assert summary is not None
    queries = summary["queries"] - summary["rejected"]
    loop = timer.seconds.pop("loop")
    stages = {k: round(v, 4) for k, v in sorted(timer.seconds.items())}
    inside = sum(v for k, v in timer.seconds.items() if k != "startup")
    return {
        "queries": queries,
        "rejected": summary["rejected"],
        "index_items": ev_items(store),
        "predictors": "knn,prototype",
        "shots": 4,
        "batch_size": int(cfg.get("batch_size") or 8),
        "total_s": round(total, 2),
        "loop_s": round(loop, 2),
        "queries_per_s_loop": round(queries / loop, 2),
        "queries_per_s_total": round(queries / total, 2),
        "stages_s": stages,
        "first_call_s": {k: round(v, 4) for k, v in sorted(timer.first.items()) if k not in ("startup", "loop")},
        "loop_other_s": round(loop - inside, 3),
        "rest_s": round(total - loop - timer.seconds["startup"], 3),
        "accuracy": {
            f"{r['predictor']}@{r['shots']}": r.get("accuracy")
            for r in summary["results"]
            if isinstance(r, dict) and "predictor" in r
        },
        "loadavg_end": loadavg(),
        **machine(),
    }


def ev_items(store: Path) -> int:
    return int(json.loads((store / "store.json").read_text()).get("count", 0))


def run_evaluate(args) -> None:
    root = args.out / "data"
    index_rows = make_clips(root, "train", args.index_items)
    write_manifest(index_rows, root / "train.jsonl")
    counts = [int(s) for s in args.queries.split(",")]
    query_rows = make_clips(root, "test", max(counts))
    for n in counts:
        write_manifest(query_rows[:n], root / f"q{n}.jsonl")
    store = args.out / "eval_store"
    env = dict(os.environ, RAG_FLAMINGO_CACHE_ROOT=str(args.out / "cache"))
    if not (store / "store.json").exists():
        cmd = BUILD_INDEX + dataset_overrides(root) + [f"store={store}", "progress=false"]
        subprocess.run(cmd, check=True, env=env)
    for n in counts:
        out_dir = args.out / f"evaluate_q{n}"
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [sys.executable, __file__, "evaluate-one", str(root), str(store), f"q{n}", str(out_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"queries={n}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        with (args.out / "evaluate.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")


# --------------------------------------------------------------------------------------- build


def _status_kb(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else 0


def _pss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    found = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else 0


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from the parent ids in /proc/*/stat)."""
    children = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children[ppid].append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Sampler(threading.Thread):
    """Memory of a process tree every ``period`` seconds until ``stop``."""

    def __init__(self, pid: int, shards: Path, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.shards, self.period = pid, shards, period
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self.stop.is_set():
            kids = descendants(self.pid)
            rss = [_status_kb(k, "VmRSS") for k in kids]
            self.samples.append(
                {
                    "t": time.perf_counter() - start,
                    "main_rss": _status_kb(self.pid, "VmRSS"),
                    "main_hwm": _status_kb(self.pid, "VmHWM"),
                    "workers": len(kids),
                    "worker_max_rss": max(rss, default=0),
                    "tree_pss": _pss_kb(self.pid) + sum(_pss_kb(k) for k in kids),
                    "shards_done": len(list(self.shards.glob("*.done"))) if self.shards.is_dir() else 0,
                }
            )
            self.stop.wait(self.period)


def build_one(root: Path, split: str, items: int, workers: int, store: Path, env: dict, trace: Path) -> dict:
    shutil.rmtree(store, ignore_errors=True)
    cmd = (
        BUILD_INDEX
        + dataset_overrides(root)
        + [
            f"split={split}",
            f"store={store}",
            f"num_workers={workers}",
            "progress=false",
        ]
    )
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid, store / "shards")
    sampler.start()
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # ru_maxrss: the largest peak of the child and its waited children
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"build_index failed:\n{output[-3000:]}")
    samples = sampler.samples
    trace.write_text("".join(json.dumps(s) + "\n" for s in samples))
    total_shards = -(-items // 1000)
    embedding = [s for s in samples if s["shards_done"] < total_shards] or samples
    mb = 1 / 1024
    at_done: dict[int, float] = {}
    for s in samples:
        if s["shards_done"] and s["shards_done"] not in at_done:
            at_done[s["shards_done"]] = round(s["main_rss"] * mb, 1)
    info = json.loads((store / "store.json").read_text())
    return {
        "items": items,
        "workers": workers,
        "indexed": info.get("count"),
        "index": (info.get("index") or {}).get("factory"),
        "wall_s": round(wall, 1),
        "main_peak_rss_mb": round(max(s["main_hwm"] for s in samples) * mb, 1),
        "main_peak_rss_embedding_mb": round(max(s["main_rss"] for s in embedding) * mb, 1),
        "worker_peak_rss_mb": round(max(s["worker_max_rss"] for s in samples) * mb, 1),
        "tree_peak_pss_mb": round(max(s["tree_pss"] for s in samples) * mb, 1),
        "rusage_maxrss_mb": round(usage.ru_maxrss / 1024, 1),
        "main_rss_at_shard_done_mb": at_done,
        "index_mb": round((store / "index.faiss").stat().st_size / 2**20, 2),
        "vectors_mb": round(sum(p.stat().st_size for p in (store / "shards").glob("*.npy")) / 2**20, 2),
        "samples": len(samples),
        "loadavg_end": loadavg(),
        **machine(),
    }


def run_build(args) -> None:
    root = args.out / "data"
    counts = [int(s) for s in args.items.split(",")]
    rows = make_clips(root, "train", max(counts), seconds=args.seconds)
    for n in counts:
        write_manifest(rows[:n], root / f"b{n}.jsonl")
    env = dict(os.environ, RAG_FLAMINGO_CACHE_ROOT=str(args.out / "cache"))
    for workers in (int(w) for w in args.workers.split(",")):
        for n in counts:
            trace = args.out / f"build_trace_n{n}_w{workers}.jsonl"
            row = build_one(root, f"b{n}", n, workers, args.out / "build_store", env, trace)
            print(json.dumps(row), flush=True)
            with (args.out / "build.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")
    shutil.rmtree(args.out / "build_store", ignore_errors=True)


# --------------------------------------------------------------------------------------- plot


def read_rows(out: Path, name: str) -> list[dict]:
    path = out / name
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def steady_rss(trace: Path) -> tuple[float, float]:
    """(median, max) MB of the main process's RSS over the second half of the embedding phase: past
    start-up and warm-up (a per-item growth would show as a rising median; the max is a batch's
    transient activations)."""
    samples = [json.loads(x) for x in trace.read_text().splitlines() if x.strip()]
    last = max(s["shards_done"] for s in samples)
    embedding = [s for s in samples if s["shards_done"] < last] or samples
    half = [s["main_rss"] / 1024 for s in embedding[len(embedding) // 2 :] if s["main_rss"]]
    return round(float(np.median(half)), 1), round(max(half), 1)


def tables(out: Path) -> str:
    """The markdown tables of BENCHMARKS.md from evaluate.jsonl, build.jsonl and the traces."""
    lines = [
        "| queries | q/s (query loop) | q/s (whole run) | startup s | decode | embed: first call | embed: "
        "other calls | retrieve | knn | prototype | loop, other | write + score s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(read_rows(out, "evaluate.jsonl"), key=lambda r: r["queries"]):
        st, n = r["stages_s"], r["queries"]
        first = r["first_call_s"].get("embed", 0.0)

        def ms(x: float, n: int = n) -> str:
            return f"{1000 * x / n:.2f}"

        lines.append(
            f"| {n} | {r['queries_per_s_loop']:.2f} | {r['queries_per_s_total']:.2f} | {st['startup']:.1f} | "
            f"{ms(st['decode'])} | {first:.1f} s | {ms(st['embed'] - first, n - r['batch_size'])} | "
            f"{ms(st['retrieve'])} | {ms(st['predict/knn'])} | {ms(st['predict/prototype'])} | "
            f"{ms(r['loop_other_s'])} | {r['rest_s']:.1f} |"
        )
    lines += [
        "",
        "| items | decode workers | wall s | main peak RSS MB | main RSS MB, 2nd half of embedding: median (max) | "
        "largest worker peak RSS MB | tree peak PSS MB | index | index.faiss MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in sorted(read_rows(out, "build.jsonl"), key=lambda r: (r["workers"], r["items"])):
        trace = out / f"build_trace_n{r['items']}_w{r['workers']}.jsonl"
        lo, hi = steady_rss(trace) if trace.exists() else (float("nan"), float("nan"))
        worker = f"{r['worker_peak_rss_mb']:.0f}" if r["workers"] else "-"
        lines.append(
            f"| {r['items']} | {r['workers']} | {r['wall_s']:.0f} | {r['main_peak_rss_mb']:.0f} | "
            f"{lo:.0f} ({hi:.0f}) | {worker} | {r['tree_peak_pss_mb']:.0f} | {r['index']} | {r['index_mb']:.2f} |"
        )
    for r in read_rows(out, "build.jsonl"):
        trace = out / f"build_trace_n{r['items']}_w{r['workers']}.jsonl"
        if r["items"] >= 4000 and trace.exists():
            lines += ["", f"{r['items']} items, {r['workers']} decode workers: " + per_shard(trace)]
    return "\n".join(lines)


def per_shard(trace: Path) -> str:
    """The main process's median RSS and the tree's median PSS while shard k is being written:
    flat from shard to shard when nothing is kept per item."""
    samples = [json.loads(x) for x in trace.read_text().splitlines() if x.strip()]
    last = max(s["shards_done"] for s in samples)
    parts = []
    for k in range(last):
        rows = [s for s in samples if s["shards_done"] == k and s["main_rss"]]
        if rows:
            rss = np.median([s["main_rss"] for s in rows]) / 1024
            pss = np.median([s["tree_pss"] for s in rows]) / 1024
            parts.append(f"shard {k + 1}: {rss:.0f} / {pss:.0f}")
        else:
            parts.append(f"shard {k + 1}: no sample")
    return "main RSS / tree PSS MB, medians while writing " + "; ".join(parts)


def plot(out: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def rows(name: str) -> list[dict]:
        return read_rows(out, name)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.2))
    ev = sorted(rows("evaluate.jsonl"), key=lambda r: r["queries"])
    if ev:
        stages = sorted({k for r in ev for k in r["stages_s"] if k != "startup"})
        x = np.arange(len(ev))
        bottom = np.zeros(len(ev))
        first = np.array([r["first_call_s"].get("embed", 0.0) for r in ev])
        for stage in stages:
            seconds = np.array([r["stages_s"].get(stage, 0.0) for r in ev])
            parts = [(stage, seconds)]
            if stage == "embed":  # the first call pays one-off imports (see BENCHMARKS.md)
                parts = [("embed, first call", first), ("embed, other calls", seconds - first)]
            for label, part in parts:
                per_query = 1000 * part / np.array([r["queries"] for r in ev])
                ax1.bar(x, per_query, bottom=bottom, label=label)
                bottom += per_query
        other = np.array([1000 * r["loop_other_s"] / r["queries"] for r in ev])
        ax1.bar(x, other, bottom=bottom, label="loop, other")
        ax1.set_xticks(x, [f"{r['queries']} q\n{r['queries_per_s_loop']:.1f} q/s" for r in ev])
        ax1.set_ylabel("ms per query (query loop)")
        ax1.set_title("evaluate: where a query's time goes (knn + prototype, aisfx)")
        ax1.legend(fontsize=8)
    for workers in sorted({r["workers"] for r in rows("build.jsonl")}):
        b = sorted((r for r in rows("build.jsonl") if r["workers"] == workers), key=lambda r: r["items"])
        n = [r["items"] for r in b]
        ax2.plot(n, [r["main_peak_rss_mb"] for r in b], "o-", label=f"main peak RSS, workers={workers}")
        ax2.plot(n, [r["tree_peak_pss_mb"] for r in b], "s--", label=f"tree peak PSS, workers={workers}")
    ax2.set_xscale("log")
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("items (1 s clips)")
    ax2.set_ylabel("MB")
    ax2.set_title("build_index peak memory vs dataset size")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.suptitle("scripts/bench_growth.py (2 shared CPU cores)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)


# --------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    e = sub.add_parser("evaluate", help="evaluate throughput as the queries grow")
    e.add_argument("--queries", default="48,192,768")
    e.add_argument("--index-items", type=int, default=480)
    b = sub.add_parser("build", help="build_index peak memory as the dataset grows")
    b.add_argument("--items", default="500,2000,8000")
    b.add_argument("--workers", default="0,2")
    b.add_argument("--seconds", type=float, default=1.0, help="clip length")
    p = sub.add_parser("plot", help="plot evaluate.jsonl and build.jsonl, print the tables")
    p.add_argument("--png", type=Path, default=Path("docs/bench_growth.png"))
    for s in (e, b, p):
        s.add_argument("--out", type=Path, default=Path("outputs/bench_growth"))
    one = sub.add_parser("evaluate-one")  # internal: one measured run in a fresh process
    one.add_argument("params", nargs=4)
    args = ap.parse_args(argv)
    if args.what == "evaluate-one":
        root, store, split, out_dir = args.params
        print(json.dumps(evaluate_one(Path(root), Path(store), split, Path(out_dir))))
        return 0
    if args.what == "plot":
        plot(args.out, args.png)
        print(tables(args.out))
        print(f"plot: {args.png}")
        return 0
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"# {json.dumps(machine())}", flush=True)
    run_evaluate(args) if args.what == "evaluate" else run_build(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
