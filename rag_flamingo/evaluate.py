"""``evaluate``: few-shot evaluation of the predictors on a dataset's query split.

Usage (Hydra overrides; the config is ``rag_flamingo/conf/evaluate.yaml`` + ``dataset/``, ``task/``,
``encoder/``, ``retrieval/``, ``model/``; every setting: ``rag_flamingo/config.py``)::

    evaluate dataset=demo task=classification predictor=knn shots=4
    evaluate dataset=demo predictor=knn,prototype shots=1,4,8          # one run, the whole grid
    evaluate dataset=esc50 predictor=flamingo shots=0,1,4,7        # model=foundation: hub weights
    evaluate dataset=esc50 predictor=flamingo model.checkpoint.path=/ckpt/foundation.pt shots=4
    evaluate store=/path/to/my_index dataset=folder dataset.root=clips/ predictor=prototype
    torchrun --nproc_per_node=4 -m rag_flamingo.evaluate dataset=esc50 predictor=flamingo ...
    evaluate --cfg dataset=esc50                                      # print the composed config

Comma lists of ``predictor`` and ``shots`` are evaluated in one run (queries are decoded and
embedded once; every predictor sees the same retrieved shots); comma lists of any other key run
one evaluation per combination (``-m``/``--multirun`` is accepted and changes nothing).

The store defaults to what ``build_index`` writes for the dataset's index split
(``${cache_root}/indices/<dataset>-<split>-<encoder>``); queries come from ``query_split``.
A query never sees its own recording among its shots (same source and group), nor an exact copy of
its audio file (same content hash) -- those copies are counted and reported as a leak.

Outputs, in ``output_dir`` (default ``outputs/evaluate/<dataset>-<task>-<query split>-<run key>``):

- ``run.json``: the run key and what it covers: store (path, fingerprint), query manifest (path,
  sha256), task, retrieval, predictor options, engine options, model and decoding. A folder is only
  resumed by a run with the same key; another key is refused (``overwrite=true`` starts over).
  Also ``decoding``: the model engine's effective generation config (ours, never a checkpoint's
  generation_config.json; absent until a model ran in the folder), and ``query_audio``: how many query files, how many
  unreadable, and a digest of every query's audio content (what the results were made from;
  ``metrics.json`` and ``results.md`` repeat it);
- ``predictions.jsonl``: per query: predictor, shots, id, ``content`` (the digest of the audio it
  was made from, as the store's ``content``), retrieved shot ids + scores, prompt, output, score,
  target, and ``copies`` when exact copies of the query were excluded;
- ``rejected.jsonl``: queries whose audio could not be used, with the reason and ``content`` (never fatal);
- ``metrics.json``, ``results.md`` (a markdown table), ``metric_vs_shots.png`` (when the folder
  holds more than one shot count): over every (predictor, shots) in the folder, so a sweep run as
  several invocations ends with one table and one plot.

Resumable: predictions are appended per query batch, a rerun skips what is done: records made
from the query audio as it is now (every query file is hashed at the start, ~0.8 s per 2000
ESC-50 clips); a query whose file changed since is predicted again and its old records dropped. Under torchrun
rank r takes queries r, r+N, ... and writes ``parts/*-rank<r>.jsonl``; rank 0 waits, merges and
scores. The query loop itself is `rag_flamingo.runner`.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path

from . import distributed, shift
from .cli import compose_config, expand_overrides, export_roots, handle_flags, run_main
from .components import Evaluation, as_list, prepare
from .config import EvaluateConfig, SuiteConfig
from .errors import ConfigError
from .hashing import file_sha256
from .paths import check_writable_folder
from .predictors import check_adapt
from .preflight import require
from .runner import (
    QueryInput,
    QueryRunner,
    Result,
    ResultFolder,
    hash_queries,
    label_options,
    plan_combos,
    query_audio_summary,
    record_key,
    run_key,
    shot_records,
    target_of,
)
from .store.items import recording_key
from .tasks import TaskFamily

logger = logging.getLogger(__name__)

CONFIG_NAME = "evaluate"
LIST_KEYS = ("predictor", "shots")  # comma lists evaluated inside one run


def load_config(overrides: list[str]) -> EvaluateConfig:
    """The composed, resolved ``evaluate`` config."""
    return compose_config(CONFIG_NAME, overrides)


# ----------------------------------------------------------------------------- the run key


def run_settings(ev: Evaluation) -> dict:
    """Everything that changes a prediction (not which predictors/shots, nor how fast)."""
    cfg = ev.cfg
    model = {k: v for k, v in cfg.model.items() if k != "device"}
    return {
        "store": {"path": str(ev.store.root.resolve()), "fingerprint": ev.store.fingerprint()},
        "queries": {
            "dataset": cfg.dataset.name,
            "split": ev.query_split,
            "manifest": str(ev.manifest.resolve()),
            "manifest_sha256": file_sha256(ev.manifest),
            "audio_root": str(ev.audio_root.resolve()),
        },
        "task": ev.task.name,
        "retrieval": asdict(cfg.retrieval),
        "predictors": asdict(cfg.predictors),
        **({"adapt": cfg.adapt} if cfg.adapt != "none" else {}),  # older run keys stay valid
        "flamingo": asdict(cfg.flamingo),
        "model": model,
    }


def engine_decoding(ev: Evaluation) -> dict | None:
    """The decoding the run's model engine actually uses, for run.json (None: no model in the run).

    The transformers backends: ``engine.decoding`` (`backends.decoding.explicit_generation`: the
    effective ``GenerationConfig``, ours whatever the checkpoint's generation_config.json says, and the
    checkpoint's settings that were ignored). The AF1 engine: its `GenerationSettings` (AF1's own
    decoding loop, `model.generation.generate`, reads no generation_config at all)."""
    for predictor in ev.predictors.values():
        engine = getattr(predictor, "engine", None)
        if engine is None:
            continue
        decoding = getattr(engine, "decoding", None)
        if isinstance(decoding, dict):
            return {"backend": type(engine).__name__, **decoding}
        generation = getattr(engine, "generation", None)
        if is_dataclass(generation) and not isinstance(generation, type):
            return {"backend": type(engine).__name__, "effective": asdict(generation), "checkpoint_ignored": {}}
    return None


def output_dir(ev: Evaluation, key: str) -> Path:
    if ev.cfg.output_dir:
        return Path(ev.cfg.output_dir).expanduser()
    return Path("outputs") / "evaluate" / f"{ev.cfg.dataset.name}-{ev.task.name}-{ev.query_split}-{key[:8]}"


# ----------------------------------------------------------------------------- the run


def query_inputs(ev: Evaluation) -> list[QueryInput]:
    """The manifest rows as runner inputs (audio resolved under the dataset root)."""
    out = []
    for row in ev.rows:
        path = Path(row["path"]).expanduser()
        out.append(
            QueryInput(
                row["id"], path if path.is_absolute() else ev.audio_root / path, row, recording_key(row, ev.audio_root)
            )
        )
    return out


def prediction_record(result: Result, target, content: str | None = None) -> dict:
    pred = result.prediction
    rec = {
        "predictor": result.predictor,
        "shots": result.shots,
        "id": result.query.id,
        "content": content,  # content_key of the query's audio it was made from (a changed file is redone)
        "shot_ids": shot_records(result),
        "prompt": pred.prompt,
        "output": pred.output,
        "score": None if pred.score is None else round(float(pred.score), 6),
        "target": target,
    }
    if pred.label_scores is not None:
        rec["label_scores"] = {k: round(float(v), 6) for k, v in pred.label_scores.items()}
    if pred.dropped:
        rec["dropped_shots"] = pred.dropped
    if pred.samples:
        rec["samples"] = [{"text": t, "clap_score": round(float(s), 6)} for t, s in pred.samples]
    if result.copies:
        rec["copies"] = result.copies  # exact copies of the query's audio in the store, excluded
    return rec


def run_queries(
    ev: Evaluation, out: ResultFolder, ranks: distributed.Ranks, progress: bool = True
) -> dict[str, str | None]:
    """Predict every (predictor, shots) for this rank's queries not done yet, batch by batch.

    Done means recorded from the query's audio as it is now: each record names the `content_key`
    of the audio it was made from, so a query whose file changed is done again. Returns the
    content of this rank's queries (id -> content_key, None when unreadable)."""
    combos = plan_combos(ev.predictors, _shot_counts(ev.cfg))
    inputs = query_inputs(ev)[ranks.rank :: ranks.world]
    contents = hash_queries(inputs)
    done, rejected_ids = out.done(contents)
    pending = [
        q for q in inputs if q.id not in rejected_ids and any(record_key(p, k, q.id) not in done for p, k in combos)
    ]
    if ev.cfg.adapt in shift.TRANSDUCTIVE and pending and len(pending) < len(inputs):
        # every label depends on the whole batch: labelling only the changed queries would give them
        # (and keep for the others) answers of another batch than a fresh run's
        logger.warning(
            "adapt=%s labels all queries together: %d of %d are new or changed, so all are labelled again",
            ev.cfg.adapt,
            len(pending),
            len(inputs),
        )
        out.clear(keep_run=True)
        done, pending = set(), list(inputs)
    logger.info("rank %d: %d of %d queries to do (%d combos)", ranks.rank, len(pending), len(inputs), len(combos))
    labels = label_options(ev.task, ev.store)
    _warn_unknown_labels(ev, labels)
    batch_size = shift.query_batch(ev.cfg.adapt, ev.cfg.batch_size, len(pending), ranks.world)
    runner = QueryRunner(
        ev.encoder,
        ev.retriever,
        ev.predictors,
        ev.task,
        labels,
        batch_size=batch_size,
        require_target=True,
    )
    for batch in runner.batches(pending, combos, lambda p, k, i: record_key(p, k, i) in done, progress, "evaluate"):
        out.append(
            [prediction_record(r, target_of(ev.task, r.query.item), contents[r.query.id]) for r in batch.results],
            [{**r.record(), "content": contents[r.id]} for r in batch.rejected],
        )
    return contents


def _shot_counts(cfg: EvaluateConfig) -> list[int]:
    return [int(s) for s in as_list(cfg.shots)]  # whole numbers >= 0: checked at composition


def _warn_unknown_labels(ev: Evaluation, labels: list[str] | None) -> None:
    if labels and ev.task.family == TaskFamily.CLASSIFICATION:
        unknown = sorted({target_of(ev.task, r) for r in ev.rows if r.get("label")} - set(labels))
        if unknown:
            logger.warning(
                "%d query label(s) are not in the store's label set (never predictable): %s",
                len(unknown),
                ", ".join(unknown[:10]),
            )


def evaluate(
    cfg: EvaluateConfig, encoder=None, engine=None, progress: bool | None = None, model_parts: tuple | None = None
) -> dict | None:
    """Run one evaluation; rank 0 returns the summary (None on other ranks). ``model_parts``: the AF1
    model already loaded (`components.load_model_parts`; the suite loads it once for all its runs)."""
    ranks = distributed.setup()
    try:
        return _evaluate(cfg, ranks, encoder, engine, progress, model_parts)
    finally:
        distributed.teardown(ranks)


def _evaluate(
    cfg: EvaluateConfig,
    ranks: distributed.Ranks,
    encoder,
    engine,
    progress: bool | None,
    model_parts: tuple | None = None,
) -> dict | None:
    from .report import chance_level, score_predictions, write_report

    ev = prepare(cfg, encoder=encoder, engine=engine, model_parts=model_parts)
    settings = run_settings(ev)
    key = run_key(settings)
    out = ResultFolder(output_dir(ev, key), ranks.rank)
    if ranks.is_main:
        out.claim(settings, cfg.overwrite)
        (out.root / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    distributed.barrier(ranks)
    show = cfg.progress if progress is None else progress
    contents = run_queries(ev, out, ranks, progress=bool(show))
    distributed.barrier(ranks)
    if not ranks.is_main:
        return None
    contents.update(hash_queries(q for q in query_inputs(ev) if q.id not in contents))  # the other ranks' share
    preds, rejected = out.merge({r["id"]: i for i, r in enumerate(ev.rows)}, contents)
    query_audio = query_audio_summary(contents)
    decoding = engine_decoding(ev)  # a model-free evaluation into the same folder keeps the model's record
    out.describe(query_audio=query_audio, **({"decoding": decoding} if decoding is not None else {}))
    labels = ev.store.label_set()
    copies = {r["id"] for r in preds if r.get("copies")}
    summary = {
        "dataset": cfg.dataset.name,
        "task": ev.task.name,
        "query_split": ev.query_split,
        "store": str(ev.store.root),
        "encoder": ev.store.info.encoder.get("name"),
        "queries": len(ev.rows),
        "rejected": len(rejected),
        "queries_with_copies_in_store": len(copies),
        "output_dir": str(out.root),
        "run_key": key,
        "run": settings,
        "query_audio": query_audio,
        "results": score_predictions(preds, ev.task, labels),
        "chance": chance_level(preds, ev.task, labels),
    }
    write_report(out.root, summary)
    return summary


# ----------------------------------------------------------------------------- CLI


def _run(argv: list[str]) -> None:
    from .report import summary_text

    if handle_flags(CONFIG_NAME, argv, list_keys=LIST_KEYS):
        return
    runs = expand_overrides(argv, LIST_KEYS)
    if len(runs) > 1 and any(o.partition("=")[0].lstrip("+") == "output_dir" for o in runs[0]):
        raise ConfigError(
            f"a comma list runs {len(runs)} evaluations, and one output_dir= would hold them all (the second "
            "is refused after the first has run); leave output_dir out (one folder per run) or run them one by one"
        )
    for overrides in runs:
        cfg = load_config(overrides)
        export_roots(cfg)
        if cfg.suite.name:  # evaluate suite=af1: hand over to the suite runner
            from .suite import run_suite

            run_suite(cfg, overrides, evaluate)
            continue
        _refuse_suite_settings(cfg.suite)
        where = Path(cfg.output_dir) if cfg.output_dir else Path("outputs") / "evaluate"  # the default's parent
        check_writable_folder(where, "output_dir=")
        check_adapt(cfg.adapt, as_list(cfg.predictor))  # before the model weights are looked for
        require(CONFIG_NAME, cfg)
        summary = evaluate(cfg)
        if summary is not None:
            print(summary_text(summary), flush=True)


def _refuse_suite_settings(suite: SuiteConfig) -> None:
    """``suite.dry_run=true`` without ``suite=<name>`` would run the one evaluation for real: refused."""
    given, defaults = asdict(suite), asdict(SuiteConfig())
    changed = sorted(k for k, v in given.items() if k != "name" and v != defaults[k])
    if changed:
        keys = ", ".join(f"suite.{k}" for k in changed)
        example = f"suite.{changed[0]}={str(given[changed[0]]).lower()}"
        raise ConfigError(f"{keys} needs a suite: pick one with suite=<name> (e.g. suite=demo {example})")


def main(argv: list[str] | None = None) -> int:
    return run_main("evaluate", __doc__, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
