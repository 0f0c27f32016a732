"""Published figures beside ours: the ``paper``/``paper_other``/``reproduced`` entries of a suite run.

A figure (schema `rag_flamingo.config.FigureConfig`) is a value on its own ``scale`` (``percent``:
accuracy in %, divided by 100 here; ``fraction``: as our metrics print, CIDEr-D included), what it
measures (``metric``, when it is not the run's main metric as is: a subset, another metric), the
shot count of ours it corresponds to (``shots``: retrieved shots, the query not counted), its
``source``, and whether ours is measured the same way (``comparable``; ``note`` says why not) or it
was read off a chart (``approximate``).

`compare` holds one figure against the flamingo result at its shot count: ``inside`` when the
figure lies in our 95% bootstrap interval, ``outside`` when not, and otherwise why no verdict is
given (no result at those shots, no interval, not comparable, no published value).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from .config import FigureConfig, SuiteRunConfig, check_ranges
from .errors import ConfigError


def figure(fig: FigureConfig, where: str) -> dict:
    """One figure as the record results.json keeps, its ranges checked (ConfigError naming ``where``;
    a suite file's figures were checked at composition, a figure made in code is checked here)."""
    out = dataclasses.asdict(fig)
    try:
        check_ranges(FigureConfig, out)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    return out


def run_figures(run: SuiteRunConfig, name: str) -> tuple[dict, list[dict], list[dict]]:
    """(paper, paper_other, reproduced) of a suite run, checked."""
    paper = figure(run.paper, f"{name}.paper")
    other = [figure(f, f"{name}.paper_other[{i}]") for i, f in enumerate(run.paper_other)]
    reproduced = [figure(f, f"{name}.reproduced[{i}]") for i, f in enumerate(run.reproduced)]
    return paper, other, reproduced


def as_fraction(fig: Mapping) -> float | None:
    """The figure on our scale (percent / 100), or None."""
    value = fig.get("value")
    if value is None:
        return None
    return float(value) / 100.0 if fig.get("scale") == "percent" else float(value)


def value_text(fig: Mapping) -> str:
    value = fig.get("value")
    if value is None:
        return "n/a"
    mark = "≈" if fig.get("approximate") else ""
    return f"{mark}{value} %" if fig.get("scale") == "percent" else f"{mark}{value}"


def figure_text(fig: Mapping, with_source: bool = True) -> str:
    """``86.9 % accuracy (unanimous) @0 shots [source]`` (the plan's cell)."""
    parts = [value_text(fig)]
    if fig.get("metric"):
        parts.append(str(fig["metric"]))
    if fig.get("shots") is not None:
        parts.append(f"@{fig['shots']} shots")
    text = " ".join(parts)
    if fig.get("value") is None and fig.get("note"):
        text += f" ({fig['note']})"
    if with_source:
        text += f" [{fig.get('source') or 'no source'}]"
    return text


def _flamingo_at(results: Sequence[dict], shots: int | None) -> dict | None:
    for r in results:
        if r.get("predictor") == "flamingo" and r.get("shots") == shots:
            return r
    return None


def compare(fig: Mapping, results: Sequence[dict], metric: str) -> dict:
    """``{"ours", "ci", "published", "verdict"}`` for one figure against our flamingo results."""
    published = as_fraction(fig)
    hit = _flamingo_at(results, fig.get("shots"))
    ours = None if hit is None else hit.get(metric)
    ci = None if hit is None else (hit.get("ci") or {}).get(metric)
    if published is None:
        verdict = "no published value" + (f" ({fig['note']})" if fig.get("note") else "")
    elif not fig.get("comparable", True):
        verdict = "not comparable" + (f": {fig['note']}" if fig.get("note") else "")
    elif hit is None:
        verdict = f"no flamingo result at {fig.get('shots')} shots"
    elif ours is None or ci is None:
        verdict = "no interval"
    else:
        inside = ci[0] <= published <= ci[1]
        verdict = ("inside" if inside else "outside") + (" (approximate figure)" if fig.get("approximate") else "")
    return {"ours": ours, "ci": ci, "published": published, "verdict": verdict}


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def comparison_rows(dataset: str, task: str, metric: str, figures: Sequence[tuple[str, dict]], results) -> list[str]:
    rows = []
    for kind, fig in figures:
        c = compare(fig, results, metric)
        ours = _num(c["ours"]) + ("" if c["ci"] is None else f" [{c['ci'][0]:.4f}, {c['ci'][1]:.4f}]")
        what = fig.get("metric") or metric
        shots = "-" if fig.get("shots") is None else str(fig["shots"])
        rows.append(
            f"| {dataset} | {task} | {kind} | {what} | {shots} | {ours} | {value_text(fig)} "
            f"({_num(c['published'])}) | {fig.get('source') or 'n/a'} | {c['verdict']} |"
        )
    return rows


COMPARISON_HEAD = [
    "| dataset | task | figure | measures | shots | ours [95% CI] | published (as a fraction) | source | "
    "published inside our interval? |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]
