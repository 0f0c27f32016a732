"""Cached per-item model features (e.g. clapcap windows), aligned with the embedding shards.

``build_index ... features=clapcap`` runs this after the embeddings; on an existing store it runs
alone (nothing is re-embedded). Each shard's features file is written atomically, so a killed
run resumes at the first shard without one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..store.features import features_path, write_features
from ..store.items import item_from_record
from ..store.records import FeatureRecord
from ..store.shards import done_shards, read_shard_items
from .reader import decode_loader, decode_spec, plan_entries

logger = logging.getLogger(__name__)


def write_feature_shards(
    root: Path,
    name: str,
    encoder,
    shard_roots: dict[int, Path],
    batch_size: int,
    num_workers: int,
    progress: bool = True,
) -> FeatureRecord:
    """Write ``features/<name>/`` for every complete shard that lacks it; return its description."""
    root = Path(root)
    shards = done_shards(root)
    by_root: dict[Path, list[tuple[int, list[dict]]]] = {}
    for shard in shards:
        if not features_path(root, name, shard).is_file():
            items = [item_from_record(r) for r in read_shard_items(root, shard).to_pylist()]
            by_root.setdefault(shard_roots[shard], []).append((shard, items))
    total = sum(len(items) for todo in by_root.values() for _, items in todo)
    bar = tqdm(total=total, unit="clip", desc=f"features {name}", disable=not progress, dynamic_ncols=True)
    spec = decode_spec(encoder, min_seconds=0.0)  # features of every indexed item, however short
    described: dict = {}
    for audio_root, todo in by_root.items():
        for shard, items in todo:
            if not items:  # every item of the shard was rejected: an empty, aligned features file
                write_features(root, name, shard, *_window_features(encoder, []))
        entries = plan_entries(todo, batch_size)
        feats: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        batch: list = []
        for i, wave, reason, _ in decode_loader(entries, audio_root, spec, batch_size, num_workers):
            entry = entries[i]
            if entry.shard_start:
                feats, masks, batch = [], [], []
            batch.append((entry.item, wave, reason))
            if entry.batch_end:
                f, m = _window_features(encoder, batch)
                feats.append(f)
                masks.append(m)
                bar.update(len(batch))
                batch = []
            if entry.shard_end:
                f, m = np.concatenate(feats), np.concatenate(masks)
                write_features(root, name, entry.shard, f, m)
                described = {"windows": int(f.shape[1]), "dim": int(f.shape[2]), "dtype": str(f.dtype)}
    bar.close()
    if not described and shards:
        from safetensors import safe_open

        with safe_open(str(features_path(root, name, shards[0])), framework="numpy") as handle:
            shape = handle.get_slice("features").get_shape()
            described = {"windows": int(shape[1]), "dim": int(shape[2]), "dtype": "float32"}
    return FeatureRecord(**described, fingerprint=encoder.fingerprint())


def _window_features(encoder, decoded) -> tuple[np.ndarray, np.ndarray]:
    """Features of the decodable items; an item that cannot be decoded gets an all-masked row."""
    for item, w, reason in decoded:
        if w is None:
            logger.warning("features: %s cannot be decoded (%s); its windows are masked out", item["id"], reason)
    ok = np.array([w is not None for _, w, _ in decoded], dtype=bool)
    waves = [w.numpy() for _, w, _ in decoded if w is not None]
    # with nothing to encode, a second of silence gives the shapes
    f, m = encoder.window_features(waves or [np.zeros(int(encoder.sample_rate), np.float32)])
    f, m = _numpy(f).astype(np.float32), _numpy(m).astype(np.float32)
    out_f = np.zeros((len(decoded), *f.shape[1:]), np.float32)
    out_m = np.zeros((len(decoded), *m.shape[1:]), np.float32)
    out_f[ok], out_m[ok] = f[: len(waves)], m[: len(waves)]
    return out_f, out_m


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
