"""Benchmark: adapting to new labels without fine-tuning, on the real-recording development set.

For each task of ``scripts/make_devset.py`` (support: ``train/``, queries: ``test/``, other sources):

1. ``build_index dataset=folder dataset.root=<task> encoder=aisfx`` (the support store) and the same
   for ``split=test`` (the queries' embeddings, for step 3);
2. ``evaluate`` with ``predictor=knn,prototype,simpleshot,tip_adapter,lda,fusion shots=1,4,16``, again
   with ``retrieval=balanced`` for knn, with ``predictors.fusion.base=prototype``, and with test-time
   augmentation (``predictors.lda.tta=4 predictors.fusion.tta=4``): the table of the README's CLI,
   its metrics.json read back;
3. support size: ``n`` recordings per class drawn from the support (5 seeded draws), the rest left
   out as each query's excluded rows (the predictors' own-row path), for 1-NN (knn at 1 shot),
   prototype and lda.

    python scripts/make_devset.py --out devset
    python scripts/bench_adaptation.py --devset devset --work devset/bench
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
from pathlib import Path

import numpy as np

from index_builder.cli import main as build_index
from rag_flamingo.config import PredictorOptions
from rag_flamingo.evaluate import main as evaluate
from rag_flamingo.labels import item_labels
from rag_flamingo.predictors import PredictorContext, Query, build_predictor
from rag_flamingo.retrieval import Retriever
from rag_flamingo.store.index_store import IndexStore

PREDICTORS = "knn,prototype,simpleshot,tip_adapter,lda,fusion"
TTA = 4
SIZES = (1, 4, 16)
DRAWS = 5


def run_evaluate(store: Path, root: Path, out: Path, *extra: str) -> list[dict]:
    args = [f"store={store}", "dataset=folder", f"dataset.root={root}", f"output_dir={out}", "progress=false"]
    if evaluate([*args, "overwrite=true", *extra]) != 0:
        raise SystemExit(f"evaluate failed for {root}")
    return json.loads((out / "metrics.json").read_text())["results"]


def support_sizes(store: IndexStore, queries: IndexStore) -> dict[str, dict[int, float]]:
    """Accuracy (mean of DRAWS draws) with n support recordings per class, per predictor."""
    labels = [item_labels(it)[0] for it in store.items]
    truth = [item_labels(it)[0] for it in queries.items]
    emb = queries.embeddings()
    retriever = Retriever(store, shuffle=False)
    ctx = PredictorContext(PredictorOptions(), store, None, retriever, lambda: None)
    preds = {name: build_predictor(name, ctx) for name in ("knn", "prototype", "lda")}
    out: dict[str, dict[int, float]] = {name: {} for name in preds}
    for n in SIZES:
        scores: dict[str, list[float]] = {name: [] for name in preds}
        for draw in range(DRAWS):
            rng = np.random.default_rng(draw)
            keep = set()
            for lab in sorted(set(labels)):
                rows = [r for r, lb in enumerate(labels) if lb == lab]
                keep.update(rng.choice(rows, min(n, len(rows)), replace=False).tolist())
            left_out = frozenset(set(range(len(store))) - keep)
            shots = retriever.search(emb, 1, exclude_rows=[left_out] * len(emb))
            for name, pred in preds.items():
                qs = [Query(f"q{i}", {"id": f"q{i}"}, {}, emb[i], shots[i], None, left_out) for i in range(len(emb))]
                got = [p.output for p in pred.predict(qs, "classification")]
                scores[name].append(float(np.mean([g == t for g, t in zip(got, truth)])))
        for name in preds:
            out[name][n] = float(np.mean(scores[name]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devset", type=Path, default=Path("devset"))
    p.add_argument("--work", type=Path, default=Path("devset/bench"))
    p.add_argument("--tasks", default="drums,instruments")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}, {platform.processor() or platform.machine()}, {platform.python_version()}")
    summary = {}
    for task in args.tasks.split(","):
        root, work = args.devset / task, args.work / task
        store, qstore = work / "support", work / "queries"
        for split, target in (("train", store), ("test", qstore)):
            if not (target / "store.json").is_file():
                build_index(
                    [
                        "dataset=folder",
                        f"dataset.root={root}",
                        "encoder=aisfx",
                        f"split={split}",
                        f"store={target}",
                        "progress=false",
                    ]
                )
        results = run_evaluate(store, root, work / "eval", f"predictor={PREDICTORS}", "shots=1,4,16")
        results += [
            {**r, "predictor": "knn+balanced"}
            for r in run_evaluate(
                store, root, work / "eval_balanced", "predictor=knn", "shots=4,16", "retrieval=balanced"
            )
        ]
        results += [
            {**r, "predictor": "fusion, base=prototype"}
            for r in run_evaluate(
                store,
                root,
                work / "eval_fusion_prototype",
                "predictor=fusion",
                "shots=1,4,16",
                "predictors.fusion.base=prototype",
            )
        ]
        results += [
            {**r, "predictor": f"{r['predictor']}, tta={TTA}"}
            for r in run_evaluate(
                store,
                root,
                work / "eval_tta",
                "predictor=lda,fusion",
                "shots=4",
                f"predictors.lda.tta={TTA}",
                f"predictors.fusion.tta={TTA}",
            )
        ]
        metrics = json.loads((work / "eval" / "metrics.json").read_text())
        sizes = support_sizes(IndexStore.open(store), IndexStore.open(qstore))
        summary[task] = {"results": results, "chance": metrics.get("chance"), "support_sizes": sizes}
        one_nn = next(r["accuracy"] for r in results if r["predictor"] == "knn" and r["shots"] == 1)
        print(f"\n{task}: {results[0]['n']} queries, chance {metrics.get('chance')}")
        print("| predictor | shots | accuracy | macro-F1 | vs 1-NN |\n| --- | --- | --- | --- | --- |")
        for r in results:
            shots = "–" if r["shots"] is None else r["shots"]
            delta = 100 * (r["accuracy"] - one_nn)
            print(f"| {r['predictor']} | {shots} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {delta:+.1f} |")
        print("support recordings per class (mean of 5 draws): " + json.dumps(sizes))
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
