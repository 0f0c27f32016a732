"""The runs behind ``build_index``: ``mode=build`` (resumable), ``mode=append``, ``mode=features``.

Every run holds the store's write lock (rank 0 under torchrun): a second build of the same store
refuses at once.
build:    plan (manifest order -> fixed shards) -> decode/embed/write the shards not yet done
          (this rank's share) -> barrier -> rank 0 merges the shards, builds + tunes the FAISS
          index, writes items/index/rejected/store.json -> optional feature cache -> summary.
          On a complete store it checks every file against store.json: final files that are
          missing or damaged are rebuilt from the shards, a damaged shard is re-embedded alone
          (status "repaired"); a corrupted store.json is rebuilt from the shards.
append:   the same for the manifest rows whose ids the store does not hold yet, in new shards
          after the existing ones; the index is rebuilt from all shards (existing vectors are
          read back, never re-embedded), so the result equals a build over the union.
features: add ``features/<name>/`` to a complete store (nothing is re-embedded).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rag_flamingo import distributed, paths
from rag_flamingo.datasets.manifest import read_manifest
from rag_flamingo.datasets.sources import resolve_split, split_name
from rag_flamingo.encoders.base import build_encoder
from rag_flamingo.errors import ConfigError, StoreError
from rag_flamingo.store import (
    FEATURES_DIR,
    INFO_FILE,
    REJECTED_FILE,
    SHARDS_DIR,
    BuildRecord,
    FeatureRecord,
    IndexRecord,
    IndexStore,
    SourceRecord,
    StoreInfo,
    build_lock,
    check_format,
    comparable_fingerprint,
    done_shards,
    drop_shard,
    file_problems,
    item_from_record,
    read_all_shards,
    read_info,
    read_rejected,
    read_shard_rejected,
    row_recording_keys,
    shard_problem,
    write_info,
    write_rejected,
    write_store,
)

from .embedder import EmbedStats, embed_shards
from .faiss_index import IndexOptions, build_index
from .features import write_feature_shards
from .ondisk import ShardRows, read_shard_tables
from .plan import BuildPlan
from .quality import label_precision

logger = logging.getLogger(__name__)
MODES = ("build", "append", "features")


@dataclass
class BuildConfig:
    output: Path
    dataset: dict
    encoder: dict
    index: IndexOptions
    split: str = "index"
    mode: str = "build"
    features: str | None = None
    features_encoder: dict = field(default_factory=dict)
    shard_size: int = 1000
    batch_size: int = 32
    num_workers: int = 2
    device: str | None = None
    min_seconds: float = 0.1
    progress: bool = True


@dataclass
class Summary:
    output: Path
    status: str  # built | appended | complete | repaired | features | nothing-new
    count: int = 0
    rejected: int = 0
    skipped: int = 0
    embedded: int = 0
    embed_seconds: float = 0.0
    index: IndexRecord = field(default_factory=lambda: IndexRecord(type=""))
    encoder: str = ""
    features: list[str] = field(default_factory=list)
    quality: dict | None = None
    repaired: list[str] = field(default_factory=list)  # what was found broken and rebuilt

    def text(self) -> str:
        idx = self.index
        params = ", ".join(f"{k}={v}" for k, v in idx.search_params.items()) or "exact"
        rate = f" ({self.embedded / self.embed_seconds:.1f} clips/s)" if self.embed_seconds > 0 else ""
        lines = [
            f"build_index: {self.status} {self.output}",
            f"  items     {self.count} indexed, {self.rejected} rejected"
            + (f" (reasons in {self.output / REJECTED_FILE})" if self.rejected else "")
            + (f", {self.skipped} skipped (already in the store)" if self.skipped else ""),
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
        lines += [f"  repaired  {problem}" for problem in self.repaired]
        return "\n".join(lines)


def run(cfg: BuildConfig) -> Summary | None:
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


# ----------------------------------------------------------------------------- build / append


def _build(cfg: BuildConfig, ranks: distributed.Ranks) -> Summary | None:
    source, rows = _read_source(cfg, ranks)
    if not ranks.is_main:
        return _build_source(cfg, ranks, source, rows)
    with build_lock(cfg.output):
        return _build_source(cfg, ranks, source, rows)


def _build_source(cfg: BuildConfig, ranks: distributed.Ranks, source: SourceRecord, rows: list[dict]) -> Summary | None:
    root = Path(cfg.output)
    encoder = _encoder(cfg.encoder, _rank_device(cfg.device, ranks))
    fingerprint = encoder.fingerprint()
    existing, repaired = _existing_info(root, cfg.mode, ranks)
    if existing is not None:
        check_format(root, existing)
        BuildPlan.drop_committed(root, existing.build.shards)
    skipped: list[str] = []
    if cfg.mode == "build":
        if existing is not None:
            if not ranks.is_main:
                return None
            _check_complete_store(root, existing, source, fingerprint, cfg.shard_size)
            return _check_or_repair(cfg, root, existing, source, rows, encoder, fingerprint)
        first_shard, items = 0, rows
    else:
        if existing is None:
            raise StoreError(
                f"{root}: no complete store to append to; build it first with "
                f"`build_index ... output={root}` (mode=build)"
            )
        store = IndexStore.open(root)
        store.check_encoder(fingerprint)
        known = _known_ids(store)
        items = [r for r in rows if r["id"] not in known]
        skipped = [r["id"] for r in rows if r["id"] in known]
        if skipped:
            logger.info(
                "append: %d ids already in the store are skipped (e.g. %s)", len(skipped), ", ".join(skipped[:5])
            )
        first_shard = existing.build.shards
        if not items:
            summary = _summary(root, existing, "nothing-new", EmbedStats(), len(skipped))
            return summary if ranks.is_main else None
    source.rows = len(items)
    plan = BuildPlan(cfg.mode, source, comparable_fingerprint(fingerprint), cfg.shard_size, first_shard, items)
    if ranks.is_main:
        repaired += _drop_damaged_shards(root, plan.shards).values()
        plan.claim(root)
    distributed.barrier(ranks)
    if not ranks.is_main:
        plan.claim(root)
    stats = _embed_pending(cfg, ranks, root, plan, encoder)
    if not ranks.is_main:
        return None
    missing = plan.pending(root)
    if missing:
        raise StoreError(
            f"{root}: shards {missing[:5]} were not written (a rank failed?); rerun the same command to finish them"
        )
    info = _finalize(cfg, root, plan, fingerprint, existing)
    BuildPlan.release(root)
    if cfg.features:
        _add_features(cfg, root, info)
    status = "repaired" if repaired else "built" if cfg.mode == "build" else "appended"
    return _summary(root, info, status, stats, len(skipped), repaired)


def _embed_pending(cfg: BuildConfig, ranks: distributed.Ranks, root: Path, plan: BuildPlan, encoder) -> EmbedStats:
    """Embed this rank's share of the plan's shards not yet done; the counts are summed over ranks."""
    mine = [s for s in plan.pending(root) if ranks.owns(s)]
    logger.info("rank %d/%d: %d of %d shards to embed", ranks.rank, ranks.world, len(mine), plan.shard_count)
    stats = embed_shards(
        plan,
        mine,
        root,
        encoder,
        Path(plan.source.audio_root),
        cfg.batch_size,
        cfg.num_workers,
        cfg.min_seconds,
        cfg.progress and ranks.is_main,
        desc=f"embedding (rank {ranks.rank})" if ranks.world > 1 else "embedding",
    )
    stats.embedded, stats.rejected = distributed.sum_over_ranks(ranks, [stats.embedded, stats.rejected])
    distributed.barrier(ranks)
    return stats


def _existing_info(root: Path, mode: str, ranks: distributed.Ranks) -> tuple[StoreInfo | None, list[str]]:
    """store.json of the output, if any. A corrupted one, on a build, is set aside (rank 0 removes
    it) so the store is rebuilt from its shards; an append needs it intact."""
    try:
        return read_info(root), []
    except StoreError as exc:
        if mode != "build":
            raise
        if ranks.is_main:
            logger.warning("%s; rebuilding it from the shards", exc)
            (root / INFO_FILE).unlink(missing_ok=True)
        return None, [f"{INFO_FILE} was corrupted"]


def _drop_damaged_shards(root: Path, shards) -> dict[int, str]:
    """Forget the complete shards among ``shards`` that fail their checksums or cannot be read;
    returns what was wrong with each."""
    problems = {}
    done = set(done_shards(root))
    for shard in shards:
        problem = shard_problem(root, shard) if shard in done else None
        if problem:
            logger.warning("%s: shard %d is damaged (%s); it is embedded again", root, shard, problem)
            drop_shard(root, shard)
            problems[shard] = f"shard {shard} re-embedded ({problem})"
    return problems


def _check_or_repair(
    cfg: BuildConfig, root: Path, info: StoreInfo, source: SourceRecord, rows: list[dict], encoder, fingerprint: dict
) -> Summary:
    """A complete store for this command: verify every file; rebuild what is missing or damaged."""
    final = {rel: rec for rel, rec in info.files.items() if not rel.startswith(f"{SHARDS_DIR}/")}
    problems = file_problems(root, final, verify=True)
    expected = range(info.build.shards)
    damaged = _drop_damaged_shards(root, expected)
    missing = [s for s in expected if s not in set(done_shards(root))]
    problems += [damaged.get(s, f"shard {s} re-embedded (its done marker is missing)") for s in missing]
    if not problems:
        return _finish_complete(cfg, root, info)
    for problem in problems:
        logger.warning("%s: %s", root, problem)
    plan = BuildPlan("build", source, comparable_fingerprint(fingerprint), cfg.shard_size, 0, rows)
    foreign = [s for s in missing if s not in plan.shards]
    if foreign:
        raise StoreError(
            f"{root}: shards {foreign[:5]} of an appended manifest are damaged; delete {root} "
            f"and rerun the build and append commands"
        )
    stats = embed_shards(
        plan,
        missing,
        root,
        encoder,
        Path(source.audio_root),
        cfg.batch_size,
        cfg.num_workers,
        cfg.min_seconds,
        cfg.progress,
    )
    features = _intact_features(cfg, root, info, problems)
    info = _merge_shards(cfg, root, list(info.build.sources), info.encoder, features)
    if cfg.features:
        _add_features(cfg, root, info)
    return _summary(root, info, "repaired", stats, 0, problems)


def _intact_features(cfg: BuildConfig, root: Path, info: StoreInfo, problems: list[str]) -> dict[str, FeatureRecord]:
    """The feature caches to keep after a repair; a damaged feature file is removed (regenerated
    when the command names its features, otherwise its cache is dropped with a warning)."""
    keep = {}
    wanted = [cfg.features] if isinstance(cfg.features, str) else list(cfg.features or [])
    for name, described in info.features.items():
        damaged = [p.split(" ")[0] for p in problems if p.startswith(f"{FEATURES_DIR}/{name}/")]
        for rel in damaged:
            (root / rel).unlink(missing_ok=True)
        if damaged and name not in wanted:
            logger.warning(
                "%s: features/%s was damaged and is dropped; add it again with features=%s", root, name, name
            )
            problems.append(f"features/{name} dropped (damaged); add it again with features={name}")
            _remove_tree(root / FEATURES_DIR / name)
        else:
            keep[name] = described
    return keep


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _read_source(cfg: BuildConfig, ranks: distributed.Ranks) -> tuple[SourceRecord, list[dict]]:
    """Resolve and validate the manifest (rank 0 first: a generated dataset is made once)."""
    if not ranks.is_main:
        distributed.barrier(ranks)
    manifest, audio_root = resolve_split(cfg.dataset, cfg.split)
    if ranks.is_main:
        distributed.barrier(ranks)
    rows = read_manifest(manifest, allow_outside_root=bool(cfg.dataset.get("allow_outside_root")))
    name = str(cfg.dataset.get("name") or Path(manifest).stem)
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


def _known_ids(store: IndexStore) -> set[str]:
    """Ids the store already holds: indexed or rejected (an append neither re-embeds nor retries them)."""
    return {str(it["id"]) for it in store.items} | {r["id"] for r in read_rejected(store.root)}


def _check_complete_store(
    root: Path, info: StoreInfo, source: SourceRecord, fingerprint: dict, shard_size: int
) -> None:
    sources = info.build.sources
    same = (
        len(sources) >= 1
        and sources[0].manifest_sha256 == source.manifest_sha256
        and comparable_fingerprint(info.encoder) == comparable_fingerprint(fingerprint)
        and info.build.shard_size == shard_size
    )
    if not same:
        raise StoreError(
            f"{root}: already holds a complete store built from another manifest, encoder "
            f"or shard_size; pick another output=, delete it, or add items with mode=append"
        )


def _finalize(
    cfg: BuildConfig, root: Path, plan: BuildPlan, fingerprint: dict, existing: StoreInfo | None
) -> StoreInfo:
    sources = list(existing.build.sources) if existing else []
    sources.append(
        replace(
            plan.source,
            first_shard=plan.first_shard,
            end_shard=plan.first_shard + plan.shard_count,
            first_row=existing.count if existing else 0,
            end_row=None,
        )
    )  # end_row: set by the merge
    if existing and existing.features:
        logger.warning(
            "appended items have no cached features; rerun with features=%s to add them", ",".join(existing.features)
        )
    # no features: appended shards have none yet (re-added by the caller when requested)
    return _merge_shards(cfg, root, sources, fingerprint, {})


def _merge_shards(
    cfg: BuildConfig, root: Path, sources: list[SourceRecord], fingerprint: dict, features: dict[str, FeatureRecord]
) -> StoreInfo:
    """Index all complete shards and write items/index/rejected/store.json for ``sources``."""
    vectors, table = _shard_vectors(root, cfg.index)
    rejected = [r for s in done_shards(root) for r in read_shard_rejected(root, s)]
    write_rejected(root, rejected)
    if vectors.shape[0] == 0:
        raise StoreError(
            f"{root}: none of the {len(rejected)} items could be used; the reasons are in {root / REJECTED_FILE}"
        )
    start = time.perf_counter()
    index, report = build_index(vectors, cfg.index)
    logger.info("index built in %.1f s", time.perf_counter() - start)
    if sources[-1].end_row is None:
        sources[-1].end_row = int(vectors.shape[0])
    records = table.to_pylist()
    info = StoreInfo(
        encoder=fingerprint,
        dim=int(vectors.shape[1]),
        count=int(vectors.shape[0]),
        metric=cfg.index.metric,
        index=report,
        features=features,
        dataset=sources[0].dataset,
        build=BuildRecord(
            shard_size=cfg.shard_size, shards=sources[-1].end_shard, sources=sources, rejected=len(rejected)
        ),
    )
    items = [item_from_record(r) for r in records]
    if isinstance(vectors, np.ndarray):
        info.build.label_precision = label_precision(vectors, items, row_recording_keys(info, items))
    else:
        logger.info("label precision is not measured above index.stream_above=%d items", cfg.index.stream_above)
    write_store(root, info, index, records)
    return info


def _finish_complete(cfg: BuildConfig, root: Path, info: StoreInfo) -> Summary:
    logger.info("%s is already a complete store for this dataset and encoder", root)
    wanted = cfg.index.type
    if (wanted != "auto" and wanted != info.index.type) or cfg.index.metric != info.metric:
        info = _reindex(cfg, root, info)  # another index over the stored vectors; nothing re-embedded
    if cfg.features:
        _add_features(cfg, root, info)
    return _summary(root, info, "complete", EmbedStats(), 0)


def _shard_vectors(root: Path, opts: IndexOptions) -> tuple[np.ndarray | ShardRows, pa.Table]:
    """All stored vectors in memory, or above ``index.stream_above`` items the shards read block by
    block (the index is built without holding all vectors at once), with the items table."""
    rows = ShardRows(root)
    if rows.shape[0] <= opts.stream_above:
        return read_all_shards(root)
    return rows, read_shard_tables(root, rows.shards)


def _reindex(cfg: BuildConfig, root: Path, info: StoreInfo) -> StoreInfo:
    vectors, table = _shard_vectors(root, cfg.index)
    index, report = build_index(vectors, cfg.index)
    info.index, info.metric = report, cfg.index.metric
    write_store(root, info, index, table.to_pylist())
    return info


# ----------------------------------------------------------------------------- features


def _features_only(cfg: BuildConfig) -> Summary:
    root = Path(cfg.output)
    info = read_info(root)
    if info is None:
        raise StoreError(f"{root}: no complete store; build it first (build_index ... output={root})")
    if not cfg.features:
        raise ConfigError("mode=features needs features=<name> (e.g. features=clapcap)")
    _add_features(cfg, root, info)
    return _summary(root, info, "features", EmbedStats(), 0)


def _add_features(cfg: BuildConfig, root: Path, info: StoreInfo) -> None:
    names = [cfg.features] if isinstance(cfg.features, str) else list(cfg.features or [])
    shard_roots = _shard_roots(root, info)
    for name in names:
        options = dict(cfg.features_encoder or {})
        encoder = _encoder({"name": name, **options}, cfg.device)
        if not hasattr(encoder, "window_features"):
            raise ConfigError(f"features={name}: encoder {name!r} has no window_features()")
        described = write_feature_shards(
            root, name, encoder, shard_roots, cfg.batch_size, cfg.num_workers, cfg.progress
        )
        info.features[name] = described
    write_info(root, info)


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


def _summary(
    root: Path, info: StoreInfo, status: str, stats: EmbedStats, skipped: int, repaired: list[str] | None = None
) -> Summary:
    return Summary(
        output=root,
        status=status,
        count=info.count,
        rejected=info.build.rejected,
        skipped=skipped,
        embedded=stats.embedded,
        embed_seconds=stats.seconds,
        index=info.index,
        encoder=f"{info.encoder.get('name')} (dim {info.dim}, {info.metric})",
        features=sorted(info.features),
        quality=info.build.label_precision,
        repaired=list(repaired or []),
    )


def config_from_dict(cfg: dict[str, Any]) -> BuildConfig:
    """A BuildConfig from the composed Hydra config (as a plain dict)."""
    split = split_name(cfg["dataset"], str(cfg.get("split") or "index"))
    store = cfg.get("store") or paths.default_store(
        cfg["cache_root"], cfg["dataset"]["name"], split, cfg["encoder"]["name"]
    )
    features = cfg.get("features")
    return BuildConfig(
        output=Path(store).expanduser(),
        dataset=dict(cfg["dataset"]),
        encoder=dict(cfg["encoder"]),
        index=IndexOptions.from_config(cfg.get("index") or {}),
        split=split,
        mode=str(cfg.get("mode") or "build"),
        features=features or None,
        features_encoder=dict(cfg.get("features_encoder") or {}),
        shard_size=int(cfg.get("shard_size", 1000)),
        batch_size=int(cfg.get("batch_size", 32)),
        num_workers=int(cfg.get("num_workers", 2)),
        device=cfg.get("device"),
        min_seconds=float(cfg.get("min_seconds", 0.1)),
        progress=bool(cfg.get("progress", True)),
    )


__all__ = ["BuildConfig", "Summary", "run", "config_from_dict"]
