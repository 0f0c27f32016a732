"""What a run will do: the items, their fixed assignment to shards, and the resume check.

Shard assignment is a pure function of the manifest order and ``shard_size`` (item i of the run
goes to shard ``first_shard + i // shard_size``), so a resumed run, an uninterrupted run and every
rank of a distributed run agree on which item lives where. The plan is written to
``<store>/build_plan.json`` before any shard; a later run into the same folder must have the same
plan (same manifest bytes, encoder, shard size), otherwise it refuses to mix results. Complete
shards found without a plan (a store whose store.json was lost) are adopted when the key in their
done marker (encoder and item ids) is the one this plan gives them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from rag_flamingo.errors import StoreError
from rag_flamingo.store import SourceRecord, done_shards, shard_marker

PLAN_FILE = "build_plan.json"


@dataclass
class BuildPlan:
    mode: str  # "build" or "append"
    source: SourceRecord  # the manifest of this run (its row range is set when the store is written)
    encoder: dict  # comparable fingerprint
    shard_size: int
    first_shard: int
    items: list[dict] = field(default_factory=list, repr=False)

    @property
    def shard_count(self) -> int:
        return -(-len(self.items) // self.shard_size)

    @property
    def shards(self) -> list[int]:
        return [self.first_shard + s for s in range(self.shard_count)]

    def shard_items(self, shard: int) -> list[dict]:
        start = (shard - self.first_shard) * self.shard_size
        return self.items[start : start + self.shard_size]

    def shard_key(self, shard: int) -> str:
        """What a shard is built from (encoder and item ids), recorded in its done marker."""
        return _ids_digest([{"id": json.dumps(self.encoder, sort_keys=True)}, *self.shard_items(shard)])

    def pending(self, root: Path) -> list[int]:
        done = set(done_shards(root))
        return [s for s in self.shards if s not in done]

    def describe(self) -> dict:
        return {
            "mode": self.mode,
            "source": self.source.to_dict(),
            "encoder": self.encoder,
            "shard_size": self.shard_size,
            "first_shard": self.first_shard,
            "items": len(self.items),
            "ids_sha": _ids_digest(self.items),
        }

    def claim(self, root: Path) -> None:
        """Write the plan, or check it equals the one an earlier (interrupted) run wrote."""
        root = Path(root)
        path = root / PLAN_FILE
        mine = self.describe()
        if path.is_file():
            theirs = json.loads(path.read_text())
            diff = _plan_diff(theirs, mine)
            if diff:
                raise StoreError(
                    f"{root}: holds shards of an unfinished build with a different plan (differs in: "
                    f"{', '.join(diff)}); rerun with the same dataset/encoder/shard_size to resume, "
                    f"or pick another output= (or delete {root})"
                )
            return
        root.mkdir(parents=True, exist_ok=True)
        stray = [s for s in done_shards(root) if s >= self.first_shard and not self.owns_shard(root, s)]
        if stray:
            raise StoreError(
                f"{root}: has embedding shards {stray[:5]} from an unknown run; pick another output= or delete them"
            )
        tmp = path.with_name(f"{PLAN_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(mine, indent=2, sort_keys=True))
        os.replace(tmp, path)

    def owns_shard(self, root: Path, shard: int) -> bool:
        """Whether a complete shard found on disk is this plan's (same encoder and items)."""
        marker = shard_marker(root, shard)
        return shard in self.shards and marker is not None and marker.key == self.shard_key(shard)

    @staticmethod
    def drop_committed(root: Path, committed_shards: int) -> None:
        """Remove a plan whose shards are already in store.json (a kill after the store was written)."""
        path = Path(root) / PLAN_FILE
        if path.is_file() and json.loads(path.read_text()).get("first_shard", 0) < committed_shards:
            path.unlink(missing_ok=True)

    @staticmethod
    def release(root: Path) -> None:
        """Forget the plan once the store is complete (store.json now describes the shards)."""
        (Path(root) / PLAN_FILE).unlink(missing_ok=True)


def _plan_diff(theirs: dict, mine: dict) -> list[str]:
    keys = ("mode", "encoder", "shard_size", "first_shard", "items", "ids_sha")
    diff = [k for k in keys if theirs.get(k) != mine.get(k)]
    if theirs.get("source", {}).get("manifest_sha256") != mine["source"]["manifest_sha256"]:
        diff.append("manifest")
    return diff


def _ids_digest(items: list[dict]) -> str:
    import hashlib

    h = hashlib.sha256()
    for item in items:
        h.update(str(item["id"]).encode() + b"\0")
    return h.hexdigest()
