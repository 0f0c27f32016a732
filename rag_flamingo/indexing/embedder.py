"""Batched embedding of decoded items, written shard by shard with done markers (each keeping its plan)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..encoders.base import AudioEncoder
from ..errors import AudioError
from ..store.items import content_key, item_record
from ..store.shards import write_shard
from .plan import BuildPlan, StorePlans
from .reader import decode_loader, decode_spec, plan_entries, resolve_path

logger = logging.getLogger(__name__)


@dataclass
class EmbedStats:
    shards: int = 0
    embedded: int = 0
    rejected: int = 0
    seconds: float = 0.0
    rejected_examples: list[str] = field(default_factory=list)


def rejection(item: dict, reason: str, shard: int, content: str | None = None) -> dict:
    return {"id": item["id"], "path": item["path"], "reason": reason, "shard": shard, "content": content}


def _content(item: dict, audio_root: Path) -> str | None:
    """The content key of a rejected item's audio (None when its file cannot be read): an append
    retries the item once its file changes."""
    try:
        return content_key(resolve_path(item, audio_root), item.get("start"), item.get("end"))
    except AudioError:
        return None


def embed_shards(
    plans: StorePlans,
    shards: list[int],
    root: Path,
    encoder: AudioEncoder,
    batch_size: int,
    num_workers: int,
    min_seconds: float = 0.1,
    progress: bool = True,
    desc: str = "embedding",
) -> EmbedStats:
    """Decode, embed and write ``shards`` of the store's ``plans`` into ``root`` (each with its done
    marker, which keeps the shard's plan rows and source); the rows of a shard are the ones its plan
    gives it that no later plan replaces."""
    import time

    stats = EmbedStats()
    start = time.perf_counter()
    by_plan: dict[int, list[int]] = {}
    for shard in shards:
        by_plan.setdefault(plans.owner(shard).first_shard, []).append(shard)
    total = sum(len(plans.expected_rows(s)) for s in shards)
    bar = tqdm(total=total, unit="clip", desc=desc, disable=not progress or not total, dynamic_ncols=True)
    for first, mine in by_plan.items():
        plan = plans.owner(first)
        _embed_plan_shards(plans, plan, mine, root, encoder, batch_size, num_workers, min_seconds, stats, bar)
    bar.close()
    stats.seconds = time.perf_counter() - start
    return stats


def _embed_plan_shards(
    plans: StorePlans,
    plan: BuildPlan,
    shards: list[int],
    root: Path,
    encoder: AudioEncoder,
    batch_size: int,
    num_workers: int,
    min_seconds: float,
    stats: EmbedStats,
    bar: tqdm,
) -> None:
    audio_root, split, header = Path(plan.source.audio_root), plan.source.split, plan.describe()

    def write(shard: int, vectors: list[np.ndarray], records: list[dict], rejected: list[dict]) -> None:
        emb = np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), np.float32)
        key, rows = plans.expected_key(shard), plans.expected_rows(shard)
        write_shard(root, shard, emb, records, rejected, key=key, source=header, rows=rows)
        stats.shards += 1
        stats.embedded += len(records)
        stats.rejected += len(rejected)
        bar.set_postfix(shard=shard, rejected=stats.rejected)

    work = [(s, plans.expected_rows(s)) for s in shards]
    for shard, items in work:
        if not items:  # every row of the shard was replaced by a later plan: an empty shard
            write(shard, [], [], [])
    work = [(s, items) for s, items in work if items]
    if not work:
        return
    entries = plan_entries(work, batch_size)
    loader = decode_loader(
        entries, audio_root, decode_spec(encoder, min_seconds), batch_size, num_workers, with_content=True
    )
    vectors: list[np.ndarray] = []
    records: list[dict] = []
    rejected: list[dict] = []
    batch: list[tuple[dict, np.ndarray]] = []  # (item with its content key, waveform)
    for i, wave, reason, content in loader:
        entry = entries[i]
        if entry.shard_start:
            vectors, records, rejected, batch = [], [], [], []
        if reason is not None:
            rejected.append(rejection(entry.item, reason, entry.shard, _content(entry.item, audio_root)))
            if len(stats.rejected_examples) < 5:
                stats.rejected_examples.append(f"{entry.item['id']}: {reason}")
        else:
            batch.append((dict(entry.item, content=content), wave.numpy()))
        if entry.batch_end and batch:
            vectors.append(np.asarray(encoder.embed([w for _, w in batch]), np.float32))
            records.extend(item_record(item, split) for item, _ in batch)
            bar.update(len(batch))
            batch = []
        if reason is not None:
            bar.update(1)
        if entry.shard_end:
            write(entry.shard, vectors, records, rejected)
