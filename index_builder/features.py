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

from rag_flamingo.store import done_shards, features_path, item_from_record, read_shard, write_features

from .reader import DecodeSpec, decode_loader, plan_entries

logger = logging.getLogger(__name__)


def feature_spec(encoder) -> DecodeSpec:
    seconds = getattr(encoder, "max_seconds", None) or getattr(getattr(encoder, "scheme", None), "max_seconds", None)
    return DecodeSpec(int(encoder.sample_rate), seconds, min_seconds=0.0)


def write_feature_shards(root: Path, name: str, encoder, shard_roots: dict[int, Path], batch_size: int,
                         num_workers: int, progress: bool = True) -> dict:
    """Write ``features/<name>/`` for every complete shard that lacks it; return its description."""
    root = Path(root)
    todo = [s for s in done_shards(root) if not features_path(root, name, s).is_file()]
    described: dict = {}
    by_root: dict[Path, list[tuple[int, list[dict]]]] = {}
    for shard in todo:
        _, table = read_shard(root, shard)
        by_root.setdefault(shard_roots[shard], []).append((shard, [item_from_record(r) for r in table.to_pylist()]))
    total = sum(len(items) for groups in by_root.values() for _, items in groups)
    bar = tqdm(total=total, unit="clip", desc=f"features {name}", disable=not progress, dynamic_ncols=True)
    for shards in by_root.values():
        for shard, items in shards:
            if not items:  # every item of the shard was rejected: an empty, aligned features file
                f, m = _window_features(encoder, [])
                write_features(root, name, shard, f[:0], m[:0])
    for audio_root, shards in by_root.items():
        entries = plan_entries(shards, batch_size)
        loader = decode_loader(entries, audio_root, feature_spec(encoder), batch_size, num_workers)
        feats: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        batch: list = []
        for i, wave, reason in loader:
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
    if not described and done_shards(root):
        from safetensors import safe_open

        with safe_open(str(features_path(root, name, done_shards(root)[0])), framework="numpy") as handle:
            shape = handle.get_slice("features").get_shape()
            described = {"windows": int(shape[1]), "dim": int(shape[2]), "dtype": "float32"}
    described["fingerprint"] = encoder.fingerprint()
    return described


def _window_features(encoder, decoded) -> tuple[np.ndarray, np.ndarray]:
    """Features of the decodable items; an item that cannot be decoded gets an all-masked row."""
    waves = [w.numpy() for _, w, _ in decoded if w is not None]
    for item, w, reason in decoded:
        if w is None:
            logger.warning("features: %s cannot be decoded (%s); its windows are masked out", item["id"], reason)
    probe = waves or [np.zeros(int(encoder.sample_rate), np.float32)]  # for the shapes only
    if not decoded:
        f, m = encoder.window_features(probe)
        return _numpy(f).astype(np.float32)[:0], _numpy(m).astype(np.float32)[:0]
    f, m = encoder.window_features(probe)
    f, m = _numpy(f).astype(np.float32), _numpy(m).astype(np.float32)
    out_f, out_m, j = [], [], 0
    for _, w, _ in decoded:
        if w is None:
            out_f.append(np.zeros_like(f[:1]))
            out_m.append(np.zeros_like(m[:1]))
        else:
            out_f.append(f[j : j + 1])
            out_m.append(m[j : j + 1])
            j += 1
    return np.concatenate(out_f), np.concatenate(out_m)


def _numpy(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
