"""The one query loop: `evaluate`, `rag_classify` and `rag_flamingo.api` all run their queries here.

    QueryInput (id, audio, manifest fields, recording key)           <- the caller's reader
      -> decode once per sample rate the run needs (store's encoder + the predictors' encoders)
      -> embed with the store's encoder
      -> own rows: the query's recording in the store, and exact copies of its file (content hash)
      -> retrieve k shots per shot count, own rows never among them
      -> every (predictor, shots) combination not done yet
      -> Result / Rejected per batch                                   -> the caller's writer

A query is one batch element everywhere, so a query's shots and answer do not depend on the batch it
is in. Queries whose audio cannot be used (or that have no target when one is required) come back as
`Rejected` with the reason; they never stop the run. `ResultFolder` is the resumable, rank-aware
record writer evaluation uses (append per batch, skip what is done, merge the ranks' parts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .audio import AudioSource, load_for_encoders, wave_for
from .errors import AudioError, ConfigError, ManifestError
from .jsonl import append_jsonl, read_jsonl, write_jsonl
from .labels import item_labels
from .predictors import Prediction, Predictor, Query
from .prompts import answer_text, default_options
from .retrieval import Retriever
from .store.index_store import IndexStore
from .store.items import content_key
from .tasks import TaskFamily, TaskSpec

logger = logging.getLogger(__name__)

Combo = tuple[str, int | None]  # (predictor, shots); shots None for predictors that use none


@dataclass
class QueryInput:
    """One query as a reader hands it to the runner."""

    id: str
    source: AudioSource  # a file, or a waveform (``(wave, sr)``)
    item: dict = field(default_factory=dict)  # manifest fields: inputs (question, start, end), targets
    recording: str | None = None  # `recording_key` of the query with its source's audio root
    content: str | None = None  # `content_key` of its audio when the reader hashed it (`hash_queries`)


@dataclass
class Rejected:
    id: str
    path: str | None
    reason: str

    def record(self) -> dict:
        return {"id": self.id, "path": self.path, "reason": self.reason}


@dataclass
class Result:
    query: Query
    predictor: str
    shots: int | None
    prediction: Prediction
    copies: int = 0  # rows of the store holding an exact copy of the query's audio from another source


@dataclass
class Batch:
    results: list[Result] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    queries: int = 0  # queries of the batch that were predicted


def target_of(task: TaskSpec, item: dict):
    """The reference answer(s) the metrics compare with."""
    if task.family == TaskFamily.CAPTIONING:
        return [str(c) for c in item.get("captions") or []]
    if task.family == TaskFamily.TAGGING:
        return item_labels(item)
    return answer_text(task, item)


def label_options(task: TaskSpec, store: IndexStore) -> list[str] | None:
    """The option set of label tasks: the store's labels."""
    return store.label_set() if task.family in (TaskFamily.CLASSIFICATION, TaskFamily.TAGGING) else None


def plan_combos(predictors: dict[str, Predictor], shots: Iterable[int]) -> list[Combo]:
    """(predictor, shots) pairs each predictor can answer: shot-free predictors once (shots None).

    A shot count outside a predictor's range is skipped with a warning when the predictor has other
    counts to run, and is an error when it has none (``predictor=knn shots=0``).
    """
    counts = sorted({int(s) for s in shots})
    if not counts:
        raise ConfigError("shots is empty; e.g. shots=4 or shots=0,1,4,7")
    if counts[0] < 0:
        raise ConfigError(f"shots must be >= 0, got {counts}")
    out: list[Combo] = []
    for name, pred in predictors.items():
        if not pred.uses_shots:
            out.append((name, None))
            continue
        fits = [k for k in counts if k >= pred.min_shots and (pred.max_shots is None or k <= pred.max_shots)]
        if not fits:
            most = "" if pred.max_shots is None else f" and <= {pred.max_shots}"
            raise ConfigError(f"predictor {name} needs shots >= {pred.min_shots}{most}; got shots={counts}")
        if len(fits) < len(counts):
            logger.warning(
                "predictor %s skips shots %s (it needs >= %d%s)",
                name,
                [k for k in counts if k not in fits],
                pred.min_shots,
                "" if pred.max_shots is None else f" and <= {pred.max_shots}",
            )
        out += [(name, k) for k in fits]
    return out


class QueryRunner:
    """Decode, embed, retrieve and predict for batches of queries (see the module docstring)."""

    def __init__(
        self,
        encoder,  # the store's encoder (the retriever searches its store)
        retriever: Retriever,
        predictors: dict[str, Predictor],
        task: TaskSpec,
        options: Sequence[str] | None = None,
        batch_size: int = 8,
        require_target: bool = False,
    ):
        self.encoder, self.retriever = encoder, retriever
        self.predictors, self.task, self.labels = predictors, task, list(options) if options else None
        self.batch_size = max(1, int(batch_size))
        self.require_target = require_target
        self.encoders = [encoder] + [e for p in predictors.values() for e in p.audio_encoders]

    # ------------------------------------------------------------------ one batch
    def run_batch(
        self,
        inputs: Sequence[QueryInput],
        combos: Sequence[Combo],
        done: Callable[[str, int | None, str], bool] | None = None,
    ) -> Batch:
        """Predict every combo not ``done(predictor, shots, id)`` for the usable queries of ``inputs``."""
        batch = Batch()
        kept, waves, contents = [], [], []
        for q in inputs:
            try:
                if self.require_target and not target_of(self.task, q.item):
                    raise ManifestError(f"{q.id}: no target for task {self.task.name}")
                waves.append(load_for_encoders(q.source, self.encoders, q.item))
                contents.append(_content(q))
                kept.append(q)
            except (AudioError, ManifestError) as exc:
                reason = exc.reason if isinstance(exc, AudioError) else str(exc)
                batch.rejected.append(Rejected(q.id, _source_name(q.source), reason))
        if not kept:
            return batch
        batch.queries = len(kept)
        emb = np.asarray(self.encoder.embed([wave_for(w, self.encoder) for w in waves]), np.float32)
        recording = [self.retriever.own_rows(q.recording) for q in kept]
        same_audio = [self.retriever.own_rows(content=c) for c in contents]
        own = [r | a for r, a in zip(recording, same_audio)]
        copies = [len(a - r) for r, a in zip(recording, same_audio)]  # exact copies from another recording
        shots_by_k: dict[int, list] = {}
        for name, k in combos:
            idx = [i for i, q in enumerate(kept) if done is None or not done(name, k, q.id)]
            if not idx:
                continue
            kk = k or 0
            if kk not in shots_by_k:
                shots_by_k[kk] = self.retriever.search(emb, kk, exclude_rows=own, query_ids=[q.id for q in kept])
            queries = [
                Query(
                    kept[i].id,
                    kept[i].item,
                    waves[i],
                    emb[i],
                    shots_by_k[kk][i],
                    default_options(self.task, kept[i].item, self.labels),
                    own[i],
                )
                for i in idx
            ]
            preds = self.predictors[name].predict(queries, self.task)
            batch.results += [Result(q, name, k, p, copies[i]) for i, q, p in zip(idx, queries, preds)]
        return batch

    # ------------------------------------------------------------------ many batches
    def batches(
        self,
        inputs: Sequence[QueryInput],
        combos: Sequence[Combo],
        done: Callable[[str, int | None, str], bool] | None = None,
        progress: bool = False,
        desc: str = "queries",
    ) -> Iterator[Batch]:
        """`run_batch` over ``inputs`` in order, ``batch_size`` at a time, with a progress bar."""
        bar = tqdm(total=len(inputs), unit="query", desc=desc, disable=not progress, dynamic_ncols=True)
        try:
            for start in range(0, len(inputs), self.batch_size):
                chunk = inputs[start : start + self.batch_size]
                batch = self.run_batch(chunk, combos, done)
                for r in batch.rejected:
                    logger.warning("rejected query %s: %s", r.id, r.reason)
                bar.update(len(chunk))
                yield batch
        finally:
            bar.close()


def _content(q: QueryInput) -> str | None:
    if q.content is not None:
        return q.content
    if isinstance(q.source, (str, Path)):
        return content_key(q.source, q.item.get("start"), q.item.get("end"))
    return None


def hash_queries(inputs: Iterable[QueryInput]) -> dict[str, str | None]:
    """id -> `content_key` of each query's audio (the digest the store keeps per item), also set
    on the inputs so the runner does not hash them again; None for a file that cannot be read (it
    is rejected when decoded) or a waveform. Cheap next to decoding: 2000 ESC-50-sized files
    (5 s, 44.1 kHz, 880 MB) hash in ~0.8 s from the page cache."""
    out: dict[str, str | None] = {}
    for q in inputs:
        if q.content is None and isinstance(q.source, (str, Path)):
            try:
                q.content = content_key(q.source, q.item.get("start"), q.item.get("end"))
            except AudioError:
                q.content = None
        out[q.id] = q.content
    return out


def query_audio_summary(contents: dict[str, str | None]) -> dict:
    """What a run's query audio was: how many files, how many unreadable, and one digest of every
    (id, content) pair (it changes when any query's audio does)."""
    pairs = sorted(contents.items())
    digest = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]
    return {"files": len(pairs), "unreadable": sum(c is None for _, c in pairs), "content_digest": digest}


def _source_name(source: AudioSource) -> str | None:
    return str(source) if isinstance(source, (str, Path)) else None


# ----------------------------------------------------------------------------- the resumable writer


def record_key(predictor: str, shots: int | None, query_id: str) -> str:
    return f"{predictor}|{shots}|{query_id}"


def run_key(settings: dict) -> str:
    """16 hex digits naming a run's settings (everything that changes a prediction)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class ResultFolder:
    """The records of one evaluation folder: merged files + per-rank parts (resumable, rank-aware).

    `claim` ties the folder to one run (``run.json``: its key and settings): it is resumed only by
    a run with the same key. Rank r appends to ``parts/<kind>-rank<r>.jsonl`` batch by batch; `done`
    reads every file, so a rerun skips what any earlier run finished; `merge` (rank 0, after the
    barrier) folds the parts into ``predictions.jsonl`` / ``rejected.jsonl``.
    """

    root: Path
    rank: int = 0
    OUTPUTS = (
        "predictions.jsonl",
        "rejected.jsonl",
        "metrics.json",
        "results.md",
        "metric_vs_shots.png",
        "config.json",
        "run.json",
    )

    @property
    def run_file(self) -> Path:
        return self.root / "run.json"

    def claim(self, settings: dict, overwrite: bool = False) -> None:
        """Write run.json, or check that the folder holds this run (else refuse: no stale results)."""
        key = run_key(settings)
        if self.run_file.is_file() or self.predictions.exists() or (self.root / "parts").exists():
            theirs = _read_json(self.run_file)
            if theirs.get("key") == key:
                return
            if not overwrite:
                old = theirs.get("settings") or {}
                differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                what = f"differs in: {', '.join(differ)}" if differ else f"no readable {self.run_file.name}"
                raise ConfigError(
                    f"{self.root} holds results of another run ({what}); pass overwrite=true to "
                    f"start it over, or another output_dir"
                )
            logger.warning("overwrite=true: removing the earlier results in %s", self.root)
            self.clear()
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_file.write_text(json.dumps({"key": key, "settings": settings}, indent=2, default=str))

    def clear(self, keep_run: bool = False) -> None:
        """Remove every result (merged files and parts), and run.json unless ``keep_run``."""
        for name in self.OUTPUTS:
            if not (keep_run and name == self.run_file.name):
                (self.root / name).unlink(missing_ok=True)
        shutil.rmtree(self.root / "parts", ignore_errors=True)

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

    def _records(self, kind: str) -> list[dict]:
        merged = self.predictions if kind == "predictions" else self.rejected
        return [r for p in [merged, *self.all_parts(kind)] for r in read_jsonl(p, tolerate_cut=True)]

    def done(self, contents: dict[str, str | None] | None = None) -> tuple[set[str], set[str]]:
        """(keys of finished predictions, ids of rejected queries), merged files and parts.

        ``contents`` (id -> `content_key` of the query's audio now, `hash_queries`): a record
        counts only when it was made from that audio (its ``content``), so a query whose file
        changed since (or a record from before records named their audio) is done again."""
        return (
            {
                record_key(r["predictor"], r["shots"], r["id"])
                for r in self._records("predictions")
                if _current(r, contents)
            },
            {r["id"] for r in self._records("rejected") if _current(r, contents)},
        )

    def append(self, predictions: list[dict], rejected: list[dict]) -> None:
        append_jsonl(self.part("rejected"), rejected)
        append_jsonl(self.part("predictions"), predictions)

    def merge(
        self, order: dict[str, int], contents: dict[str, str | None] | None = None
    ) -> tuple[list[dict], list[dict]]:
        """Fold every part into predictions.jsonl / rejected.jsonl (deduplicated, sorted).

        ``contents`` (every query's `content_key` now): records made from other audio (the file
        changed since) are dropped; of several records of one (predictor, shots, id) the first
        made from the current audio is kept."""
        merged: dict[str, dict] = {}
        for r in self._records("predictions"):
            if _current(r, contents):
                merged.setdefault(record_key(r["predictor"], r["shots"], r["id"]), r)
        preds = sorted(
            merged.values(),
            key=lambda r: (
                r["predictor"],
                -1 if r["shots"] is None else r["shots"],
                order.get(r["id"], len(order)),
                r["id"],
            ),
        )
        rejected: dict[str, dict] = {}
        for r in self._records("rejected"):
            if _current(r, contents):
                rejected.setdefault(r["id"], r)
        rej = sorted(rejected.values(), key=lambda r: order.get(r["id"], len(order)))
        write_jsonl(self.predictions, preds)
        write_jsonl(self.rejected, rej)
        for path in self.all_parts("predictions") + self.all_parts("rejected"):
            path.unlink()  # their records are in the merged files now
        return preds, rej

    def describe(self, **facts) -> None:
        """Add ``facts`` (what produced the results, beyond the key: e.g. the query audio) to run.json."""
        info = _read_json(self.run_file)
        info.update(facts)
        tmp = self.run_file.with_name(self.run_file.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=2, default=str))
        tmp.replace(self.run_file)


def _current(record: dict, contents: dict[str, str | None] | None) -> bool:
    """Whether ``record`` was made from its query's audio as it is now: its ``content`` is the
    query's in ``contents`` (a record without one, from before records named their audio, is
    not). Records of queries ``contents`` does not cover (another ``limit``) are kept as they are."""
    if contents is None or record["id"] not in contents:
        return True
    return "content" in record and record["content"] == contents[record["id"]]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def shot_records(result: Result, with_labels: bool = False) -> list[dict[str, Any]]:
    """The shots a prediction used: id, similarity (and label)."""
    out = []
    for s in result.prediction.shots:
        rec: dict[str, Any] = {"id": s.id, "score": round(float(s.score), 6)}
        if with_labels:
            rec["label"] = s.item.get("label")
        out.append(rec)
    return out
