"""Benchmark: new labels across development sets, every choice made leaving one set out.

For each set (a ``dataset=folder`` tree of ``scripts/make_devset.py`` or ``scripts/make_devset_gm.py``;
support ``train/``, queries ``test/``, from other sources) the support and the queries are embedded
once (``build_index encoder=aisfx``, one store each) and every candidate is scored on the stored
embeddings with the library's own code (`rag_flamingo.adapters` fitted on the support,
`rag_flamingo.shift` for ``adapt``):

- rules: knn at k = 1, 4, 8 for each vote temperature of ``TEMPERATURES`` (``knn`` at k=1 is 1-NN
  whatever the temperature), prototype, simpleshot, tip_adapter, lda; fusion (lda's posteriors and the
  k nearest rows' vote, `rag_flamingo.adapters.FusedVote`) for each weight of ``FUSION_WEIGHTS``, k of
  ``FUSION_KS`` and temperature of ``FUSION_TEMPERATURES``, and with the weight chosen on the support
  by cross-validation (``w=cv``, the rule before fixed weights);
- ``adapt``: none, source (query-free), center, standardize, propagate (transductive);
- a ceiling: a linear probe (logistic regression) trained on the *queries' own* labels by 5-fold
  cross-validation: what a classifier of these embeddings reaches with labelled clips of the query
  sources, an upper bound for any rule fitted on the support alone.

Selection, leave-one-set-out: for each set, the candidate with the best *worst* gain over 1-NN on the
*other* sets (the goal: never below 1-NN; ties: the best mean gain there, then the first in the grid
order) is the one reported for it, once among the candidates at the default ``adapt=none`` (a
predictor's own settings: what labels one clip; ``adapt=source`` is scored but was no help before
this selection existed, BENCHMARKS.md) and once among all, transductive modes included; the knn
temperature at k=8 by the same rule. The same rule on all sets gives the defaults
(``predictors.fusion.weight`` / ``temperature``, the recommended shots). Intervals: 95%
bootstrap over the queries (`rag_flamingo.metrics.bootstrap`), of the accuracy and of the paired
difference with 1-NN (a difference whose interval excludes 0 is real).

    python scripts/make_devset.py --out devset && python scripts/make_devset_gm.py --out devset_gm
    python scripts/bench_sets.py --sets devset/drums,devset/instruments,devset_gm/gm_drums,devset_gm/gm_instruments \\
        --work bench_sets
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import subprocess
from pathlib import Path

import numpy as np

from index_builder.cli import main as build_index
from rag_flamingo.adapters import (
    METHODS,
    FusedVote,
    Fusion,
    NearestCentroid,
    NeighbourVote,
    ShrinkageLda,
    Support,
    probabilities,
)
from rag_flamingo.errors import ConfigError
from rag_flamingo.labels import item_labels
from rag_flamingo.metrics.bootstrap import bootstrap, mean_statistic
from rag_flamingo.paths import check_writable_folder
from rag_flamingo.shift import MODES, adapted, item_source, propagate
from rag_flamingo.store.index_store import IndexStore

TEMPERATURES = (0.1, 0.03, 0.01, 0.003)
KS = (1, 4, 8)
FUSION_WEIGHTS = (0.4, 0.5, 0.6, 0.7, 0.8)
FUSION_KS = (4, 8, 16)
FUSION_TEMPERATURES = (0.1, 0.03, 0.01)
KEY_ROWS = [
    "1-NN | none",
    *(f"knn k={k} T={t} | none" for t in (0.1, 0.003) for k in (4, 8)),
    "prototype | none",
    "lda | none",
    "lda | source",
    "lda | center",
    "lda | standardize",
    "lda | propagate",
    "fusion w=cv k=8 T=0.1 | none",
    "ceiling: probe on the queries",
]
SOFTMAX_T = 0.1  # a cosine rule's probabilities for propagate (the knn vote's default temperature)


def set_problem(root: Path) -> str | None:
    """Why ``root`` is not a set (``train/`` and ``test/`` with two or more label folders of audio each)."""
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            return f"--sets {root}: no {split}/ folder (a set made by make_devset*.py)"
        labels = [d for d in folder.iterdir() if d.is_dir() and any(f.is_file() for f in d.rglob("*"))]
        if len(labels) < 2:
            return f"--sets {root}: {split}/ has {len(labels)} label folder(s) with files; a set needs two or more"
    return None


def stores(root: Path, work: Path) -> tuple[IndexStore, IndexStore]:
    """The set's support and query stores under ``work``, named by the set folder's name and path, and
    built (or checked current: build_index resumes, or finds nothing new) on every run."""
    out = []
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    for split in ("train", "test"):
        target = work / f"{root.resolve().name}-{tag}-{split}"
        args = [f"dataset.root={root}", "encoder=aisfx", f"split={split}", f"store={target}"]
        if build_index(["dataset=folder", *args, "progress=false"]) != 0:
            raise SystemExit(f"build_index failed for {root} {split} (its error above)")
        out.append(IndexStore.open(target))
    return out[0], out[1]


def methods() -> dict[str, object]:
    grid: dict[str, object] = {"1-NN": NeighbourVote(1, 0.1)}
    for t in TEMPERATURES:
        for k in KS[1:]:
            grid[f"knn k={k} T={t}"] = NeighbourVote(k, t)
    grid["prototype"] = NearestCentroid()
    grid.update({name: cls() for name, cls in METHODS.items()})
    for w in (*FUSION_WEIGHTS, None):
        for k in FUSION_KS:
            for t in FUSION_TEMPERATURES:
                grid[f"fusion w={'cv' if w is None else w} k={k} T={t}"] = FusedVote(Fusion(ShrinkageLda(), t, w), k)
    return grid


def correct(support: IndexStore, queries: IndexStore) -> dict[str, np.ndarray]:
    """Per query 0/1 correctness of every (rule, adapt) candidate, and of the probe."""
    labelled = Support.from_items(support.embeddings(), support.items)
    sources = [item_source(support.item(int(r))) for r in labelled.rows]
    truth = [item_labels(it)[0] for it in queries.items]
    out: dict[str, np.ndarray] = {}
    for mode in MODES:
        sup, q_emb = adapted(mode, labelled, sources, np.asarray(queries.embeddings(), np.float64))
        for name, method in methods().items():
            fitted = method.fit(sup)  # type: ignore[attr-defined]
            if mode == "propagate":
                scores = propagate(sup.emb, sup.onehot, q_emb, probabilities(fitted, q_emb, SOFTMAX_T))
            else:
                scores = fitted.scores(q_emb)
            guess = [sup.labels[j] for j in np.argmax(scores, 1)]
            out[f"{name} | {mode}"] = np.array([g == t for g, t in zip(guess, truth)], np.float64)
    s_truth = [labelled.labels[j] for j in labelled.onehot.argmax(1)]
    out["ceiling: probe on the queries"] = probe(labelled.emb, s_truth, queries.embeddings(), truth)
    return out


def probe(support: np.ndarray, s_truth: list[str], emb: np.ndarray, truth: list[str]) -> np.ndarray:
    """Each query labelled by a logistic regression (standardised features) trained on the support and
    on the other 4 of 5 folds of the queries: labelled clips of the query sources, a ceiling."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    labels, x = np.array(truth), emb / np.linalg.norm(emb, axis=1, keepdims=True)
    folds = max(2, min(5, int(min(np.unique(labels, return_counts=True)[1]))))
    hits = np.zeros(len(labels))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(x, labels):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
        model.fit(np.concatenate([support, x[train]]), np.concatenate([s_truth, labels[train]]))
        hits[test] = model.predict(x[test]) == labels[test]
    return hits


def choose(pool: list[str], gain: dict[str, dict[str, float]], sets: list[str]) -> str:
    """The candidate of ``pool`` with the best worst gain over 1-NN on ``sets`` (ties: best mean gain,
    then the first in the grid order)."""

    def key(n: str) -> tuple[float, float]:
        return round(min(gain[n][s] for s in sets), 9), round(float(np.mean([gain[n][s] for s in sets])), 9)

    return max(pool, key=key)


def interval(values: np.ndarray) -> list[float]:
    return bootstrap(mean_statistic({"v": values}), len(values))[0]["v"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", required=True, help="comma list of set folders")
    p.add_argument("--work", type=Path, default=Path("bench_sets"))
    args = p.parse_args()
    sets = [Path(s) for s in args.sets.split(",") if s]
    problem = next(filter(None, map(set_problem, sets)), None)
    if not problem and len(sets) < 2:
        problem = f"--sets names {len(sets)} set: leaving one set out needs two or more"
    elif not problem and len({s.resolve() for s in sets}) < len(sets):
        problem = "--sets names a set twice"
    try:
        check_writable_folder(args.work, "--work ")
    except ConfigError as exc:
        problem = problem or str(exc)
    if problem:
        p.exit(2, f"{p.prog}: error: {problem}\n")
    logging.basicConfig(level=logging.WARNING)
    root = Path(__file__).resolve().parents[1]
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    print(
        f"commit {commit.stdout.strip() or '(not a checkout)'}, {platform.processor() or platform.machine()}, "
        f"{platform.python_version()}"
    )
    names = [s.resolve().name for s in sets]
    shown = names if len(set(names)) == len(names) else [f"{s.resolve().parent.name}/{s.resolve().name}" for s in sets]
    results = {name: correct(*stores(s, args.work)) for name, s in zip(shown, sets)}
    names = list(next(iter(results.values())))
    base = "1-NN | none"
    gain = {n: {s: float(r[n].mean() - r[base].mean()) for s, r in results.items()} for n in names}
    candidates = [n for n in names if not n.startswith("ceiling")]
    knn8 = [n for n in candidates if n.startswith("knn k=8") and n.endswith("| none")]
    summary: dict = {"sets": {}, "selection": {}}
    plain = [n for n in candidates if n.endswith("| none")]
    pools = {
        "default (adapt=none)": plain,
        "default (transductive allowed)": candidates,
        "knn k=8 temperature": knn8,
    }
    summary["defaults"] = {what: choose(pool, gain, list(results)) for what, pool in pools.items()}
    for held in results:
        rest = [s for s in results if s != held]
        for what, pool in pools.items():
            pick = choose(pool, gain, rest)
            r = results[held]
            summary["selection"].setdefault(held, {})[what] = {
                "chosen": pick,
                "accuracy": float(r[pick].mean()),
                "interval": interval(r[pick]),
                "vs_1nn": float(r[pick].mean() - r[base].mean()),
                "vs_1nn_interval": interval(r[pick] - r[base]),
            }
    for s, r in results.items():
        summary["sets"][s] = {
            n: {"accuracy": float(v.mean()), "interval": interval(v), "vs_1nn_interval": interval(v - r[base])}
            for n, v in r.items()
        }
        summary["sets"][s]["queries"] = len(r[base])
    summary["mean_gain"] = {n: float(np.mean(list(gain[n].values()))) for n in names}
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("| candidate | " + " | ".join(results) + " | mean vs 1-NN |")
    print("| --- |" + " --- |" * (len(results) + 1))
    for n in sorted(names, key=lambda n: -summary["mean_gain"][n]):
        cells = [f"{summary['sets'][s][n]['accuracy']:.3f}" for s in results]
        print(f"| {n} | " + " | ".join(cells) + f" | {100 * summary['mean_gain'][n]:+.1f} |")
    print("\n| candidate | " + " | ".join(f"{s} (vs 1-NN, 95% interval)" for s in results) + " |")
    print("| --- |" + " --- |" * len(results))
    chosen = [n for n in dict.fromkeys(summary["defaults"].values()) if n not in KEY_ROWS]
    for n in [*KEY_ROWS[:-1], *chosen, KEY_ROWS[-1]]:
        cells = []
        for s in results:
            row = summary["sets"][s][n]
            lo, hi = (100 * v for v in row["vs_1nn_interval"])
            delta = 100 * (row["accuracy"] - summary["sets"][s][base]["accuracy"])
            cells.append(f"{row['accuracy']:.3f} ({delta:+.1f}, [{lo:+.1f}, {hi:+.1f}])")
        print(f"| {n} | " + " | ".join(cells) + " |")
    print("\nchosen on all sets: " + "; ".join(f"{what} = {n}" for what, n in summary["defaults"].items()))
    print("\nleave-one-set-out:")
    for held, picks in summary["selection"].items():
        for what, r in picks.items():
            lo, hi = (100 * v for v in r["vs_1nn_interval"])
            gain = f"vs 1-NN {100 * r['vs_1nn']:+.1f} [{lo:+.1f}, {hi:+.1f}]"
            print(f"{held}: {what} = {r['chosen']}: {r['accuracy']:.3f}, {gain}")


if __name__ == "__main__":
    main()
