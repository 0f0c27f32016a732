"""Parallel decoding: manifest items -> mono float32 waveforms at the encoder's rate.

A torch DataLoader runs ``num_workers`` processes that decode items (about one batch ahead of the
encoder) with ``rag_flamingo.audio.load_audio``, reading only the segment the encoder's crop needs
(``max_seconds``), check them with ``check_usable`` and, when asked, digest the file's bytes
(``content_key``) while they have it. On Linux the workers die with their parent (even a kill -9).
Items arrive in order; embedding batches are fixed runs of ``batch_size`` items inside one shard, so
the batches (and thus the vectors, bit for bit) are the same however the run is interrupted, resumed
or split across ranks.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..audio import check_usable, decode_key, load_audio
from ..encoders.base import AudioEncoder
from ..errors import AudioError
from ..store.items import content_key


@dataclass(frozen=True)
class DecodeSpec:
    """How to decode for one encoder."""

    sample_rate: int
    max_seconds: float | None = None  # the encoder's crop: seconds read from the segment start
    min_seconds: float = 0.1
    length_rule: str = "soxr"  # resampled length (rag_flamingo.audio.DECODE_LENGTHS)


@dataclass(frozen=True)
class Entry:
    """One item in decoding order, with the batch/shard boundaries it closes."""

    shard: int
    item: dict
    shard_start: bool  # first item of its shard
    batch_end: bool  # last item of its embedding batch (batches never cross a shard)
    shard_end: bool  # last item of its shard


def decode_spec(encoder: AudioEncoder, min_seconds: float = 0.1) -> DecodeSpec:
    """The encoder's rate, crop and length rule; only ``max_seconds`` of each clip is read from disk."""
    sample_rate, rule, max_seconds = decode_key(encoder)  # what the query side decodes too
    return DecodeSpec(sample_rate, max_seconds, min_seconds, rule)


def resolve_path(item: dict, audio_root: Path) -> Path:
    path = Path(item["path"]).expanduser()
    return path if path.is_absolute() else Path(audio_root) / path


def decode_item(item: dict, audio_root: Path, spec: DecodeSpec) -> np.ndarray:
    """The item's waveform, or AudioError with the reason it cannot be used."""
    path = resolve_path(item, audio_root)
    wave = load_audio(
        path,
        spec.sample_rate,
        start=item.get("start"),
        end=item.get("end"),
        max_seconds=spec.max_seconds,
        length_rule=spec.length_rule,
    )
    check_usable(wave, spec.sample_rate, path, min_seconds=spec.min_seconds)
    return wave


class DecodeDataset(Dataset):
    """Element i = (i, waveform tensor or None, rejection reason or None, content key or None) for
    entry i; the content key is computed when ``with_content`` (and the item decoded)."""

    def __init__(self, entries: list[Entry], audio_root: Path, spec: DecodeSpec, with_content: bool = False):
        self.entries, self.audio_root, self.spec = entries, Path(audio_root), spec
        self.with_content = with_content

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        item = self.entries[i].item
        try:
            wave = torch.from_numpy(decode_item(item, self.audio_root, self.spec))
            content = (
                content_key(resolve_path(item, self.audio_root), item.get("start"), item.get("end"))
                if self.with_content
                else None
            )
            return i, wave, None, content
        except AudioError as exc:
            return i, None, exc.reason, None


def plan_entries(shards: list[tuple[int, list[dict]]], batch_size: int) -> list[Entry]:
    """Items of each shard in order, cut into consecutive batches of ``batch_size``."""
    entries = []
    for shard, items in shards:
        for j, item in enumerate(items):
            last = j == len(items) - 1
            entries.append(Entry(shard, item, j == 0, last or (j + 1) % batch_size == 0, last))
    return entries


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def exit_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _worker_init(parent: int, _: int) -> None:
    exit_with_parent(parent)
    torch.set_num_threads(1)  # decoding is single-threaded; leave the cores to the encoder


def decode_loader(
    entries: list[Entry],
    audio_root: Path,
    spec: DecodeSpec,
    batch_size: int,
    num_workers: int,
    with_content: bool = False,
) -> DataLoader:
    """Decoded entries in order, ``num_workers`` processes decoding about one batch ahead."""
    ahead = max(2, -(-batch_size // max(1, num_workers)))
    return DataLoader(
        DecodeDataset(entries, audio_root, spec, with_content),
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_identity,
        worker_init_fn=partial(_worker_init, os.getpid()) if num_workers else None,
        prefetch_factor=ahead if num_workers else None,
        persistent_workers=False,
    )


def _identity(x):
    return x
