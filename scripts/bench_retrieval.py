"""Benchmark: retrieval (Retriever.search) and prompt building throughput on a synthetic store.

Builds a real store (rag_flamingo.store, FAISS IndexFlatIP) of N random unit vectors, ``rows``
rows per group (several captions of one recording, like Clotho), and times Q queries per setting.
Prompt building uses the af1_tiny fixture tokenizer (a small BPE: token counts differ from OPT's,
the work per prompt is the same kind).

    python scripts/bench_retrieval.py --n 100000 --dim 512 --queries 256
"""

from __future__ import annotations

import argparse
import functools
import logging
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from rag_flamingo.prompts import build_prompt, token_counter
from rag_flamingo.retrieval import Retriever
from rag_flamingo.store.index_store import IndexStore, write_store
from rag_flamingo.store.items import item_record
from rag_flamingo.store.records import StoreInfo
from rag_flamingo.store.shards import write_shard
from rag_flamingo.vectors import normalize_rows

TOKENIZER = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "af1_tiny" / "tokenizer"


def make_store(root: Path, n: int, dim: int, rows_per_group: int, seed: int = 0) -> tuple[IndexStore, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = normalize_rows(rng.normal(size=(n // rows_per_group, dim)).astype(np.float32))
    vectors = np.repeat(groups, rows_per_group, axis=0)
    records = [
        item_record(
            {
                "id": f"r{i}",
                "path": f"{i // rows_per_group}.wav",
                "captions": [f"a recording number {i // rows_per_group} with a dog barking near cars."],
                "split": "train" if (i // rows_per_group) % 4 else "val",
            }
        )
        for i in range(len(vectors))
    ]
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    info = StoreInfo(encoder={"name": "bench"}, dim=dim, count=len(records), index={"type": "IndexFlatIP"})
    write_shard(root, 0, vectors, records)
    write_store(root, info, index, records)
    return IndexStore.open(root), groups


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rows-per-group", type=int, default=5)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--k", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    faiss.omp_set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        store, groups = make_store(Path(tmp), args.n, args.dim, args.rows_per_group)
        rng = np.random.default_rng(1)
        picks = rng.integers(len(groups), size=args.queries)
        queries = normalize_rows(groups[picks] + 0.3 * rng.normal(size=(args.queries, args.dim)).astype(np.float32))
        where = {it["path"]: row for row, it in enumerate(store.items)}  # first row of each recording
        any_retriever = Retriever(store)
        exclude = [any_retriever.own_rows(store.recording_keys[where[f"{g}.wav"]]) for g in picks]
        ids = [f"q{i}" for i in range(args.queries)]
        settings = {
            "knn (overfetch 50, shuffle)": (Retriever(store), {}),
            "knn + near-dup 0.94": (Retriever(store, near_duplicate_threshold=0.94), {}),
            "knn + filter split=val (1/4 of rows)": (Retriever(store), {"filters": {"split": "val"}}),
            "same, overfetch=0 (widening x4)": (Retriever(store, overfetch=0), {"filters": {"split": "val"}}),
            "random": (Retriever(store, mode="random"), {}),
        }
        print(
            f"store: {len(store)} rows x {args.dim} dims, {len(groups)} groups, IndexFlatIP, "
            f"{args.queries} queries, k={args.k}, faiss threads={args.threads}"
        )
        print("| setting | s / batch | queries/s |\n| --- | --- | --- |")
        shots = None
        for name, (retriever, kw) in settings.items():
            retriever.search(queries[:2], args.k, exclude_rows=exclude[:2], query_ids=ids[:2], **kw)  # warm
            run = functools.partial(retriever.search, queries, args.k, exclude_rows=exclude, query_ids=ids, **kw)
            sec = timed(run)
            print(f"| {name} | {sec:.3f} | {args.queries / sec:.0f} |")
            shots = shots or run()

        from transformers import AutoTokenizer

        count = token_counter(AutoTokenizer.from_pretrained(str(TOKENIZER)))
        items = [store.item(int(g) * args.rows_per_group) for g in picks]
        sec = timed(
            lambda: [build_prompt("captioning", it, s, None, count_tokens=count) for it, s in zip(items, shots)]
        )
        print(f"| build_prompt captioning, {args.k} shots, token-counted | {sec:.3f} | {args.queries / sec:.0f} |")


if __name__ == "__main__":
    main()
