"""Parallel decoding: manifest items -> mono float32 waveforms at the encoder's rate.

A torch DataLoader runs ``num_workers`` processes; each decodes one *chunk* (up to ``batch_size``
consecutive items of one shard) with ``rag_flamingo.audio.load_audio``, reading only the segment
the encoder's crop needs (``max_seconds``), and checks it with ``check_usable``. Chunks never span
two shards and arrive in order, so the embedding batches (and thus the vectors, bit for bit) are
the same however the run is interrupted, resumed or split across ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rag_flamingo.audio import check_usable, load_audio
from rag_flamingo.errors import AudioError


@dataclass(frozen=True)
class DecodeSpec:
    """How to decode for one encoder."""

    sample_rate: int
    max_seconds: float | None = None  # the encoder's crop: seconds read from the segment start
    min_seconds: float = 0.1


@dataclass(frozen=True)
class Chunk:
    shard: int
    first: bool  # first chunk of its shard
    last: bool  # last chunk of its shard


def resolve_path(item: dict, audio_root: Path) -> Path:
    path = Path(item["path"]).expanduser()
    return path if path.is_absolute() else Path(audio_root) / path


def decode_item(item: dict, audio_root: Path, spec: DecodeSpec) -> np.ndarray:
    """The item's waveform, or AudioError with the reason it cannot be used."""
    path = resolve_path(item, audio_root)
    wave = load_audio(path, spec.sample_rate, start=item.get("start"), end=item.get("end"),
                      max_seconds=spec.max_seconds)
    check_usable(wave, spec.sample_rate, path, min_seconds=spec.min_seconds)
    return wave


class ChunkDataset(Dataset):
    """Element i = chunk i: a list of (item, waveform or None, rejection reason or None)."""

    def __init__(self, chunks: list[tuple[Chunk, list[dict]]], audio_root: Path, spec: DecodeSpec):
        self.chunks, self.audio_root, self.spec = chunks, Path(audio_root), spec

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int):
        chunk, items = self.chunks[i]
        decoded = []
        for item in items:
            try:
                wave = torch.from_numpy(decode_item(item, self.audio_root, self.spec))
                decoded.append((item, wave, None))
            except AudioError as exc:
                decoded.append((item, None, exc.reason))
        return chunk, decoded


def chunk_shards(shards: list[tuple[int, list[dict]]], batch_size: int) -> list[tuple[Chunk, list[dict]]]:
    """Split each shard's items into consecutive chunks of ``batch_size`` (a shard may be empty)."""
    chunks = []
    for shard, items in shards:
        parts = [items[i : i + batch_size] for i in range(0, len(items), batch_size)] or [[]]
        for j, part in enumerate(parts):
            chunks.append((Chunk(shard, j == 0, j == len(parts) - 1), part))
    return chunks


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is single-threaded; leave the cores to the encoder


def decode_loader(shards: list[tuple[int, list[dict]]], audio_root: Path, spec: DecodeSpec,
                  batch_size: int, num_workers: int) -> DataLoader:
    """Ordered chunks of decoded items, decoded ``num_workers`` at a time."""
    dataset = ChunkDataset(chunk_shards(shards, batch_size), audio_root, spec)
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                      collate_fn=_identity, worker_init_fn=_worker_init if num_workers else None,
                      prefetch_factor=2 if num_workers else None, persistent_workers=False)


def _identity(x):
    return x
