"""The feature cache (``features/<name>/``): per-item model features aligned with the shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import StoreError
from .layout import FEATURES_DIR, repair_hint, write_atomic
from .shards import done_shards


def features_path(root: Path, name: str, shard: int) -> Path:
    return Path(root) / FEATURES_DIR / name / f"{shard:06d}.safetensors"


def write_features(root: Path, name: str, shard: int, features: np.ndarray, mask: np.ndarray) -> None:
    """Per-item model features of one shard (e.g. clapcap windows [n, W, D] + mask [n, W])."""
    from safetensors.numpy import save_file

    path = features_path(root, name, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"features": np.ascontiguousarray(features), "mask": np.ascontiguousarray(mask, np.float32)}
    write_atomic(path, lambda p: save_file(tensors, p))


class FeatureCache:
    """Read-only access to ``features/<name>/`` by store row, memory-mapped per shard."""

    def __init__(self, root: Path, name: str):
        from safetensors import safe_open

        self.name = name
        shards = done_shards(root)
        self._files, self._starts, start = [], [], 0
        for shard in shards:
            path = features_path(root, name, shard)
            if not path.is_file():
                raise StoreError(
                    f"{root}: no '{name}' features for shard {shard}; rebuild with "
                    f"`build_index ... features={name}` (existing embeddings are reused)"
                )
            try:
                handle = safe_open(str(path), framework="numpy")
            except Exception as exc:  # safetensors raises its own SafetensorError
                raise StoreError(f"{path}: unreadable ({exc}); {repair_hint(root)} (with features={name})") from exc
            self._files.append(handle)
            self._starts.append(start)
            start += handle.get_slice("mask").get_shape()[0]
        self.count = start

    def get(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """(features [n, W, D], mask [n, W]) for store rows ``rows``."""
        feats, masks = [], []
        for row in rows:
            shard = int(np.searchsorted(self._starts, row, side="right") - 1)
            off = int(row) - self._starts[shard]
            handle = self._files[shard]
            feats.append(handle.get_slice("features")[off : off + 1])
            masks.append(handle.get_slice("mask")[off : off + 1])
        return np.concatenate(feats), np.concatenate(masks)
