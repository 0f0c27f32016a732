"""Scores, tables and plots of an evaluation folder (``evaluate`` writes them; sweeps reuse them).

- `score_predictions`: predictions.jsonl records -> one result per (predictor, shots) with the
  task family's metrics (`rag_flamingo.metrics`), each with its 95% bootstrap interval (``ci``:
  queries resampled, seeded, every metric recomputed per resample by `metrics.bootstrap`; the
  result's ``bootstrap`` says how many resamples, the seed and the seconds they cost);
- `chance_level`: what guessing scores on single-label classification (uniform over the options,
  and always answering the most frequent target), printed and plotted next to the results;
- `markdown_table`: those results as a markdown table (printed and written to results.md);
- `plot_metric_vs_shots`: the family's main metric against the number of shots, one line per
  predictor that uses shots, a dashed level per predictor that does not (matplotlib, Agg);
- `plot_ours_vs_paper`: a suite's bars, the main metric of each run, ours beside the paper's figure.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .metrics import bootstrap as B
from .metrics.captioning import captioning_statistic
from .metrics.classification import canonical_reference
from .tasks import TaskFamily

# family -> (main metric, columns of the table)
COLUMNS = {
    "classification": ("accuracy", ["accuracy", "macro_f1", "unmatched"]),
    "tagging": ("mAP", ["mAP", "micro_f1", "macro_f1", "approx_f1", "unmatched"]),
    "captioning": ("cider_d", ["cider_d", "bleu_4", "rouge_l", "spider"]),
    "aqa": ("accuracy", ["accuracy", "unmatched"]),
}


def _groups(records: Sequence[dict]) -> dict[tuple[str, int | None], list[dict]]:
    out: dict[tuple[str, int | None], list[dict]] = {}
    for r in records:
        out.setdefault((r["predictor"], r["shots"]), []).append(r)
    return out


def _options(records: Sequence[dict], task, labels: Sequence[str]) -> list[str]:
    return sorted({task.map_label(lab) for lab in labels} | {r["target"] for r in records})


def chance_level(records: Sequence[dict], task, labels: Sequence[str]) -> dict | None:
    """``{"uniform", "majority", "options"}`` accuracy of guessing, for single-label classification."""
    if task.family != TaskFamily.CLASSIFICATION or not records:
        return None
    targets = list({r["id"]: r["target"] for r in records}.values())  # one per query
    counts: dict[str, int] = {}
    for t in targets:
        counts[t] = counts.get(t, 0) + 1
    options = _options(records, task, labels)
    return {"uniform": 1.0 / len(options), "majority": max(counts.values()) / len(targets), "options": len(options)}


def chance_text(chance: dict | None) -> str:
    if not chance:
        return ""
    return (
        f"chance: {chance['uniform']:.4f} (uniform over {chance['options']} options), "
        f"{chance['majority']:.4f} (always the most frequent label)"
    )


def score_group(records: list[dict], task, labels: Sequence[str]) -> dict:
    """The family's metrics for one (predictor, shots) group of prediction records."""
    return _score(records, task, labels)[0]


def _score(records: list[dict], task, labels: Sequence[str]) -> tuple[dict, B.Statistic]:
    """The group's metrics, and the bootstrap statistic recomputing them on a resample of its queries."""
    outputs = [r["output"] or "" for r in records]
    family = task.family
    if family == TaskFamily.CLASSIFICATION:
        options = list(dict.fromkeys(_options(records, task, labels)))
        references = [r["target"] for r in records]
        res = M.classification_metrics(outputs, references, options)
        truth = [canonical_reference(ref, options, i) for i, ref in enumerate(references)]
        out = {"n": res.n, "accuracy": res.accuracy, "macro_f1": res.macro_f1, "unmatched": res.unmatched}
        return out, B.classification_statistic(truth, res.predictions)
    if family == TaskFamily.TAGGING:
        vocab = sorted(set(labels) | {lab for r in records for lab in r["target"]})
        scores = None
        if all(r.get("label_scores") is not None for r in records):
            scores = np.array([[r["label_scores"].get(lab, 0.0) for lab in vocab] for r in records])
        tags = M.multilabel_metrics(outputs, [r["target"] for r in records], vocab, scores=scores)
        approx = M.approximate_f1(outputs, [r["target"] for r in records])
        index = {lab: i for i, lab in enumerate(vocab)}
        truth_m = np.zeros((len(records), len(vocab)))
        pred_m = np.zeros_like(truth_m)
        for i, r in enumerate(records):
            for ref in r["target"]:
                truth_m[i, index[canonical_reference(ref, vocab, i)]] = 1
            for lab in tags.predictions[i] if tags.predictions else []:
                pred_m[i, index[lab]] = 1
        tagged: dict[str, float | int | None] = {
            "n": tags.n,
            "mAP": tags.mAP,
            "micro_f1": tags.micro_f1,
            "macro_f1": tags.macro_f1,
            "approx_f1": approx.approx_f1,
            "unmatched": tags.unmatched,
        }
        return tagged, B.tagging_statistic(truth_m, pred_m, scores, np.asarray(approx.counts).reshape(-1, 4))
    if family == TaskFamily.CAPTIONING:
        references = [r["target"] for r in records]
        caps = M.captioning_metrics(outputs, references)
        out = {"n": caps["n"], **{k: caps[k] for k in ("cider_d", "bleu_4", "rouge_l", "spider")}}
        return out, captioning_statistic(outputs, references, caps["per_item"])
    aqa = M.aqa_accuracy(outputs, [r["target"] for r in records])
    out = {"n": aqa.n, "accuracy": aqa.accuracy, "unmatched": aqa.unmatched}
    return out, B.mean_statistic({"accuracy": [float(x) for x in aqa.per_item]})


def score_predictions(
    records: Sequence[dict], task, labels: Sequence[str], resamples: int = B.RESAMPLES, seed: int = B.SEED
) -> list[dict]:
    """One result per (predictor, shots), sorted by predictor then shots (shot-free first), each with
    ``ci`` (metric -> [low, high], the 95% bootstrap interval over ``resamples`` resamples of its
    queries, seeded) and ``bootstrap`` (resamples, seed, level, seconds)."""
    results = []
    for (name, shots), group in _groups(records).items():
        counts = [len(r.get("shot_ids") or []) for r in group]
        # absent (not 0) when no record lists a shot: a rule that voted without retrieved shots (adapt)
        used = None if shots is None or not any(counts) else round(float(np.mean(counts)), 2)
        scored, statistic = _score(group, task, labels)
        ci, seconds = B.bootstrap(statistic, len(group), resamples=resamples, seed=seed)
        ci = {k: v for k, v in ci.items() if scored.get(k) is not None}
        boot = {"resamples": resamples, "seed": seed, "level": B.LEVEL, "unit": "query", "seconds": round(seconds, 3)}
        results.append({"predictor": name, "shots": shots, **scored, "shots_used": used, "ci": ci, "bootstrap": boot})
    results.sort(key=lambda r: (r["predictor"], -1 if r["shots"] is None else r["shots"]))
    for r in results:
        r["family"] = task.family
    return results


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(results: Sequence[dict]) -> str:
    """One row per (predictor, shots); each metric with its 95% bootstrap interval ``[low, high]``
    where the result has one; ``shots used`` is the mean number of shots the prompts held (fewer
    than asked when the store runs short after filtering and self-exclusion)."""
    if not results:
        return "(no predictions)"
    family = results[0].get("family", "classification")
    cols = [c for c in COLUMNS.get(family, COLUMNS["classification"])[1] if any(r.get(c) is not None for r in results)]
    head = ["predictor", "shots", "n", *cols, "shots used"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in results:
        used = r.get("shots_used")
        cells = [
            r["predictor"],
            "–" if r["shots"] is None else str(r["shots"]),
            str(r["n"]),
            *(_fmt(r.get(c)) + _interval((r.get("ci") or {}).get(c)) for c in cols),
            "–" if used is None else f"{used:g}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _interval(ci) -> str:
    return "" if not ci else f" [{ci[0]:.4f}, {ci[1]:.4f}]"


def bootstrap_text(results: Sequence[dict]) -> str:
    """The line under a table that says how its intervals were made and what they cost."""
    boots = [r["bootstrap"] for r in results if r.get("bootstrap")]
    if not boots:
        return ""
    b = boots[0]
    return (
        f"[low, high]: {b['level']:.0%} bootstrap interval, {b['resamples']} resamples of the queries (seed "
        f"{b['seed']}), every metric recomputed per resample; cost {sum(x['seconds'] for x in boots):.2f} s"
    )


@contextlib.contextmanager
def _figure(path: Path, size: tuple[float, float]) -> Iterator[Any]:
    """The axes of a new figure (matplotlib, Agg), saved to ``path`` when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=120)
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def plot_metric_vs_shots(
    results: Sequence[dict], path: Path, title: str = "", chance: float | None = None
) -> Path | None:
    """Main metric vs shots; None (no file) unless some predictor has two or more shot counts."""
    if not results:
        return None
    family = results[0].get("family", "classification")
    metric = COLUMNS.get(family, COLUMNS["classification"])[0]
    lines: dict[str, list[tuple[int, float]]] = {}
    levels: dict[str, float] = {}
    for r in results:
        value = r.get(metric)
        if value is None:
            continue
        if r["shots"] is None:
            levels[r["predictor"]] = float(value)
        else:
            lines.setdefault(r["predictor"], []).append((int(r["shots"]), float(value)))
    if not any(len(points) > 1 for points in lines.values()):
        return None
    path = Path(path)
    with _figure(path, (6, 4)) as ax:
        xs = sorted({x for points in lines.values() for x, _ in points})
        for name, points in sorted(lines.items()):
            points.sort()
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
        for i, (name, level) in enumerate(sorted(levels.items())):
            ax.axhline(
                level, linestyle="--", linewidth=1, label=f"{name} (no shots)", color=f"C{(len(lines) + i) % 10}"
            )
        if chance is not None:
            ax.axhline(chance, linestyle=":", color="grey", linewidth=1, label="chance")
        ax.set_xticks(xs)
        ax.set_xlabel("shots (retrieved in-context examples)")
        ax.set_ylabel(metric)
        ax.set_title(title or f"{metric} vs shots")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return path


def plot_ours_vs_paper(
    groups: Sequence[str], ours: Sequence[Mapping[str, float | None]], paper: Sequence[float | None], path: Path
) -> Path | None:
    """One group of bars per run (``groups``: their tick labels): ours, one bar per label of ``ours``
    (e.g. ``flamingo 4-shot``), and the paper's figure in black; no bar where a value is None (n/a).
    None (no file) without runs."""
    if not groups:
        return None
    labels = sorted({label for run in ours for label in run}) + ["paper"]
    width = 0.8 / len(labels)
    path = Path(path)
    with _figure(path, (max(6, 1.2 * len(groups) * len(labels) / 2), 4)) as ax:
        for j, label in enumerate(labels):
            values = paper if label == "paper" else [run.get(label) for run in ours]
            xs = [i + (j - (len(labels) - 1) / 2) * width for i, value in enumerate(values) if value is not None]
            if xs:
                ys = [float(value) for value in values if value is not None]
                ax.bar(xs, ys, width, label=label, color="black" if label == "paper" else f"C{j % 10}")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(list(groups), fontsize=8)
        ax.set_title("ours vs the paper (main metric per dataset; no bar: n/a)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    return path


def write_report(root: Path, summary: dict) -> None:
    """metrics.json, results.md and (for several shot counts) metric_vs_shots.png in ``root``."""
    root = Path(root)
    title = f"{summary['dataset']} / {summary['task']} ({summary['query_split']})"
    chance = summary.get("chance")
    plot = plot_metric_vs_shots(
        summary["results"],
        root / "metric_vs_shots.png",
        title,
        chance=max(chance["uniform"], chance["majority"]) if chance else None,
    )
    summary["plot"] = str(plot) if plot else None
    (root / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    text = (
        f"# {title}\n\nstore: `{summary['store']}` (encoder {summary['encoder']}); "
        f"{summary['queries']} queries, {summary['rejected']} rejected\n\n{provenance_text(summary)}"
        f"{markdown_table(summary['results'])}\n"
    )
    if bootstrap_text(summary["results"]):
        text += f"\n{bootstrap_text(summary['results'])}\n"
    if chance:
        text += f"\n{chance_text(chance)}\n"
    if plot:
        text += f"\n![metric vs shots]({plot.name})\n"
    (root / "results.md").write_text(text)


def provenance_text(summary: dict) -> str:
    """The run key and the query audio the results were made from (a line of results.md), or ``""``."""
    audio = summary.get("query_audio")
    if not summary.get("run_key") or not audio:
        return ""
    adapt = (summary.get("run") or {}).get("adapt")
    shift = f"adapt={adapt} (the support and queries re-expressed first: README, new labels); " if adapt else ""
    return (
        f"{shift}run key `{summary['run_key']}` (settings in run.json); query audio: {audio['files']} files, "
        f"content digest `{audio['content_digest']}`\n\n"
    )


def summary_text(summary: dict) -> str:
    """What ``evaluate`` prints at the end of a run."""
    adapt = (summary.get("run") or {}).get("adapt")
    lines = [
        f"\n{summary['dataset']} / {summary['task']} ({summary['queries']} queries, "
        f"{summary['rejected']} rejected), store {summary['store']}" + (f", adapt={adapt}" if adapt else ""),
        markdown_table(summary["results"]),
    ]
    if bootstrap_text(summary["results"]):
        lines.append(bootstrap_text(summary["results"]))
    if summary.get("chance"):
        lines.append(chance_text(summary["chance"]))
    if summary.get("queries_with_copies_in_store"):
        lines.append(
            f"leak: {summary['queries_with_copies_in_store']} queries have an exact copy of their audio in "
            f"the store (another file, same content); the copies were excluded from their shots"
        )
    lines.append(f"outputs: {summary['output_dir']}")
    return "\n".join(lines)
