"""The runs behind ``build_index``: ``mode=build`` (resumable), ``mode=append``, ``mode=repair``,
``mode=features``.

Every run holds the store's write lock (rank 0 under torchrun): a second build of the same store
refuses at once. A store is its plans (``rag_flamingo.indexing.plan``: one per source, written before its
shards), so every mode but features starts by bringing the store in line with them (``_prepare``):

- a plan file that is damaged or missing is written again from the copies its shards keep;
- every shard is checked against its marker's checksums: a missing or damaged shard is embedded again
  from its plan (its source's audio must still be there, otherwise an error names the shard, its
  source and what to do), a shard holding rows that a later plan replaced drops them;
- items, index, rejected.jsonl and store.json are made again from the shards when anything changed,
  is damaged or missing (a corrupted store.json included); an intact store is left as it is.

build:    a new store: the manifest is planned (fixed shards) -> decode/embed/write the shards not yet
          done (this rank's share) -> barrier -> rank 0 merges the shards, builds + tunes the FAISS
          index, writes items/index/rejected/store.json -> optional feature cache -> summary. On a
          store whose first plan is this command's, the run resumes or repairs it (above).
append:   the store is resumed/repaired first; then each manifest row is looked up by its row key
          (``store.items.row_key``: its recording under its source's audio root, and its id): not stored
          -> new; stored with the same content hash and fields -> unchanged (skipped); stored with
          another content or other fields -> changed: planned again under its stored id, which
          replaces the stored row (its shard drops it, so the old vector leaves the index). A new row
          whose id another recording holds gets a namespaced id (``store.items.namespaced_id``). New and
          changed rows are one new plan in shards after the existing ones; the index is rebuilt from
          all shards (stored vectors are read back, never re-embedded). The store's feature caches
          are filled in for the new shards with the encoder each records (``_add_features``).
repair:   only the above, for any store (no dataset needed): ``build_index store=<store> mode=repair``.
features: add ``features/<name>/`` to a complete store (nothing is re-embedded).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .. import distributed
from ..components import store_path
from ..config import BuildIndexConfig, IndexConfig
from ..datasets.manifest import read_manifest
from ..datasets.sources import resolve_split, split_name
from ..encoders.base import build_encoder
from ..errors import AudioError, ConfigError, RagFlamingoError, StoreError
from ..store.features import features_path
from ..store.index_store import store_files, write_info, write_store
from ..store.items import content_key, item_from_record, namespaced_id, row_fields, row_key, row_recording_keys
from ..store.layout import FEATURES_DIR, INFO_FILE, PLANS_DIR, REJECTED_FILE, SHARDS_DIR
from ..store.lock import build_lock
from ..store.records import (
    BuildRecord,
    FeatureRecord,
    IndexRecord,
    SourceRecord,
    StoreInfo,
    check_format,
    comparable_fingerprint,
    file_problems,
    read_info,
)
from ..store.shards import (
    done_shards,
    drop_shard,
    read_all_shards,
    read_rejected,
    read_shard_items,
    read_shard_rejected,
    read_shard_vectors,
    shard_marker,
    shard_problem,
    write_marker,
    write_rejected,
    write_shard,
)
from .embedder import EmbedStats, embed_shards
from .faiss_index import build_index
from .features import write_feature_shards
from .ondisk import ShardRows, read_shard_tables
from .plan import REBUILD_HINT, BuildPlan, StorePlans, adopt_plans, drop_legacy_plan, load_plans, plan_diff
from .quality import label_precision
from .reader import resolve_path

logger = logging.getLogger(__name__)
MODES = ("build", "append", "repair", "features")


@dataclass
class Summary:
    output: Path
    status: str  # built | appended | complete | repaired | features | nothing-new
    count: int = 0
    rejected: int = 0
    skipped: int = 0  # manifest rows already stored with the same content and fields
    embedded: int = 0
    embed_seconds: float = 0.0
    index: IndexRecord = field(default_factory=lambda: IndexRecord(type=""))
    encoder: str = ""
    features: list[str] = field(default_factory=list)
    quality: dict | None = None
    repaired: list[str] = field(default_factory=list)  # what was found broken and rebuilt
    new: int = 0  # manifest rows the store did not hold
    changed: int = 0  # manifest rows stored with another content or other fields: re-embedded, replaced
    renamed: dict[str, str] = field(default_factory=dict)  # manifest id -> namespaced id
    rows_line: bool = False  # an append: say what became of its manifest's rows
    resumed: list[str] = field(default_factory=list)  # unfinished runs this one finished

    def text(self) -> str:
        idx = self.index
        params = ", ".join(f"{k}={v}" for k, v in idx.search_params.items()) or "exact"
        rate = f" ({self.embedded / self.embed_seconds:.1f} clips/s)" if self.embed_seconds > 0 else ""
        lines = [
            f"build_index: {self.status} {self.output}",
            f"  items     {self.count} indexed, {self.rejected} rejected"
            + (f" (reasons in {self.output / REJECTED_FILE})" if self.rejected else ""),
        ]
        if self.rows_line:
            lines.append(
                f"  manifest  {self.new} new, {self.skipped} unchanged skipped, {self.changed} changed re-embedded"
                + (" (replacing their stored versions)" if self.changed else "")
            )
        if self.renamed:
            shown = ", ".join(f"{a} -> {b}" for a, b in list(self.renamed.items())[:3])
            more = ", ..." if len(self.renamed) > 3 else ""
            lines.append(
                f"  ids       {len(self.renamed)} ids held by other recordings in the store were namespaced: "
                f"{shown}{more}"
            )
        lines += [
            f"  encoder   {self.encoder}; embedded {self.embedded} clips this run in {self.embed_seconds:.1f} s{rate}",
            f"  index     {idx.factory} ({idx.type}, {idx.metric}), search {params}, "
            f"recall@10 {idx.recall_at_10:.4f} on {idx.recall_queries} queries"
            + ("" if idx.reached_target else f" (below the {idx.recall_target} target)"),
        ]
        if self.quality:
            q = self.quality
            lines.append(
                f"  quality   label precision@{q['k']} {q['precision']:.3f} (chance {q['chance']:.3f}): "
                f"share of each item's {q['k']} nearest neighbours with one of its labels, own "
                f"recording left out, over {q['queries']} items"
            )
        if self.features:
            lines.append(f"  features  {', '.join(self.features)}")
        lines += [f"  resumed   {what}" for what in self.resumed]
        lines += [f"  repaired  {problem}" for problem in self.repaired]
        return "\n".join(lines)


def run(cfg: BuildIndexConfig) -> Summary | None:
    """Run one build; returns the summary on rank 0 (None on other ranks)."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r}; use one of {', '.join(MODES)}")
    if cfg.shard_size < 1 or cfg.batch_size < 1:
        raise ConfigError("shard_size and batch_size must be >= 1")
    ranks = distributed.setup()
    try:
        if cfg.mode == "features":
            if not ranks.is_main:
                return None
            with build_lock(cfg.output):
                return _features_only(cfg)
        return _build(cfg, ranks)
    finally:
        distributed.teardown(ranks)


# ----------------------------------------------------------------------------- build / append / repair


@dataclass
class _Run:
    """One run's state (rank 0 fills most of it)."""

    cfg: BuildIndexConfig
    ranks: distributed.Ranks
    root: Path
    encoder: Any = None  # built when first needed (a repair that embeds nothing loads no weights)
    info: StoreInfo | None = None  # store.json as found (None: absent or corrupted)
    info_corrupted: bool = False
    plans: StorePlans | None = None
    committed: set[int] = field(default_factory=set)  # first shards of the plans store.json describes
    problems: list[str] = field(default_factory=list)  # what was found broken and rebuilt
    touched: set[int] = field(default_factory=set)  # shards embedded or rewritten by this run
    rewritten: set[int] = field(default_factory=set)  # shards that dropped rows a later plan replaced
    added: BuildPlan | None = None  # the plan this run wrote
    unchanged: dict | None = None  # an append's counts when it had nothing to add

    def get_encoder(self):
        if self.encoder is None:
            self.encoder = _encoder(self.cfg.encoder, _rank_device(self.cfg.device, self.ranks))
        return self.encoder


class _Stopped(Exception):
    """Rank 0 failed a step: the other ranks stop (rank 0 raises its error)."""


def _on_main(ranks: distributed.Ranks, step: Callable[[], None]) -> None:
    """Run ``step`` on rank 0; then every rank knows whether it failed (a barrier too)."""
    error: BaseException | None = None
    if ranks.is_main:
        try:
            step()
        except Exception as exc:  # re-raised below, after the other ranks learn of it
            error = exc
    failed = distributed.sum_over_ranks(ranks, [int(error is not None)])[0]
    if error is not None:
        raise error
    if failed:
        raise _Stopped


def _build(cfg: BuildIndexConfig, ranks: distributed.Ranks) -> Summary | None:
    source, rows = (None, []) if cfg.mode == "repair" else _read_source(cfg, ranks)
    if not ranks.is_main:
        return _build_source(cfg, ranks, source, rows)
    with build_lock(cfg.output):
        return _build_source(cfg, ranks, source, rows)


def _build_source(
    cfg: BuildIndexConfig, ranks: distributed.Ranks, source: SourceRecord | None, rows: list[dict]
) -> Summary | None:
    run = _Run(cfg, ranks, Path(cfg.output))
    if cfg.mode != "repair":
        run.get_encoder()  # its fingerprint is part of the plan
    try:
        _on_main(ranks, lambda: _prepare(run, source, rows))
        stats = _embed_pending(run)
        if cfg.mode == "append":
            assert source is not None
            _on_main(ranks, lambda: _plan_append(run, source, rows))
            more = _embed_pending(run)
            stats = EmbedStats(
                stats.shards + more.shards,
                stats.embedded + more.embedded,
                stats.rejected + more.rejected,
                stats.seconds + more.seconds,
                stats.rejected_examples + more.rejected_examples,
            )
    except _Stopped:
        return None
    if not ranks.is_main:
        return None
    return _finish(run, stats)


def _prepare(run: _Run, source: SourceRecord | None, rows: list[dict]) -> None:
    """Rank 0: read store.json and the plans (recovering damaged plan files), check this command
    against them, write a new build's plan, and bring every shard in line with its plan."""
    cfg, root = run.cfg, run.root
    drop_legacy_plan(root)
    try:
        run.info = read_info(root)
    except StoreError as exc:
        logger.warning("%s; rebuilding it from the shards", exc)
        run.info_corrupted = True
        run.problems.append(f"{INFO_FILE} was corrupted")
    if run.info is not None:
        check_format(root, run.info)
    plans, problems = load_plans(root)
    if run.info is None and not run.info_corrupted and cfg.mode == "repair" and plans is not None:
        run.info_corrupted = True  # a repair finishes an interrupted run too: all its plans are the store's
        run.problems.append(f"{INFO_FILE} was missing")
    run.problems += problems
    if plans is None and run.info is not None:
        plans = adopt_plans(root, run.info)
    if cfg.mode == "build":
        assert source is not None
        mine = _new_plan(run, "build", source, rows, 0, {"new": len(rows), "unchanged": 0, "changed": 0})
        if plans is None:
            _check_no_strays(root, mine)
            mine.save(root)
            plans, run.added = StorePlans(root, [mine]), mine
        else:
            diff = plan_diff(plans.plans[0].describe(), mine.describe())
            if diff and (run.info is not None or run.info_corrupted):
                raise StoreError(
                    f"{root}: already holds a store built from another manifest, encoder or shard_size "
                    f"(differs in: {', '.join(diff)}); add this manifest's new rows with mode=append, "
                    f"repair the store with `build_index store={root} mode=repair`, or pick another store="
                )
            if diff:
                raise StoreError(
                    f"{root}: holds shards of an unfinished build with a different plan (differs in: "
                    f"{', '.join(diff)}); rerun with the same dataset/encoder/shard_size to resume, "
                    f"or pick another store= (or delete {root})"
                )
    elif plans is None and run.info_corrupted:
        raise StoreError(
            f"{root}: {INFO_FILE} is corrupted and the store was built before build plans were recorded "
            f"({PLANS_DIR}/ is missing), so nothing says what its shards hold; {REBUILD_HINT}"
        )
    elif plans is None:
        what = "append to" if cfg.mode == "append" else "repair"
        raise StoreError(f"{root}: no store to {what}; build it first with `build_index ... store={root}`")
    elif cfg.mode == "append":
        _check_encoder(root, plans.encoder, run.get_encoder().fingerprint(), cfg.encoder)
    run.plans = plans
    if run.info is not None:
        run.committed = {src.first_shard for src in run.info.build.sources}
    elif run.info_corrupted:
        run.committed = {plan.first_shard for plan in plans.plans}
    built = plans.encoder

    def check_encoder() -> None:  # a repair loads the encoder only when it embeds
        _check_encoder(root, built, run.get_encoder().fingerprint(), cfg.encoder)

    _reconcile_shards(run, check_encoder if cfg.mode == "repair" else None)


def _new_plan(
    run: _Run, mode: str, source: SourceRecord, items: list[dict], first: int, counts: dict, renamed=None
) -> BuildPlan:
    fingerprint = run.get_encoder().fingerprint()
    size = run.cfg.shard_size
    shards = -(-len(items) // size)
    src = replace(source, rows=len(items), first_shard=first, end_shard=first + shards, first_row=0, end_row=None)
    return BuildPlan(
        mode, src, comparable_fingerprint(fingerprint), size, first, items, fingerprint, counts, dict(renamed or {})
    )


def _check_no_strays(root: Path, plan: BuildPlan) -> None:
    """Complete shards found without a plan (an older version's interrupted build) are adopted when
    their key is the one this plan gives them; any other shard is refused."""
    stray = []
    for shard in done_shards(root):
        marker = shard_marker(root, shard)
        if shard not in plan.rows_by_shard or marker is None or marker.key != plan.shard_key(shard):
            stray.append(shard)
    if stray:
        raise StoreError(
            f"{root}: has embedding shards {stray[:5]} from an unknown run; pick another store= or delete them"
        )


def _check_encoder(root: Path, built: dict, fingerprint: dict, options: dict) -> None:
    """StoreError unless ``fingerprint`` is the encoder the store was built with; it names the
    overrides that give the store's settings (those of the encoder's config options)."""
    ours = comparable_fingerprint(fingerprint)
    if built == ours:
        return
    diff = sorted(k for k in set(built) | set(ours) if built.get(k) != ours.get(k))
    if built.get("name") != ours.get("name"):
        overrides = [f"encoder={built.get('name')}"]
    else:
        overrides = [
            f"encoder.{k}={built[k]}"
            for k in diff
            if k in options and k in built and isinstance(built[k], (str, int, float, bool)) and k != "name"
        ]
    hint = f" ({' '.join(overrides)})" if overrides else ""
    raise StoreError(
        f"{root}: built with encoder {built.get('name')!r} but this command's encoder differs (in: "
        f"{', '.join(diff)}); run it with the encoder settings the store was built with{hint}"
    )


def _reconcile_shards(run: _Run, before_embedding: Callable[[], None] | None = None) -> list[int]:
    """Rank 0: check every shard against its plan. A missing or damaged shard is dropped (the ranks
    embed it again), one that holds rows a later plan replaced drops them. What cannot be done (its
    audio is gone, ``before_embedding`` refuses) is an error before any shard is touched. Returns
    the stored shards that must be embedded again."""
    root, plans = run.root, run.plans
    assert plans is not None
    done = set(done_shards(root))
    stray = sorted(s for s in done if s >= plans.end_shard)
    if stray:
        raise StoreError(
            f"{root}: has embedding shards {stray[:5]} that no plan names (from an unknown run); delete "
            f"{SHARDS_DIR}/{stray[0]:06d}.* (and the others) or pick another store="
        )
    redo, drop, rewrite, restamp = [], {}, [], []
    for shard in range(plans.end_shard):
        committed = plans.owner(shard).first_shard in run.committed
        if shard not in done:
            if committed:
                run.problems.append(f"shard {shard} re-embedded (its done marker is missing)")
                redo.append(shard)
            continue
        problem = shard_problem(root, shard)
        if problem is None:
            marker = shard_marker(root, shard)
            assert marker is not None
            if marker.key == plans.expected_key(shard):
                if not marker.source:  # an older version's shard: give it its plan copy
                    restamp.append(shard)
                continue
            if _drop_replaced_rows(run, shard, apply=False):
                rewrite.append(shard)
                continue
            problem = "it does not hold the rows its plan gives it"
        drop[shard] = problem
        run.problems.append(f"shard {shard} re-embedded ({problem})")
        if committed:
            redo.append(shard)
    _check_audio(run, redo)
    if (redo or drop) and before_embedding is not None:
        before_embedding()
    for shard in restamp:
        marker = shard_marker(root, shard)
        assert marker is not None
        marker.source, marker.rows = plans.owner(shard).describe(), plans.expected_rows(shard)
        write_marker(root, shard, marker)
    for shard in rewrite:
        _drop_replaced_rows(run, shard)
    for shard, problem in drop.items():
        logger.warning("%s: shard %d is damaged (%s); it is embedded again", root, shard, problem)
        drop_shard(root, shard)
    return redo


def _drop_replaced_rows(run: _Run, shard: int, apply: bool = True) -> bool:
    """Rewrite an intact shard without the rows a later plan replaced (no re-embedding); False when
    that does not make it what its plan says (``apply=False``: only say whether it would)."""
    root, plans = run.root, run.plans
    assert plans is not None
    later = plans.superseded(shard)
    if not later:
        return False
    table, rejected = read_shard_items(root, shard), read_shard_rejected(root, shard)
    ids = [str(i) for i in table.column("id").to_pylist()]
    keep = np.array([i not in later for i in ids], dtype=bool)
    kept_rejected = [r for r in rejected if str(r["id"]) not in later]
    expected = plans.expected_rows(shard)
    kept_ids = {i for i, k in zip(ids, keep) if k} | {str(r["id"]) for r in kept_rejected}
    if kept_ids != {str(r["id"]) for r in expected}:
        return False
    if not apply:
        return True
    records = [rec for rec, k in zip(table.to_pylist(), keep) if k]
    vectors = read_shard_vectors(root, shard)[keep]
    key, header = plans.expected_key(shard), plans.owner(shard).describe()
    write_shard(root, shard, vectors, records, kept_rejected, key=key, source=header, rows=expected)
    dropped = len(ids) + len(rejected) - len(kept_ids)
    logger.info("%s: shard %d dropped %d rows a later append replaced", root, shard, dropped)
    run.touched.add(shard)
    run.rewritten.add(shard)
    return True


def _check_audio(run: _Run, shards: list[int]) -> None:
    """A stored shard is embedded again only from its source's audio: a file that is gone (and was
    not rejected before) is an error naming the shard, its source and the fix."""
    root, plans = run.root, run.plans
    assert plans is not None
    if not shards:
        return
    try:
        rejected = {str(r["id"]) for r in read_rejected(root)}
    except RagFlamingoError:
        rejected = set()
    for shard in shards:
        source = plans.owner(shard).source
        audio_root = Path(source.audio_root)
        rows = [r for r in plans.expected_rows(shard) if str(r["id"]) not in rejected]
        gone = [path for path in (resolve_path(r, audio_root) for r in rows) if not path.is_file()]
        if gone:
            more = f" (and {len(gone) - 1} more of its files)" if len(gone) > 1 else ""
            raise StoreError(
                f"{root}: shard {shard} must be embedded again, but {gone[0]}{more} of its source "
                f"{source.name} ({source.manifest}) is gone; put the audio back under {audio_root} and "
                f"rerun, or delete {root} and build it again from the audio you have"
            )


def _embed_pending(run: _Run) -> EmbedStats:
    """Embed this rank's share of the shards not done yet; the counts are summed over ranks."""
    cfg, ranks, root = run.cfg, run.ranks, run.root
    plans = run.plans if ranks.is_main else load_plans(root, recover=False)[0]
    done = set(done_shards(root))
    pending = [s for s in range(plans.end_shard) if s not in done] if plans is not None else []
    mine = [s for s in pending if ranks.owns(s)]
    logger.info("rank %d/%d: %d of %d shards to embed", ranks.rank, ranks.world, len(mine), len(pending))
    stats = EmbedStats()
    if mine:
        assert plans is not None
        encoder = run.get_encoder()
        _check_encoder(root, plans.encoder, encoder.fingerprint(), cfg.encoder)
        stats = embed_shards(
            plans,
            mine,
            root,
            encoder,
            cfg.batch_size,
            cfg.num_workers,
            cfg.min_seconds,
            cfg.progress and ranks.is_main,
            desc=f"embedding (rank {ranks.rank})" if ranks.world > 1 else "embedding",
        )
    run.touched |= set(pending)
    stats.embedded, stats.rejected = distributed.sum_over_ranks(ranks, [stats.embedded, stats.rejected])
    distributed.barrier(ranks)
    return stats


def _plan_append(run: _Run, source: SourceRecord, rows: list[dict]) -> None:
    """Rank 0: the manifest's rows against the stored ones; new and changed rows become a new plan."""
    root, plans = run.root, run.plans
    assert plans is not None
    stored = _stored_rows(root, plans)
    audio_root = source.audio_root
    hits: list[tuple[dict, Any]] = []  # (manifest row, stored row or None)
    for row in rows:
        recording, rid = row_key(row, audio_root)
        hit = stored.get((recording, rid)) or stored.get((recording, namespaced_id(audio_root, rid)))
        hits.append((row, hit))
    contents = iter(_contents([row for row, hit in hits if hit is not None], Path(audio_root)))
    taken = {rid: (row, src) for (row, _, src) in stored.values() for rid in [str(row["id"])]}
    items, renamed = [], {}
    counts = {"new": 0, "unchanged": 0, "changed": 0}
    for row, hit in hits:
        if hit is not None:
            stored_row, stored_content, _ = hit
            final = dict(row, id=stored_row["id"])
            if next(contents) == stored_content and row_fields(final) == row_fields(stored_row):
                counts["unchanged"] += 1
                continue
            counts["changed"] += 1
        else:
            rid = str(row["id"])
            new_id = rid if rid not in taken else namespaced_id(audio_root, rid)
            if new_id in taken:
                other, other_source = taken[rid]
                raise StoreError(
                    f"{root}: {row['path']} of {source.manifest} cannot be added: its id {rid!r} is the id "
                    f"of {other['path']} of {other_source.manifest}, and {new_id!r} is taken too; give "
                    f"the rows ids of their own (a manifest: dataset.manifest=...) or append them from a "
                    f"folder with another name"
                )
            if new_id != rid:
                renamed[rid] = new_id
            final = dict(row, id=new_id)
            taken[new_id] = (final, source)
            counts["new"] += 1
        items.append(final)
    if renamed:
        logger.warning(
            "append: %d ids are held by other recordings in the store; namespaced (e.g. %s -> %s)",
            len(renamed),
            *next(iter(renamed.items())),
        )
    if not items:
        run.unchanged = counts
        return
    plan = _new_plan(run, "append", source, items, plans.end_shard, counts, renamed)
    plan.save(root)
    run.plans, run.added = plans.with_plan(plan), plan
    for shard in range(plans.end_shard):  # the stored versions of the changed rows leave their shards
        marker = shard_marker(root, shard)
        if (marker is None or marker.key != run.plans.expected_key(shard)) and not _drop_replaced_rows(run, shard):
            raise StoreError(f"{root}: shard {shard} changed while appending; {_repair_hint(root)}")


def _stored_rows(root: Path, plans: StorePlans) -> dict[tuple[str, str], tuple[dict, str | None, SourceRecord]]:
    """Every stored row (indexed or rejected) by its row key: (plan row, content hash, source)."""
    stored = {}
    for shard in range(plans.end_shard):
        source = plans.owner(shard).source
        table = read_shard_items(root, shard)
        content = dict(zip((str(i) for i in table.column("id").to_pylist()), table.column("content").to_pylist()))
        content.update({str(r["id"]): r.get("content") for r in read_shard_rejected(root, shard)})
        for row in plans.expected_rows(shard):
            stored[row_key(row, source.audio_root)] = (row, content.get(str(row["id"])), source)
    return stored


def _contents(rows: list[dict], audio_root: Path) -> list[str | None]:
    """The content hash of each row's audio (None when it cannot be read), hashed in threads."""

    def one(row: dict) -> str | None:
        try:
            return content_key(resolve_path(row, audio_root), row.get("start"), row.get("end"))
        except AudioError:
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        return list(pool.map(one, rows))


def _repair_hint(root: Path) -> str:
    return f"repair it with `build_index store={root} mode=repair`"


def _finish(run: _Run, stats: EmbedStats) -> Summary:
    """Rank 0: merge the shards into items/index/rejected/store.json when anything changed or is
    damaged; the summary."""
    cfg, root, plans, info = run.cfg, run.root, run.plans, run.info
    assert plans is not None
    done = set(done_shards(root))
    missing = [s for s in range(plans.end_shard) if s not in done]
    if missing:
        raise StoreError(
            f"{root}: shards {missing[:5]} were not written (a rank failed?); rerun the same command to finish them"
        )
    problems = run.problems
    stale = info is None or bool(run.touched) or run.added is not None
    if info is not None:
        described = [(s.first_shard, s.end_shard, s.manifest_sha256) for s in info.build.sources]
        planned = [(s.first_shard, s.end_shard, s.manifest_sha256) for s in plans.sources()]
        if store_files(root) != info.files:  # a file damaged, missing, or not the one store.json records
            final = {rel: rec for rel, rec in info.files.items() if rel.split("/")[0] not in (SHARDS_DIR, PLANS_DIR)}
            problems += file_problems(root, final, verify=True)
            stale = True
        stale = stale or described != planned
    resumed = [p for p in plans.plans if p.first_shard not in run.committed and not run.info_corrupted]
    if not stale and not problems:
        assert info is not None
        status = "nothing-new" if run.unchanged is not None else "complete"
        return _finish_complete(cfg, root, info, status, stats, run.unchanged)
    for problem in problems:
        logger.warning("%s: %s", root, problem)
    features, refill = _kept_features(run, problems)
    fingerprint = plans.fingerprint or run.get_encoder().fingerprint()
    info = _merge_shards(cfg, root, plans, fingerprint, features, _index_options(run))
    if cfg.features or refill:
        _add_features(cfg, root, info, refill)
    added = run.added or (resumed[-1] if resumed else None)
    counts: dict | None = run.unchanged
    if added is not None:
        status, counts = ("built" if added.mode == "build" else "appended"), added.counts
    elif problems:
        status = "repaired"
    else:
        status = "nothing-new" if run.unchanged is not None else "complete"
    summary = _summary(root, info, status, stats, counts if cfg.mode == "append" or status == "appended" else None)
    summary.repaired = list(problems)
    summary.renamed = dict(added.renamed) if added is not None else {}
    summary.resumed = [
        f"the unfinished {p.mode} of {p.source.manifest} ({_counts_text(p.counts)})" for p in resumed if p is not added
    ]
    return summary


def _counts_text(counts: dict) -> str:
    return f"{counts.get('new', 0)} new, {counts.get('unchanged', 0)} unchanged, {counts.get('changed', 0)} changed"


def _index_options(run: _Run) -> IndexConfig:
    """The command's index options; a repair keeps the store's index type and metric (unless given)."""
    opts, info = run.cfg.index, run.info
    if run.cfg.mode == "repair" and opts.type == "auto" and info is not None:
        return replace(opts, type=info.index.type, metric=info.metric)
    return opts


def _kept_features(run: _Run, problems: list[str]) -> tuple[dict[str, FeatureRecord], list[str]]:
    """The feature caches kept after this run, and those of them to fill in for the shards that lack
    a file now (appended, replaced or repaired ones). A damaged feature file, and the file of a shard
    this run rewrote (or embedded again with another row count), is removed; a cache left without a
    shard's file is filled in by this run (with the options the command gives for ``features=<name>``,
    else with the checkpoint its fingerprint records: ``_add_features``)."""
    cfg, root, info, plans = run.cfg, run.root, run.info, run.plans
    assert plans is not None
    wanted = [cfg.features] if isinstance(cfg.features, str) else list(cfg.features or [])
    names = sorted(p.name for p in (root / FEATURES_DIR).glob("*") if p.is_dir())
    keep, refill = {}, []
    for name in names:
        for rel in [p.split(" ")[0] for p in problems if p.startswith(f"{FEATURES_DIR}/{name}/")]:
            (root / rel).unlink(missing_ok=True)
        for shard in run.touched:
            path = features_path(root, name, shard)
            marker = shard_marker(root, shard)
            if path.is_file() and (shard in run.rewritten or marker is None or _feature_rows(path) != marker.count):
                path.unlink()
        described = info.features.get(name) if info is not None else None
        complete = all(features_path(root, name, s).is_file() for s in range(plans.end_shard))
        if described is not None:
            keep[name] = described
            if not complete and name not in wanted:
                refill.append(name)
        elif info is None:
            logger.warning(
                "%s: features/%s are not described in store.json; add them with features=%s "
                "(only the missing ones are computed)",
                root,
                name,
                name,
            )
    return keep, refill


def _feature_rows(path: Path) -> int | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return int(handle.get_slice("mask").get_shape()[0])
    except Exception:  # safetensors raises its own SafetensorError
        return None


def _read_source(cfg: BuildIndexConfig, ranks: distributed.Ranks) -> tuple[SourceRecord, list[dict]]:
    """Resolve and validate the manifest (rank 0 first: a generated dataset is made once)."""
    if not ranks.is_main:
        distributed.barrier(ranks)
    manifest, audio_root = resolve_split(cfg.dataset, cfg.split)
    if ranks.is_main:
        distributed.barrier(ranks)
    rows = read_manifest(manifest, allow_outside_root=cfg.dataset.allow_outside_root)
    name = cfg.dataset.name or Path(manifest).stem
    return SourceRecord.from_manifest(name, split_name(cfg.dataset, cfg.split), manifest, audio_root), rows


def _encoder(options: dict, device: str | None):
    options = dict(options)
    name = options.pop("name", None)
    if not name:
        raise ConfigError("encoder.name is not set (pick one, e.g. encoder=aisfx)")
    if device and device != "auto" and not options.get("device"):
        options["device"] = device
    return build_encoder(name, **options)


def _rank_device(device: str | None, ranks: distributed.Ranks) -> str | None:
    """Under torchrun on a GPU host, rank r uses GPU ``local_rank`` (unless a device is forced)."""
    import torch

    if ranks.world > 1 and device in (None, "auto") and torch.cuda.is_available():
        return f"cuda:{ranks.local_rank % torch.cuda.device_count()}"
    return device


def _merge_shards(
    cfg: BuildIndexConfig,
    root: Path,
    plans: StorePlans,
    fingerprint: dict,
    features: dict[str, FeatureRecord],
    opts: IndexConfig,
) -> StoreInfo:
    """Index all shards and write items/index/rejected/store.json, its sources from the plans."""
    vectors, table = _shard_vectors(root, opts)
    rejected = [r for s in done_shards(root) for r in read_shard_rejected(root, s)]
    write_rejected(root, rejected)
    if vectors.shape[0] == 0:
        raise StoreError(
            f"{root}: none of the {len(rejected)} items could be used; the reasons are in {root / REJECTED_FILE}"
        )
    start = time.perf_counter()
    index, report = build_index(vectors, opts)
    logger.info("index built in %.1f s", time.perf_counter() - start)
    sources, row = plans.sources(), 0
    for src in sources:  # each source's rows: the items its shards hold now
        count = 0
        for shard in range(src.first_shard, src.end_shard):
            marker = shard_marker(root, shard)
            count += marker.count if marker is not None else 0
        src.first_row, src.end_row = row, row + count
        row += count
    records = table.to_pylist()
    info = StoreInfo(
        encoder=fingerprint,
        dim=int(vectors.shape[1]),
        count=int(vectors.shape[0]),
        metric=opts.metric,
        index=report,
        features=features,
        dataset=sources[0].dataset,
        build=BuildRecord(
            shard_size=plans.plans[0].shard_size, shards=plans.end_shard, sources=sources, rejected=len(rejected)
        ),
    )
    items = [item_from_record(r) for r in records]
    if isinstance(vectors, np.ndarray):
        info.build.label_precision = label_precision(vectors, items, row_recording_keys(info, items))
    else:
        logger.info("label precision is not measured above index.stream_above=%d items", opts.stream_above)
    write_store(root, info, index, records)
    return info


def _finish_complete(
    cfg: BuildIndexConfig, root: Path, info: StoreInfo, status: str, stats: EmbedStats, counts: dict | None
) -> Summary:
    logger.info("%s is already a complete store for this dataset and encoder", root)
    wanted = cfg.index.type
    reindex = (wanted != "auto" and wanted != info.index.type) or cfg.index.metric != info.metric
    if reindex and cfg.mode == "build":
        info = _reindex(cfg, root, info)  # another index over the stored vectors; nothing re-embedded
    if cfg.features:
        _add_features(cfg, root, info)
    return _summary(root, info, status, stats, counts)


def _shard_vectors(root: Path, opts: IndexConfig) -> tuple[np.ndarray | ShardRows, pa.Table]:
    """All stored vectors in memory, or above ``index.stream_above`` items the shards read block by
    block (the index is built without holding all vectors at once), with the items table."""
    rows = ShardRows(root)
    if rows.shape[0] <= opts.stream_above:
        return read_all_shards(root)
    return rows, read_shard_tables(root, rows.shards)


def _reindex(cfg: BuildIndexConfig, root: Path, info: StoreInfo) -> StoreInfo:
    vectors, table = _shard_vectors(root, cfg.index)
    index, report = build_index(vectors, cfg.index)
    info.index, info.metric = report, cfg.index.metric
    write_store(root, info, index, table.to_pylist())
    return info


# ----------------------------------------------------------------------------- features


def _features_only(cfg: BuildIndexConfig) -> Summary:
    root = Path(cfg.output)
    info = read_info(root)
    if info is None:
        raise StoreError(f"{root}: no complete store; build it first (build_index ... store={root})")
    if not cfg.features:
        raise ConfigError("mode=features needs features=<name> (e.g. features=clapcap)")
    _add_features(cfg, root, info)
    return _summary(root, info, "features", EmbedStats())


def _add_features(cfg: BuildIndexConfig, root: Path, info: StoreInfo, refill: Sequence[str] = ()) -> None:
    """Write the feature caches the command names (``features=<name>``, ``features_encoder.*``) and
    fill in the ``refill`` caches the store already had for the shards that lack them (an append's new
    shards), each with its recorded encoder; one that cannot be rebuilt is dropped with a warning."""
    names = [cfg.features] if isinstance(cfg.features, str) else list(cfg.features or [])
    shard_roots = _shard_roots(root, info)
    for name in [*names, *(n for n in refill if n not in names)]:
        if name in names:
            encoder = _encoder({"name": name, **dict(cfg.features_encoder or {})}, cfg.device)
        else:
            encoder = _recorded_feature_encoder(root, name, info.features[name], cfg.device)
            if encoder is None:
                del info.features[name]
                continue
        if not hasattr(encoder, "window_features"):
            raise ConfigError(f"features={name}: encoder {name!r} has no window_features()")
        described = write_feature_shards(
            root, name, encoder, shard_roots, cfg.batch_size, cfg.num_workers, cfg.progress
        )
        info.features[name] = described
    write_info(root, info)


def _recorded_feature_encoder(root: Path, name: str, record: FeatureRecord, device: str | None):
    """The encoder a store's feature cache was written with, from the checkpoint its fingerprint
    records (None, with a warning saying how to add the cache again, when it cannot be rebuilt)."""
    recorded = record.fingerprint
    options = {"checkpoint": recorded["checkpoint"]} if recorded.get("checkpoint") else {}
    problem = ""
    try:
        encoder = _encoder({"name": name, **options}, device)
        sha = encoder.fingerprint().get("checkpoint_sha256")
        if recorded.get("checkpoint_sha256") not in (None, sha):
            problem = f"its checkpoint {options.get('checkpoint')} has changed"
    except RagFlamingoError as exc:
        problem = str(exc)
    if problem:
        logger.warning(
            "%s: features/%s lack the new items and cannot be computed with their recorded encoder (%s); "
            "add them with features=%s features_encoder.checkpoint=... (only the missing ones are computed)",
            root,
            name,
            problem,
            name,
        )
        return None
    return encoder


def _shard_roots(root: Path, info: StoreInfo) -> dict[int, Path]:
    roots = {}
    for src in info.build.sources:
        for shard in range(src.first_shard, src.end_shard):
            roots[shard] = Path(src.audio_root)
    missing = [s for s in done_shards(root) if s not in roots]
    if missing:
        raise StoreError(f"{root}: store.json does not say where the audio of shards {missing[:5]} lives; rebuild it")
    return roots


# ----------------------------------------------------------------------------- summary


def _summary(root: Path, info: StoreInfo, status: str, stats: EmbedStats, counts: dict | None = None) -> Summary:
    """The run's summary; ``counts`` (an append's manifest rows: new / unchanged / changed) adds its line."""
    counts = counts or {}
    return Summary(
        output=root,
        status=status,
        count=info.count,
        rejected=info.build.rejected,
        skipped=int(counts.get("unchanged", 0)),
        embedded=stats.embedded,
        embed_seconds=stats.seconds,
        index=info.index,
        encoder=f"{info.encoder.get('name')} (dim {info.dim}, {info.metric})",
        features=sorted(info.features),
        quality=info.build.label_precision,
        new=int(counts.get("new", 0)),
        changed=int(counts.get("changed", 0)),
        rows_line=bool(counts),
    )


def resolve(cfg: BuildIndexConfig) -> BuildIndexConfig:
    """``cfg`` with its store folder (``store``: `components.store_path`) and its split (a role such as
    ``index`` looked up in ``dataset.splits``) resolved: what the pipeline runs on."""
    split = split_name(cfg.dataset, cfg.split)
    return replace(cfg, store=str(store_path(cfg, split_key="split").expanduser()), split=split)


__all__ = ["Summary", "resolve", "run"]
