"""``evaluate suite=<name>``: a list of evaluations in one command, with ours beside the paper's figures.

A suite is a YAML in the ``suite`` config group (``rag_flamingo/conf/suite/``: ``af1`` is Audio
Flamingo v1's evaluation table, ``demo`` a small offline example; your own in
``$RAG_FLAMINGO_CONF_PATH/suite/<name>.yaml``)::

    name: mine
    overrides: [encoder=laion_clap_fusion]   # every run's evaluate overrides (the command line's win)
    baselines: {classification: [knn, prototype], captioning: [knn], tagging: [knn, prototype], aqa: []}
    baseline_shots: [7]                      # baselines' shots when a run has no shot count >= 1
    features: clapcap                        # the model's shot features cached in the stores it builds
    runs:
      - dataset: esc50                       # any dataset config; task: default its first
        shots: [0, 7]                        # predictor=flamingo at these shot counts
        setting: zero-shot                   # a label for the table
        name: null                           # the run's name and folder (default <dataset>-<task>)
        metric: null                         # the main metric (default the task family's first)
        paper: {value: 86.9, scale: percent, shots: 0, source: "poster, in-domain table"}
        paper_other: []                      # further published figures (subsets, other shot counts)
        reproduced: []                       # figures others got with the released weights

For every run the suite first **plans**: the query split's manifest and audio (missing: the run is
skipped and listed, with the command that makes the manifest), the store (reused when complete,
built when the index split's manifest is there, its features added when only they are missing),
the number of queries and (predictor, shots) combinations, and a rough time from measured per-item
costs (``costs`` in the suite YAML, each with its source; "n/a" where nothing was measured). The
plan is printed; ``suite.dry_run=true`` stops there. Then it builds what is missing
(`rag_flamingo.indexing.pipeline`, ``features=<suite.features>``) and runs `rag_flamingo.evaluate.evaluate`
twice per run (the model loaded once for the whole suite: `ModelCache`) into one folder
``<output_dir>/<name>`` (default ``<dataset>-<task>``): Audio Flamingo at the run's shots,
then the training-free baselines of the task's family. Every step resumes: a complete store is
reused, an evaluation folder keeps its predictions (a rerun of the same suite skips what is done).
A run that fails is reported and the suite goes on. Under torchrun every rank runs the same steps
(the builds split shards, the evaluations split queries) and rank 0 writes:

- ``results.json``: the plan, and per run its status, metric, our results (each predictor and shot
  count), the paper's figure and its source, the evaluation folder (whose run.json says what
  produced every number);
- ``results.md``: the table, one row per run, then ours against every published figure: our value
  with its 95% bootstrap interval, the figure on our scale, and whether it lies inside the interval
  (`rag_flamingo.figures`: figures, scales, verdicts);
- ``ours_vs_paper.png``: the main metric per run, ours (each predictor/shots) and the paper's bar.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .cli import compose_config, one_line
from .components import store_path, task_name
from .config import EvaluateConfig, SuiteConfig, SuiteRunConfig
from .errors import ConfigError, RagFlamingoError, did_you_mean
from .figures import COMPARISON_HEAD, as_fraction, compare, comparison_rows, figure_text, run_figures, value_text
from .paths import check_writable_folder
from .predictors import predictor_names
from .report import COLUMNS, plot_ours_vs_paper
from .tasks import get_task

logger = logging.getLogger(__name__)

Evaluate = Callable[..., "dict | None"]  # one evaluation run: (config, model_parts=) -> summary (rank 0) or None

FLAMINGO = "flamingo"
TODO = ("ready", "build", "features")  # plan states that run


@dataclass
class RunPlan:
    """What the suite will do for one run (and, after it, what happened)."""

    name: str  # <dataset>-<task>
    dataset: str
    task: str
    setting: str
    metric: str
    shots: list[int]
    baselines: list[str]
    baseline_shots: list[int]
    paper: dict
    paper_other: list[dict] = field(default_factory=list)
    reproduced: list[dict] = field(default_factory=list)
    status: str = "ready"  # ready | build | features | skip | error; after running: done | failed
    reason: str = ""
    queries: int = 0
    index_items: int = 0
    store: str = ""
    encoder: str = ""  # the store's retrieval encoder
    output_dir: str = ""
    combos: int = 0
    seconds: dict = field(default_factory=dict)  # device kind -> estimated seconds (None: n/a)
    results: list[dict] = field(default_factory=list)

    def predictors(self) -> list[str]:
        return [FLAMINGO, *self.baselines] if self.shots else list(self.baselines)


# ----------------------------------------------------------------------------- plan


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def base_overrides(suite: SuiteConfig, overrides: list[str]) -> list[str]:
    """The suite's own overrides, then the command line's (without the ``suite`` ones)."""
    cmdline = [o for o in overrides if _key(o) != "suite" and not _key(o).startswith("suite.")]
    return list(suite.overrides) + cmdline


def run_overrides(suite: SuiteConfig, run: SuiteRunConfig, base: list[str], suite_dir: Path) -> list[str]:
    out = [*base, *run.overrides, f"dataset={run.dataset}"]
    if run.task:
        out.append(f"task={run.task}")
    if suite.features:
        out.append(f"flamingo.features={suite.features}")
    return [*out, f"output_dir={suite_dir}", "overwrite=false"]


def _suite_dir(suite: SuiteConfig) -> Path:
    return Path(suite.output_dir or Path("outputs") / "suite" / str(suite.name)).expanduser()


def _count_rows(cfg: EvaluateConfig, role: str, task) -> int:
    """Rows of a split (the query split: as evaluate takes them); ManifestError when the manifest is
    not there. Writes nothing (`sources.peek_split`): the plan of a dry run leaves no trace."""
    from .datasets.sources import collapse_groups, peek_split, split_name

    split = split_name(cfg.dataset, cfg.query_split if role == "query" else cfg.index_split)
    rows, root, audio_exists = peek_split(cfg.dataset, split)
    if role == "query":
        if task.family == "captioning":
            rows = collapse_groups(rows)
        if cfg.limit:
            rows = rows[: cfg.limit]
        present = not audio_exists or any((Path(root) / r["path"]).is_file() or Path(r["path"]).is_file() for r in rows)
        if rows and not present:
            raise ConfigError(f"none of the {len(rows)} query audio files is under {root}")
    return len(rows)


def _store_state(path: Path, features: str | None) -> str:
    """ready (complete, with the features the model needs), features (only they are missing), build."""
    from .store.layout import INFO_FILE
    from .store.records import read_info

    if not (path / INFO_FILE).is_file():
        return "build"
    info = read_info(path)
    if info is None:
        return "build"
    return "features" if features and features not in info.features else "ready"


def _estimate(plan: RunPlan, costs: dict, encoder: str, features: str | None) -> dict:
    """``{device kind: {"build": s, "queries": s}}`` from the measured per-item costs (None: not measured).

    build: the index items through the retrieval encoder (+ the model's window features);
    queries: each evaluate call embeds its queries once (``embed``), and the model answers every
    query at every shot count (``query.flamingo``); the baselines' own work is negligible next to it.
    """
    out: dict[str, dict[str, float | None]] = {}
    calls = bool(plan.shots) + bool(plan.baselines)
    for kind, table in (costs or {}).items():
        build: list[float | None] = []
        if plan.status == "build":
            build.append(_cost(table, "embed", encoder, plan.index_items))
        if plan.status in ("build", "features") and features:
            build.append(_cost(table, "features", features, plan.index_items))
        queries = [_cost(table, "embed", encoder, plan.queries * calls)]
        if plan.shots:
            queries.append(_cost(table, "query", FLAMINGO, plan.queries * len(plan.shots)))
        out[kind] = {"build": _total(build), "queries": _total(queries)}
    return out


def _total(parts: list[float | None]) -> float | None:
    return None if any(p is None for p in parts) else float(sum(p for p in parts if p is not None))


def _cost(table: dict, what: str, name: str, count: int) -> float | None:
    if count == 0:
        return 0.0
    seconds = ((table or {}).get(what) or {}).get(name)
    return None if seconds is None else float(seconds) * count


def plan_run(
    suite: SuiteConfig, run: SuiteRunConfig, base: list[str], suite_dir: Path
) -> tuple[RunPlan, EvaluateConfig | None]:
    """The plan of one run and its composed evaluate config (None when it cannot be composed)."""
    dataset = run.dataset
    if not dataset:
        raise ConfigError(f"suite {suite.name}: a run has no dataset: {run}")
    shots = sorted(set(run.shots))
    paper, paper_other, reproduced = run_figures(run, f"suite {suite.name} run {dataset}")
    try:
        cfg = compose_config("evaluate", run_overrides(suite, run, base, suite_dir))
        task = get_task(task_name(cfg))
        name = run.name or f"{dataset}-{task.name}"
        out_dir = suite_dir / name
        cfg.output_dir = str(out_dir)  # the run's folder: one per dataset and task
    except RagFlamingoError as exc:
        plan = RunPlan(
            run.name or dataset,
            dataset,
            run.task or "?",
            run.setting,
            "",
            shots,
            [],
            [],
            paper,
        )
        plan.paper_other, plan.reproduced = paper_other, reproduced
        plan.status, plan.reason = "error", one_line(exc)
        return plan, None
    family = str(task.family)
    baselines = [str(b) for b in suite.baselines.get(family, [])]
    if run.baselines is not None:  # the run's own list (None: the family's)
        baselines = list(run.baselines)
    counted = [k for k in shots if k >= 1]
    metric, columns = COLUMNS[family][0], COLUMNS[family][1]
    if run.metric and run.metric not in columns:
        raise ConfigError(
            f"suite {suite.name} run {name}: metric={run.metric} is not a {family} metric"
            f"{did_you_mean(run.metric, columns)}; one of {', '.join(c for c in columns if c != 'unmatched')}"
        )
    unknown = [b for b in ([FLAMINGO] if shots else []) + baselines if b not in predictor_names()]
    plan = RunPlan(
        name=name,
        dataset=dataset,
        task=task.name,
        setting=run.setting,
        metric=run.metric or metric,
        shots=shots,
        baselines=baselines,
        baseline_shots=counted or sorted(set(suite.baseline_shots)),
        paper=paper,
        paper_other=paper_other,
        reproduced=reproduced,
        output_dir=str(out_dir),
    )
    features = suite.features if shots else None
    if unknown:
        plan.status = "error"
        plan.reason = "; ".join(
            f"unknown predictor {b!r}{did_you_mean(b, predictor_names())}; registered: {', '.join(predictor_names())}"
            for b in unknown
        )
        return plan, None
    try:
        plan.queries = _count_rows(cfg, "query", task)
        plan.store = str(store_path(cfg))
        state = _store_state(Path(plan.store), features)
        if state != "ready":
            plan.index_items = _count_rows(cfg, "index", task)
        plan.status = state
    except RagFlamingoError as exc:
        plan.status, plan.reason = "skip", one_line(exc)
    plan.combos = len(shots) * bool(shots) + len(baselines) * len(plan.baseline_shots)
    plan.encoder = str(cfg.encoder.get("name"))
    plan.seconds = _estimate(plan, suite.costs, plan.encoder, features)
    return plan, cfg


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _times(parts: dict | None) -> str:
    parts = parts or {}
    return f"build {_duration(parts.get('build'))}, queries {_duration(parts.get('queries'))}"


def plan_text(suite: SuiteConfig, plans: list[RunPlan]) -> str:
    kinds = list(suite.costs)
    head = [
        "run",
        "setting",
        "status",
        "queries",
        "index items",
        "flamingo shots",
        "baselines",
        *[f"time {k}" for k in kinds],
        "paper",
        "reproduced",
    ]
    lines = [f"suite {suite.name}: {len(plans)} runs", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for p in plans:
        status = p.status + (f": {p.reason}" if p.reason else "")
        baselines = ", ".join(p.baselines) + (f" @ {p.baseline_shots}" if p.baselines else "") or "-"
        cells = [
            p.name,
            p.setting,
            status,
            str(p.queries),
            str(p.index_items) if p.status in ("build", "features") else "-",
            str(p.shots) if p.shots else "-",
            baselines,
            *[_times(p.seconds.get(k)) if p.status in TODO else "-" for k in kinds],
            "; ".join(figure_text(f) for f in [p.paper, *p.paper_other]),
            "; ".join(figure_text(f) for f in p.reproduced) or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    todo = [p for p in plans if p.status in TODO]
    builds = [p.name for p in todo if p.status == "build"]
    lines.append(
        f"to run: {len(todo)}; stores to build: {len(builds)}"
        + (f" ({', '.join(builds)})" if builds else "")
        + f"; skipped: {sum(p.status in ('skip', 'error') for p in plans)}"
    )
    for kind in kinds:
        parts = {part: _total([(p.seconds.get(kind) or {}).get(part) for p in todo]) for part in ("build", "queries")}
        source = (suite.costs.get(kind) or {}).get("source") or "the suite's costs table"
        lines.append(f"rough time on {kind}: {_times(parts)} (per-item costs: {source})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- run


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def build_overrides(suite: SuiteConfig, plan: RunPlan, base: list[str]) -> list[str]:
    """The ``build_index`` command line of the run's store (mode=features when only they are missing)."""
    keep = ("encoder", "dataset", "data_root", "cache_root", "device", "progress")
    overrides = [o for o in base if _key(o).split(".")[0] in keep]
    overrides += suite.build_overrides
    overrides += [f"dataset={plan.dataset}", f"store={plan.store}", "split=index"]
    if FLAMINGO in plan.predictors() and suite.features:
        overrides.append(f"features={suite.features}")
    if _store_state(Path(plan.store), None) == "ready":  # complete: only the features are missing
        overrides.append("mode=features")
    return overrides


def build_store(suite: SuiteConfig, plan: RunPlan, base: list[str]) -> None:
    """``build_index`` for the run's index split."""
    from rag_flamingo.indexing.pipeline import resolve, run

    overrides = build_overrides(suite, plan, base)
    summary = run(resolve(compose_config("build_index", overrides, {"output": "store"})))
    if summary is not None and _is_main():
        print(summary.text(), flush=True)


class ModelCache:
    """The AF1 model parts per distinct ``model`` config (and device), loaded on first use and shared by
    every run of the suite (`components.load_model_parts`; None: each evaluation loads its own)."""

    def __init__(self) -> None:
        self.parts: dict[str, tuple | None] = {}
        self.loads = 0

    def get(self, cfg: EvaluateConfig) -> tuple | None:
        from .components import load_model_parts

        key = json.dumps([cfg.model, cfg.device], sort_keys=True, default=str)
        if key not in self.parts:
            self.parts[key] = load_model_parts(cfg)
            self.loads += self.parts[key] is not None
        return self.parts[key]


def run_one(
    suite: SuiteConfig,
    cfg: EvaluateConfig,
    plan: RunPlan,
    base: list[str],
    evaluate: Evaluate,
    models: ModelCache | None = None,
) -> None:
    from . import distributed

    distributed.barrier(distributed.setup())  # every rank sees what the runs before (rank 0's part) wrote
    features = suite.features if plan.shots else None
    if _store_state(Path(plan.store), features) != "ready":  # checked again: an earlier run may have built it
        build_store(suite, plan, base)
    summary = None
    if plan.shots:
        parts = (models or ModelCache()).get(cfg)
        summary = evaluate(replace(cfg, predictor=[FLAMINGO], shots=list(plan.shots)), model_parts=parts)
    if plan.baselines:
        summary = evaluate(replace(cfg, predictor=list(plan.baselines), shots=list(plan.baseline_shots)))
    if summary is not None:  # rank 0: the folder's scores over every (predictor, shots) in it
        plan.results = summary["results"]


def check_suite(suite: SuiteConfig) -> None:
    """What the suite's schema cannot say: baselines keyed by task family, shot counts >= 0."""
    from .tasks import TaskFamily

    families = [f.value for f in TaskFamily]
    for family in suite.baselines:
        if family not in families:
            raise ConfigError(
                f"suite {suite.name}: baselines.{family} is not a task family"
                f"{did_you_mean(family, families)}; use {', '.join(families)}"
            )
    counts = [("baseline_shots", suite.baseline_shots)]
    counts += [(f"runs[{i}].shots", run.shots) for i, run in enumerate(suite.runs)]
    for where, shots in counts:
        if any(k < 0 for k in shots):
            raise ConfigError(f"suite {suite.name}: {where}={shots}: shot counts must be >= 0")


def run_suite(cfg: EvaluateConfig, overrides: list[str], evaluate: Evaluate) -> dict | None:
    """Plan (and unless ``suite.dry_run``) run the suite, each evaluation with ``evaluate`` (the
    caller's `rag_flamingo.evaluate.evaluate`: the suite sits below the command that runs it); rank 0
    returns what results.json holds."""
    suite = cfg.suite
    if not suite.runs:
        raise ConfigError(f"suite {suite.name} has no runs")
    check_suite(suite)
    base = base_overrides(suite, overrides)
    suite_dir = _suite_dir(suite)
    if not suite.dry_run:
        check_writable_folder(suite_dir, "suite.output_dir=")
    planned = [plan_run(suite, run, base, suite_dir) for run in suite.runs]
    plans = [p for p, _ in planned]
    building: dict[str, str] = {}
    for plan in plans:  # two runs on one store (two tasks of a dataset): the first builds it
        if plan.status in ("build", "features") and plan.store in building:
            plan.status, plan.reason, plan.index_items = "ready", f"store built by {building[plan.store]}", 0
            plan.seconds = _estimate(plan, suite.costs, plan.encoder, None)
        elif plan.status in ("build", "features"):
            building[plan.store] = plan.name
            try:  # the store's build_index command line is checked now, not after the runs before it
                compose_config("build_index", build_overrides(suite, plan, base), {"output": "store"})
            except RagFlamingoError as exc:
                plan.status, plan.reason = "error", f"build_index: {one_line(exc)}"
    if _is_main():
        print(plan_text(suite, plans), flush=True)
    if suite.dry_run:
        _refuse_failures(suite, plans)
        return None
    models = ModelCache()  # each model is loaded once, on the first run that needs it
    for plan, run_cfg in planned:
        if run_cfg is None or plan.status not in TODO:
            continue
        if _is_main():
            print(f"\nsuite {suite.name}: {plan.name} ({plan.status})", flush=True)
        try:
            run_one(suite, run_cfg, plan, base, evaluate, models)
            plan.status, plan.reason = "done", ""
        except RagFlamingoError as exc:  # one run's problem never stops the suite
            plan.status, plan.reason = "failed", one_line(exc)
            logger.error("suite %s: %s failed: %s", suite.name, plan.name, plan.reason)
    if not _is_main():
        return None
    record = write_results(suite, plans, suite_dir)
    _refuse_failures(suite, plans)
    return record


def _refuse_failures(suite: SuiteConfig, plans: list[RunPlan]) -> None:
    """A run that cannot be planned (error) or failed makes the command fail, naming each (after the
    plan or the results are written); skipped runs (data not there) are listed in the plan only."""
    bad = [p for p in plans if p.status in ("error", "failed")]
    if bad:
        runs = "; ".join(f"{p.name} {p.status}: {p.reason}" for p in bad)
        raise RagFlamingoError(f"suite {suite.name}: {len(bad)} of {len(plans)} runs did not run: {runs}")


# ----------------------------------------------------------------------------- results


def _ours(plan: RunPlan) -> list[dict]:
    return [
        {
            "predictor": r["predictor"],
            "shots": r["shots"],
            "value": r.get(plan.metric),
            "ci": (r.get("ci") or {}).get(plan.metric),
            "n": r.get("n"),
        }
        for r in plan.results
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _label(entry: dict) -> str:
    return entry["predictor"] + ("" if entry["shots"] is None else f" {entry['shots']}-shot")


def results_markdown(suite: SuiteConfig, plans: list[RunPlan]) -> str:
    lines = [
        f"# suite {suite.name}",
        "",
        "Ours: each predictor and shot count (flamingo k-shot = k retrieved examples + the query). Paper: the "
        "figure the publication reports, with its source; n/a where none was found. Every number of ours comes "
        "from the run folder named in results.json (its run.json says what produced it).",
        "",
        "| dataset | task | setting | metric | ours | paper | paper on our scale | source | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in plans:
        ours = "; ".join(f"{_label(e)}: {_fmt(e['value'])}" for e in _ours(p)) or "-"
        status = p.status + (f" ({p.reason})" if p.reason else "")
        lines.append(
            f"| {p.dataset} | {p.task} | {p.setting} | {p.metric} | {ours} | {value_text(p.paper)} | "
            f"{_fmt(as_fraction(p.paper))} | {p.paper.get('source') or 'n/a'} | {status} |"
        )
    lines += [
        "",
        "## Ours against the published figures",
        "",
        "Ours: Audio Flamingo at the figure's shot count (retrieved shots; the query is not counted), with its "
        "95% bootstrap interval (queries resampled, every metric recomputed per resample; metrics.json of the run "
        "folder says how many resamples, the seed and what it cost). Published: the figure as printed, then on "
        "our scale. Paper: the publication; reproduced: others with the released weights.",
        "",
        *COMPARISON_HEAD,
    ]
    for p in plans:
        lines += comparison_rows(p.dataset, p.task, p.metric, _figures(p), p.results)
    return "\n".join(lines) + "\n"


def _versus(plan: RunPlan) -> list[dict]:
    """Each published figure of the run with ours beside it (`figures.compare`)."""
    return [{"kind": kind, **fig, **compare(fig, plan.results, plan.metric)} for kind, fig in _figures(plan)]


def _figures(plan: RunPlan) -> list[tuple[str, dict]]:
    return [("paper", f) for f in [plan.paper, *plan.paper_other]] + [("reproduced", f) for f in plan.reproduced]


def write_results(suite: SuiteConfig, plans: list[RunPlan], suite_dir: Path) -> dict:
    suite_dir.mkdir(parents=True, exist_ok=True)
    rows = [p for p in plans if p.results]
    plot = plot_ours_vs_paper(
        [f"{p.dataset}\n{p.metric}" for p in rows],
        [{_label(e): e["value"] for e in _ours(p)} for p in rows],
        [as_fraction(p.paper) if p.paper.get("comparable") else None for p in rows],
        suite_dir / "ours_vs_paper.png",
    )
    record = {
        "suite": suite.name,
        "runs": [dict(asdict(p), ours=_ours(p), versus_paper=_versus(p)) for p in plans],
        "plot": str(plot) if plot else None,
    }
    (suite_dir / "results.json").write_text(json.dumps(record, indent=2, default=str))
    text = results_markdown(suite, plans) + (f"\n![ours vs paper]({plot.name})\n" if plot else "")
    (suite_dir / "results.md").write_text(text)
    print(f"\n{text}\nsuite outputs: {suite_dir}", flush=True)
    return record
