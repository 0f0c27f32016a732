"""Benchmark: rag_app's Ask latency (knn on the demo store) after warm-up.

Two measures over the demo's test clips, each copied to a temporary folder first (an upload is never
the store's own file):
- *handler*: `rag_flamingo.app.ask.ask` in-process (upload check, decode, aisfx embedding, retrieval
  without the clip's own recording, knn vote), what the Ask button runs;
- *page*: the same question through the served page (gradio_client over HTTP on 127.0.0.1: upload,
  queue, the handler, the shots table with its inline players, the reply).

    scripts/demo.sh    # builds the demo store once
    python scripts/bench_app.py --clips 48 --warmup 3
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path


def stats(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p90 = ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]
    mean = statistics.mean(ms)
    return f"median {statistics.median(ms):.0f} ms, p90 {p90:.0f} ms, mean {mean:.0f} ms, max {ms[-1]:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48, help="demo test clips to ask about")
    parser.add_argument("--warmup", type=int, default=3, help="asks before timing")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--no-page", action="store_true", help="only the in-process handler")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from rag_flamingo.app import ask
    from rag_flamingo.app.context import AppContext
    from rag_flamingo.app.main import load_config, serve
    from rag_flamingo.datasets import demo
    from rag_flamingo.datasets.manifest import read_manifest

    root = demo.ensure_demo()
    rows = read_manifest(root / "test.jsonl")[: args.clips]
    work = Path(tempfile.mkdtemp(prefix="bench_app_"))
    clips = []
    for r in rows:
        clips.append(work / Path(r["path"]).name)
        shutil.copy(root / r["path"], clips[-1])
    cfg = load_config([])
    ctx = AppContext(cfg)
    store = str(ctx.primary)

    def run(clip):
        return ask.ask(ctx, clip, store, "classification", "knn", args.k)

    start = time.perf_counter()
    ctx.warm_up()  # what rag_app does before serving
    warm = time.perf_counter() - start
    start = time.perf_counter()
    run(clips[0])
    print(f"start-up: warm_up {warm:.2f} s, then the first ask {1000 * (time.perf_counter() - start):.0f} ms")
    for clip in clips[: args.warmup]:
        run(clip)
    times, right = [], 0
    for clip, r in zip(clips, rows):
        start = time.perf_counter()
        res = run(clip)
        times.append(time.perf_counter() - start)
        right += res.output == r["label"]
    print(f"handler: {len(times)} asks, knn k={args.k}, store {ctx.primary.name}: {stats(times)} ({right} right)")

    if not args.no_page:
        from gradio_client import Client, handle_file

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ["GRADIO_TEMP_DIR"] = str(work / "uploads")
        page, _ = serve({**cfg, "port": port}, block=False)
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            inputs = ("classification", "knn", args.k, 1, "")

            def ask_page(clip):
                return client.predict(handle_file(str(clip)), store, *inputs, api_name="/on_ask")

            for clip in clips[: args.warmup]:
                ask_page(clip)
            times = []
            for clip in clips:
                start = time.perf_counter()
                out = ask_page(clip)
                times.append(time.perf_counter() - start)
                assert "score" in out[1], out
            print(f"page:    {len(times)} asks over HTTP (gradio_client): {stats(times)}")
        finally:
            page.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
