"""Batched embedding of decoded items, written shard by shard with done markers."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rag_flamingo.encoders.base import AudioEncoder
from rag_flamingo.store import item_record, write_shard

from .plan import BuildPlan
from .reader import decode_loader, decode_spec, plan_entries

logger = logging.getLogger(__name__)


@dataclass
class EmbedStats:
    shards: int = 0
    embedded: int = 0
    rejected: int = 0
    seconds: float = 0.0
    rejected_examples: list[str] = field(default_factory=list)


def rejection(item: dict, reason: str, shard: int) -> dict:
    return {"id": item["id"], "path": item["path"], "reason": reason, "shard": shard}


def embed_shards(
    plan: BuildPlan,
    shards: list[int],
    root: Path,
    encoder: AudioEncoder,
    audio_root: Path,
    batch_size: int,
    num_workers: int,
    min_seconds: float = 0.1,
    progress: bool = True,
    desc: str = "embedding",
) -> EmbedStats:
    """Decode, embed and write ``shards`` of ``plan`` into ``root`` (each with its done marker)."""
    import time

    stats = EmbedStats()
    work = [(s, plan.shard_items(s)) for s in shards]
    total = sum(len(items) for _, items in work)
    if not total:
        return stats
    entries = plan_entries(work, batch_size)
    loader = decode_loader(
        entries, audio_root, decode_spec(encoder, min_seconds), batch_size, num_workers, with_content=True
    )
    split = plan.source.split
    vectors: list[np.ndarray] = []
    records: list[dict] = []
    rejected: list[dict] = []
    batch: list[tuple[dict, np.ndarray]] = []  # (item with its content key, waveform)
    start = time.perf_counter()
    bar = tqdm(total=total, unit="clip", desc=desc, disable=not progress, dynamic_ncols=True)
    for i, wave, reason, content in loader:
        entry = entries[i]
        if entry.shard_start:
            vectors, records, rejected, batch = [], [], [], []
        if reason is not None:
            rejected.append(rejection(entry.item, reason, entry.shard))
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
            emb = np.concatenate(vectors) if vectors else np.zeros((0, encoder.dim), np.float32)
            write_shard(root, entry.shard, emb, records, rejected, key=plan.shard_key(entry.shard))
            stats.shards += 1
            stats.embedded += len(records)
            stats.rejected += len(rejected)
            bar.set_postfix(shard=entry.shard, rejected=stats.rejected)
    bar.close()
    stats.seconds = time.perf_counter() - start
    return stats
