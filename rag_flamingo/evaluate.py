"""``evaluate``: few-shot evaluation of the predictors on a dataset's query split.

Usage (Hydra overrides; the config is ``rag_flamingo/conf/evaluate.yaml`` + ``dataset/``, ``task/``,
``encoder/``, ``retrieval/``)::

    evaluate dataset=demo task=classification predictor=knn shots=4
    evaluate dataset=demo predictor=knn,prototype shots=1,4,8          # one run, the whole grid
    evaluate dataset=esc50 predictor=flamingo -m shots=0,1,4,7        # model=foundation: hub weights
    evaluate dataset=esc50 predictor=flamingo model.checkpoint.path=/ckpt/foundation.pt shots=4
    evaluate store=/path/to/my_index dataset=folder dataset.root=clips/ predictor=prototype
    torchrun --nproc_per_node=4 -m rag_flamingo.evaluate dataset=esc50 predictor=flamingo ...

Comma lists of ``predictor`` and ``shots`` are evaluated in one run (queries are decoded and
embedded once; every predictor sees the same retrieved shots); comma lists of any other key run
one evaluation per combination (``-m``/``--multirun`` is accepted and changes nothing).

The store defaults to what ``build_index`` writes for the dataset's index split
(``${cache_root}/indices/<dataset>-<split>-<encoder>``); queries come from ``query_split``.
Outputs, in ``output_dir`` (default ``outputs/evaluate/<dataset>-<task>-<query split>-<hash>``,
the hash covering every setting that changes answers except ``predictor`` and ``shots``):

- ``predictions.jsonl``: per query: predictor, shots, id, retrieved shot ids + scores, prompt,
  output, score, target;
- ``rejected.jsonl``: queries whose audio could not be used, with the reason (never fatal);
- ``metrics.json``, ``results.md`` (a markdown table), ``metric_vs_shots.png`` (when the folder
  holds more than one shot count): over every (predictor, shots) in the folder, so a sweep run as
  several invocations ends with one table and one plot.

Resumable: predictions are appended per query batch, a rerun skips what is done. Under torchrun
rank r takes queries r, r+N, ... and writes ``parts/*-rank<r>.jsonl``; rank 0 waits, merges and
scores.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from . import paths
from .cli import compose_config, export_roots, run_main
from .errors import AudioError, ConfigError, ManifestError
from .predictors import (PREDICTORS, FlamingoPredictor, KnnPredictor, Prediction, PrototypePredictor, Query,
                         ZeroShotPredictor, typical_tag_count)
from .prompts import answer_text, default_options, get_task
from .store import IndexStore, item_labels

logger = logging.getLogger(__name__)

CONFIG_NAME = "evaluate"
LIST_KEYS = ("predictor", "shots")  # swept inside one run
# keys that never change an answer: left out of the output folder's hash
NOT_HASHED = ("predictor", "shots", "output_dir", "batch_size", "device", "progress", "num_workers",
              "cache_root", "data_root", "limit")


# ----------------------------------------------------------------------------- config


def load_config(overrides: list[str]) -> dict:
    """The composed, resolved ``evaluate`` config as a plain dict."""
    return compose_config(CONFIG_NAME, overrides)


def expand_overrides(argv: Sequence[str]) -> list[list[str]]:
    """Command-line overrides -> one override list per run.

    ``predictor=a,b`` / ``shots=1,4`` become lists evaluated inside one run; any other comma
    sweep gives one run per value (cartesian product).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([a for a in argv if a not in ("-m", "--multirun")])
    fixed, sweeps = [], []
    for ov in parsed:
        key = ov.get_key_element()
        if not ov.is_sweep_override():
            fixed.append(ov.input_line)
        elif key in LIST_KEYS:
            fixed.append(f"{key}=[{','.join(ov.sweep_string_iterator())}]")
        else:
            sweeps.append([f"{key}={v}" for v in ov.sweep_string_iterator()])
    return [fixed + list(combo) for combo in itertools.product(*sweeps)] if sweeps else [fixed]


def as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def config_hash(cfg: dict) -> str:
    kept = {k: v for k, v in cfg.items() if k not in NOT_HASHED}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:8]


def task_name(cfg: dict) -> str:
    """``task.name``, or the dataset's first task (``task=auto``)."""
    name = (cfg.get("task") or {}).get("name")
    if name:
        return str(name)
    tasks = (cfg.get("dataset") or {}).get("tasks") or []
    if not tasks:
        raise ConfigError("no task: pass task=<name> (e.g. task=classification)")
    return str(tasks[0])


def store_path(cfg: dict) -> Path:
    """``store`` (a path, or a name under ``${cache_root}/indices``), else build_index's default."""
    from .datasets.sources import split_name

    cache = Path(cfg.get("cache_root") or paths.cache_root()).expanduser()
    given = cfg.get("store")
    if given:
        path = Path(str(given)).expanduser()
        if not path.exists() and not path.is_absolute() and (cache / "indices" / path).exists():
            return cache / "indices" / path
        return path
    split = split_name(cfg["dataset"], cfg.get("index_split") or "index")
    return cache / "indices" / f"{cfg['dataset']['name']}-{split}-{cfg['encoder']['name']}"


def output_dir(cfg: dict, query_split: str) -> Path:
    if cfg.get("output_dir"):
        return Path(cfg["output_dir"]).expanduser()
    name = f"{cfg['dataset']['name']}-{task_name(cfg)}-{query_split}-{config_hash(cfg)}"
    return Path("outputs") / "evaluate" / name


# ----------------------------------------------------------------------------- ranks


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> "Ranks":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():  # gloo: only barriers travel through it (CPU and GPU hosts)
            dist.init_process_group("gloo", timeout=timedelta(hours=24))
        return cls(int(os.environ["RANK"]), world)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def teardown(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


# ----------------------------------------------------------------------------- outputs


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by an interruption: redone on resume
                logger.warning("%s: skipping a truncated line", path)
    return out


def _append_jsonl(path: Path, records: list[dict]) -> None:
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as f:
        if cut:  # a line cut by an interruption: end it so the new records start on their own lines
            f.write("\n")
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def _write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(tmp, path)


def record_key(predictor: str, shots: int | None, query_id: str) -> str:
    return f"{predictor}|{shots}|{query_id}"


@dataclass
class Outputs:
    """The files of one evaluation folder (merged files + per-rank parts)."""

    root: Path
    rank: int = 0

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.jsonl"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected.jsonl"

    def part(self, kind: str) -> Path:
        return self.root / "parts" / f"{kind}-rank{self.rank}.jsonl"

    def all_parts(self, kind: str) -> list[Path]:
        return sorted((self.root / "parts").glob(f"{kind}-rank*.jsonl"))

    def done(self) -> tuple[set[str], set[str]]:
        """(keys of finished predictions, ids of rejected queries), merged files and parts."""
        preds = [r for p in [self.predictions, *self.all_parts("predictions")] for r in _read_jsonl(p)]
        rej = [r for p in [self.rejected, *self.all_parts("rejected")] for r in _read_jsonl(p)]
        return {record_key(r["predictor"], r["shots"], r["id"]) for r in preds}, {r["id"] for r in rej}

    def merge(self, order: dict[str, int]) -> tuple[list[dict], list[dict]]:
        """Fold every part into predictions.jsonl / rejected.jsonl (deduplicated, sorted)."""
        merged = {}
        for path in [self.predictions, *self.all_parts("predictions")]:
            for r in _read_jsonl(path):
                merged.setdefault(record_key(r["predictor"], r["shots"], r["id"]), r)
        preds = sorted(merged.values(), key=lambda r: (r["predictor"], -1 if r["shots"] is None else r["shots"],
                                                       order.get(r["id"], len(order)), r["id"]))
        rejected = {}
        for path in [self.rejected, *self.all_parts("rejected")]:
            for r in _read_jsonl(path):
                rejected.setdefault(r["id"], r)
        rej = sorted(rejected.values(), key=lambda r: order.get(r["id"], len(order)))
        self.root.mkdir(parents=True, exist_ok=True)
        _write_jsonl(self.predictions, preds)
        _write_jsonl(self.rejected, rej)
        for path in self.all_parts("predictions") + self.all_parts("rejected"):
            path.unlink()  # their records are in the merged files now
        return preds, rej


# ----------------------------------------------------------------------------- the run


@dataclass
class Evaluation:
    """Everything one run needs, built from the config (or handed in, e.g. by tests)."""

    cfg: dict
    store: IndexStore
    encoder: Any  # the store's retrieval encoder
    task: Any  # TaskSpec
    rows: list[dict]  # query rows (all ranks)
    audio_root: Path
    predictors: dict[str, Any] = field(default_factory=dict)
    retriever: Any = None


def query_rows(cfg: dict, task) -> tuple[list[dict], Path, str]:
    from .datasets.manifest import read_manifest
    from .datasets.sources import collapse_groups, resolve_split, split_name

    split = split_name(cfg["dataset"], cfg.get("query_split") or "query")
    manifest, root = resolve_split(cfg["dataset"], split)
    rows = read_manifest(manifest)
    if task.family == "captioning":
        rows = collapse_groups(rows)  # each recording once, scored against all its captions
    limit = cfg.get("limit")
    return (rows[: int(limit)] if limit else rows), Path(root), split


def target_of(task, item: dict):
    """The reference answer(s) the metrics compare with."""
    if task.family == "captioning":
        return [str(c) for c in item.get("captions") or []]
    if task.family == "tagging":
        return item_labels(item)
    return answer_text(task, item)


def options_of(task, item: dict, labels: list[str] | None) -> list[str] | None:
    return default_options(task, item, labels)


def build_encoder_from_cfg(cfg: dict, store: IndexStore):
    """The retrieval encoder of ``cfg['encoder']`` (default: the one named in the store's store.json),
    checked against the store."""
    from .encoders import build_encoder

    options = dict(cfg.get("encoder") or {})
    name = options.pop("name", None) or store.info.encoder.get("name")
    if not name:
        raise ConfigError("encoder.name is not set (use the encoder the store was built with, e.g. encoder=aisfx)")
    if cfg.get("device") not in (None, "auto") and not options.get("device"):
        options["device"] = cfg["device"]
    encoder = build_encoder(name, **options)
    store.check_encoder(encoder.fingerprint())
    return encoder


def encoder_from_options(options: dict):
    """``{name: <registered encoder>, ...options}``, or ``{_target_: module.Class, ...}`` for your own
    (``_target_`` wins over ``name``: ``model.audio_encoder={_target_:my_pkg.MyEncoder}``)."""
    from .encoders import build_encoder

    options = dict(options)
    if options.get("_target_"):
        from hydra.utils import instantiate

        options.pop("name", None)
        return instantiate(options)
    name = options.pop("name", None)
    if not name:
        raise ConfigError(f"encoder options {options} name no encoder: give name=<registered encoder> or _target_")
    return build_encoder(name, **options)


def build_engine_from_cfg(cfg: dict, store: IndexStore, encoder, retriever):
    """`RagFlamingo` from the ``model`` group (checkpoint, tokenizer, audio encoder, decoding; see
    `rag_flamingo.model.load_model`) and the ``flamingo`` section (how the engine uses it)."""
    from .engine import ClapReranker, GenerationConfig, RagFlamingo
    from .model import load_model
    from .model.factory import generation_settings

    mc = dict(cfg.get("model") or {})
    if not mc:
        raise ConfigError("predictor=flamingo needs a model config (model=foundation, model=chat, or "
                          "model.checkpoint.path=/path/to/foundation.pt)")
    if cfg.get("device") not in (None, "auto") and mc.get("device") in (None, "auto"):
        mc["device"] = cfg["device"]
    model, tokenizer = load_model(mc)
    if not mc.get("audio_encoder"):
        raise ConfigError("predictor=flamingo needs model.audio_encoder (e.g. {name: clapcap})")
    window_encoder = encoder_from_options(mc["audio_encoder"])
    fc = cfg.get("flamingo") or {}
    clap = fc.get("clap_filter") or {}
    reranker = None
    if int(clap.get("samples") or 1) > 1:
        ropts = clap.get("encoder") or {}
        reranker = ClapReranker(encoder_from_options(ropts) if ropts else encoder)
    gen = generation_settings(mc)
    if reranker is not None:
        gen.update(do_sample=True, num_samples=int(clap["samples"]))
    return RagFlamingo(store, model, tokenizer, window_encoder, encoder, retriever=retriever,
                       generation=GenerationConfig(**gen), feature_name=fc.get("features") or "clapcap",
                       audio_slots=fc.get("audio_slots") or mc.get("num_slots"), template=fc.get("template") or "eval",
                       reranker=reranker)


def build_predictors(cfg: dict, names: list[str], store: IndexStore, encoder, retriever, task,
                     engine=None) -> dict[str, Any]:
    opts = cfg.get("predictors") or {}
    labels = store.label_set()
    n_tags = typical_tag_count(store.items)
    out: dict[str, Any] = {}
    for name in names:
        o = dict(opts.get(name) or {})
        if name == "knn":
            out[name] = KnnPredictor(temperature=float(o.get("temperature", 0.1)), n_tags=n_tags)
        elif name == "prototype":
            out[name] = PrototypePredictor(store, n_tags=n_tags)
        elif name == "zero_shot":
            out[name] = ZeroShotPredictor(encoder, labels, template=o.get("template") or "this is a sound of {label}",
                                          n_tags=n_tags)
        elif name == "flamingo":
            out[name] = FlamingoPredictor(engine or build_engine_from_cfg(cfg, store, encoder, retriever))
        else:
            raise ConfigError(f"unknown predictor {name!r}; use one or more of {', '.join(PREDICTORS)}")
    return out


def prepare(cfg: dict, encoder=None, engine=None) -> Evaluation:
    """Open the store, build the encoder/retriever/predictors, read the query rows."""
    from .retrieval import Retriever

    task = get_task(task_name(cfg))
    path = store_path(cfg)
    store = IndexStore.open(path)
    if encoder is None:
        encoder = build_encoder_from_cfg(cfg, store)
    else:
        store.check_encoder(encoder.fingerprint())
    retriever = Retriever.from_config(store, encoder, cfg.get("retrieval"))
    names = [str(p) for p in as_list(cfg.get("predictor"))]
    if not names:
        raise ConfigError(f"predictor is empty; use one or more of {', '.join(PREDICTORS)}")
    predictors = build_predictors(cfg, names, store, encoder, retriever, task, engine)
    rows, audio_root, _ = query_rows(cfg, task)
    return Evaluation(cfg, store, encoder, task, rows, audio_root, predictors, retriever)


def combos(ev: Evaluation) -> list[tuple[str, int | None]]:
    """(predictor, shots) pairs: shot-free predictors once (shots None); knn needs shots >= 1."""
    shots = sorted({int(s) for s in as_list(ev.cfg.get("shots"))})
    if not shots:
        raise ConfigError("shots is empty; e.g. shots=4 or shots=0,1,4,7")
    if any(s < 0 for s in shots):
        raise ConfigError(f"shots must be >= 0, got {shots}")
    out = []
    for name, pred in ev.predictors.items():
        if not pred.uses_shots:
            out.append((name, None))
            continue
        for k in shots:
            if name == "knn" and k == 0:
                logger.warning("knn with 0 shots has no neighbours to vote; skipped")
                continue
            if name == "flamingo" and k > pred.engine.max_shots:
                raise ConfigError(f"shots={k} does not fit the model's {pred.engine.audio_slots} audio slots "
                                  f"(at most {pred.engine.max_shots} shots + the query)")
            out.append((name, k))
    return out


def _resolve_audio(item: dict, root: Path) -> Path:
    path = Path(item["path"]).expanduser()
    return path if path.is_absolute() else root / path


def _load_queries(ev: Evaluation, rows: list[dict], engine_loader) -> tuple[list[dict], list[dict], list[dict]]:
    """(rows kept, their decoded waves, rejected records) for one batch."""
    kept, waves, rejected = [], [], []
    for row in rows:
        try:
            target = target_of(ev.task, row)
            if not target:
                raise ManifestError(f"{row['id']}: no target for task {ev.task.name}")
            waves.append(engine_loader(_resolve_audio(row, ev.audio_root), row))
            kept.append(row)
        except (AudioError, ManifestError) as exc:
            rejected.append({"id": row["id"], "path": row.get("path"), "reason": str(exc)})
    return kept, waves, rejected


def _loader(ev: Evaluation):
    """Decode a query once per sample rate the run needs (retrieval encoder, flamingo's encoders)."""
    from .engine import load_for_encoders

    flamingo = ev.predictors.get("flamingo")
    if flamingo is not None:
        return flamingo.engine.load
    return lambda source, item: load_for_encoders(source, [ev.encoder], item)


def _record(name: str, k: int | None, row: dict, pred: Prediction, target) -> dict:
    rec = {"predictor": name, "shots": k, "id": row["id"],
           "shot_ids": [{"id": s.id, "score": round(float(s.score), 6)} for s in pred.shots],
           "prompt": pred.prompt, "output": pred.output,
           "score": None if pred.score is None else round(float(pred.score), 6), "target": target}
    if pred.label_scores is not None:
        rec["label_scores"] = {k2: round(float(v), 6) for k2, v in pred.label_scores.items()}
    if pred.dropped:
        rec["dropped_shots"] = pred.dropped
    if pred.samples:
        rec["samples"] = [{"text": t, "clap_score": round(float(s), 6)} for t, s in pred.samples]
    return rec


def run_queries(ev: Evaluation, out: Outputs, ranks: Ranks, progress: bool = True) -> None:
    """Predict every (predictor, shots) for this rank's queries not done yet, batch by batch."""
    todo_combos = combos(ev)
    done, rejected_ids = out.done()
    mine = ev.rows[ranks.rank :: ranks.world]
    pending = [r for r in mine if r["id"] not in rejected_ids
               and any(record_key(p, k, r["id"]) not in done for p, k in todo_combos)]
    logger.info("rank %d: %d of %d queries to do (%d combos)", ranks.rank, len(pending), len(mine), len(todo_combos))
    labels = ev.store.label_set() if ev.task.family in ("classification", "tagging") else None
    if labels and ev.task.family == "classification":
        unknown = sorted({answer_text(ev.task, r) for r in mine if r.get("label")} - set(labels))
        if unknown:
            logger.warning("%d query label(s) are not in the store's label set (never predictable): %s",
                           len(unknown), ", ".join(unknown[:10]))
    batch_size = max(1, int(ev.cfg.get("batch_size") or 8))
    load = _loader(ev)
    bar = tqdm(total=len(pending), unit="query", desc="evaluate", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(pending), batch_size):
        rows, waves, rejected = _load_queries(ev, pending[start : start + batch_size], load)
        _append_jsonl(out.part("rejected"), rejected)
        for r in rejected:
            logger.warning("rejected query %s: %s", r["id"], r["reason"])
        if rows:
            _append_jsonl(out.part("predictions"), _predict_batch(ev, rows, waves, todo_combos, done, labels))
        bar.update(len(rows) + len(rejected))
    bar.close()


def _predict_batch(ev: Evaluation, rows, waves, todo_combos, done, labels) -> list[dict]:
    emb = np.asarray(ev.encoder.embed([w[int(ev.encoder.sample_rate)] for w in waves]), np.float32)
    records = []
    shots_by_k: dict[int, list] = {}
    for name, k in todo_combos:
        idx = [i for i, r in enumerate(rows) if record_key(name, k, r["id"]) not in done]
        if not idx:
            continue
        kk = k or 0
        if kk not in shots_by_k:
            shots_by_k[kk] = ev.retriever.search(emb, kk, exclude_groups=[r.get("group") for r in rows],
                                                 query_ids=[r["id"] for r in rows])
        queries = [Query(rows[i]["id"], rows[i], waves[i], emb[i], shots_by_k[kk][i],
                         options_of(ev.task, rows[i], labels)) for i in idx]
        preds = ev.predictors[name].predict(queries, ev.task)
        records += [_record(name, k, rows[i], p, target_of(ev.task, rows[i])) for i, p in zip(idx, preds)]
    return records


def evaluate(cfg: dict, encoder=None, engine=None, progress: bool | None = None) -> dict | None:
    """Run one evaluation; rank 0 returns the metrics (None on other ranks)."""
    ranks = Ranks.from_env()
    try:
        return _evaluate(cfg, ranks, encoder, engine, progress)
    finally:
        ranks.teardown()


def _evaluate(cfg: dict, ranks: Ranks, encoder, engine, progress: bool | None) -> dict | None:
    from .report import chance_level, score_predictions, write_report

    ev = prepare(cfg, encoder=encoder, engine=engine)
    _, _, query_split = query_rows(cfg, ev.task)
    out = Outputs(output_dir(cfg, query_split), ranks.rank)
    out.root.mkdir(parents=True, exist_ok=True)
    if ranks.rank == 0:
        (out.root / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    show = cfg.get("progress", True) if progress is None else progress
    run_queries(ev, out, ranks, progress=bool(show))
    ranks.barrier()
    if ranks.rank != 0:
        return None
    order = {r["id"]: i for i, r in enumerate(ev.rows)}
    preds, rejected = out.merge(order)
    metrics = score_predictions(preds, ev.task, ev.store.label_set())
    chance = chance_level(preds, ev.task, ev.store.label_set())
    summary = {"dataset": cfg["dataset"]["name"], "task": ev.task.name, "query_split": query_split,
               "store": str(ev.store.root), "encoder": ev.store.info.encoder.get("name"),
               "queries": len(ev.rows), "rejected": len(rejected), "output_dir": str(out.root),
               "results": metrics, "chance": chance}
    write_report(out.root, summary)
    return summary


# ----------------------------------------------------------------------------- CLI


def _run(argv: list[str]) -> None:
    from .report import chance_text, markdown_table

    for overrides in expand_overrides(argv):
        cfg = load_config(overrides)
        export_roots(cfg)
        summary = evaluate(cfg)
        if summary is not None:
            print(f"\n{summary['dataset']} / {summary['task']} ({summary['queries']} queries, "
                  f"{summary['rejected']} rejected), store {summary['store']}")
            print(markdown_table(summary["results"]))
            if summary.get("chance"):
                print(chance_text(summary["chance"]))
            print(f"outputs: {summary['output_dir']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_main("evaluate", __doc__, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
