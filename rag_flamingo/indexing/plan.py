"""What a store is made of: one plan per source (the build, then each append), the shards it fills.

A source's plan is a fixed assignment of rows to shards: row i of its run goes to shard
``first_shard + i // shard_size``, so a resumed run, an uninterrupted run and every rank of a
distributed run agree on which row lives where. It is written to ``plans/<first_shard>.jsonl``
(``rag_flamingo.store.plans.write_plan_file``) before any of its shards and never changes. The plans are
the store's authority: a shard is made again by embedding its planned rows from its source's audio
root; items, index, rejected rows and store.json by merging the shards. Each shard's marker keeps a
copy of its plan rows and its source, so a lost or damaged plan file is written again from them.

Replacement: ids are unique among a store's rows (an append gives a row whose id another recording
holds a namespaced id). A later plan that holds an id already stored replaces that row: the append
planned it again because its audio or its fields changed. The earlier shard then drops the row
(``StorePlans.expected_rows``), so the old vector leaves the index.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import StoreError
from ..store.items import item_from_record
from ..store.layout import PLANS_DIR
from ..store.plans import plan_files, plan_path, read_plan_file, write_plan_file
from ..store.records import SourceRecord, StoreInfo, comparable_fingerprint
from ..store.shards import done_shards, read_shard_items, read_shard_rejected, shard_marker, shard_problem, write_marker

logger = logging.getLogger(__name__)

PLAN_FILE = "build_plan.json"  # where plans were kept before plans/ (removed when found)
REBUILD_HINT = "delete it and build it again (the build command, then each append)"


@dataclass
class BuildPlan:
    mode: str  # "build" or "append"
    source: SourceRecord  # the manifest of this run, with its shard range
    encoder: dict  # comparable fingerprint
    shard_size: int
    first_shard: int
    items: list[dict] = field(default_factory=list, repr=False)
    fingerprint: dict = field(default_factory=dict)  # the full encoder fingerprint (store.json's)
    counts: dict = field(default_factory=dict)  # the run's manifest rows: new / unchanged / changed
    renamed: dict = field(default_factory=dict)  # manifest id -> the namespaced id it was given
    header: dict | None = field(default=None, repr=False)  # as read from its file (None: not read)
    rows_by_shard: dict[int, list[dict]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.rows_by_shard:
            size, items = self.shard_size, self.items
            count = -(-len(items) // size)
            self.rows_by_shard = {self.first_shard + s: items[s * size : (s + 1) * size] for s in range(count)}

    @property
    def shard_count(self) -> int:
        return len(self.rows_by_shard)

    @property
    def end_shard(self) -> int:
        return self.first_shard + self.shard_count

    @property
    def shards(self) -> list[int]:
        return list(range(self.first_shard, self.end_shard))

    def shard_items(self, shard: int) -> list[dict]:
        return self.rows_by_shard.get(shard, [])

    def shard_key(self, shard: int) -> str:
        """What a shard is built from (encoder and item ids), recorded in its done marker."""
        return shard_key(self.encoder, self.shard_items(shard))

    def describe(self) -> dict:
        """The plan's header (as its file keeps it)."""
        if self.header is not None:
            return {k: v for k, v in self.header.items() if k != "rows_sha256"}
        return {
            "mode": self.mode,
            "source": self.source.to_dict(),
            "encoder": self.encoder,
            "fingerprint": self.fingerprint,
            "shard_size": self.shard_size,
            "first_shard": self.first_shard,
            "items": len(self.items),
            "ids_sha": _ids_digest(self.items),
            "counts": self.counts,
            "renamed": self.renamed,
        }

    def save(self, root: Path) -> None:
        self.header = self.describe()
        write_plan_file(root, self.first_shard, self.header, [(s, self.shard_items(s)) for s in self.shards])

    @classmethod
    def from_header(cls, header: dict, rows_by_shard: dict[int, list[dict]], where: str) -> BuildPlan:
        try:
            source = SourceRecord.from_dict(header["source"])
            first = int(header["first_shard"])
            plan = cls(
                mode=str(header["mode"]),
                source=source,
                encoder=dict(header["encoder"]),
                shard_size=int(header["shard_size"]),
                first_shard=first,
                items=[row for s in sorted(rows_by_shard) for row in rows_by_shard[s]],
                fingerprint=dict(header.get("fingerprint") or {}),
                counts=dict(header.get("counts") or {}),
                renamed=dict(header.get("renamed") or {}),
                header=dict(header),
                rows_by_shard=dict(rows_by_shard),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{where}: damaged (its header lacks {exc})") from exc
        if not rows_by_shard or sorted(rows_by_shard) != list(range(first, source.end_shard)):
            raise StoreError(f"{where}: damaged (its shards do not run {first}..{source.end_shard - 1})")
        return plan

    @classmethod
    def read(cls, path: Path) -> BuildPlan:
        header, rows = read_plan_file(path)
        return cls.from_header(header, rows, str(path))


def shard_key(encoder: dict, rows: list[dict]) -> str:
    return _ids_digest([{"id": json.dumps(encoder, sort_keys=True)}, *rows])


class StorePlans:
    """All plans of a store in shard order, and what each shard must hold."""

    def __init__(self, root: Path, plans: list[BuildPlan]):
        self.root = Path(root)
        self.plans = sorted(plans, key=lambda p: p.first_shard)
        expected = 0
        for plan in self.plans:
            if plan.first_shard != expected:
                missing = f"shards {expected}..{plan.first_shard - 1}" if plan.first_shard > expected else "shards"
                raise StoreError(
                    f"{self.root}: {missing} belong to no plan (their plan file under {PLANS_DIR}/ and the "
                    f"shards themselves are missing); {REBUILD_HINT}"
                )
            expected = plan.end_shard
            if plan.encoder != self.plans[0].encoder:
                raise StoreError(
                    f"{self.root}: {plan_path(root, plan.first_shard)} names another encoder; {REBUILD_HINT}"
                )
        self._owner = {s: i for i, plan in enumerate(self.plans) for s in plan.shards}
        self._last = {str(row["id"]): i for i, plan in enumerate(self.plans) for row in plan.items}  # id -> plan

    @property
    def end_shard(self) -> int:
        return self.plans[-1].end_shard if self.plans else 0

    @property
    def encoder(self) -> dict:
        return self.plans[0].encoder

    @property
    def fingerprint(self) -> dict:
        return self.plans[0].fingerprint

    def owner(self, shard: int) -> BuildPlan:
        return self.plans[self._owner[shard]]

    def superseded(self, shard: int) -> set[str]:
        """Ids of this shard's plan rows that a later plan holds (rows replaced by a later append)."""
        mine = self._owner[shard]
        return {str(r["id"]) for r in self.owner(shard).shard_items(shard) if self._last[str(r["id"])] != mine}

    def expected_rows(self, shard: int) -> list[dict]:
        """The rows the shard holds: its plan's, less those a later plan replaced."""
        mine = self._owner[shard]
        return [row for row in self.owner(shard).shard_items(shard) if self._last[str(row["id"])] == mine]

    def ids(self) -> set[str]:
        return set(self._last)

    def expected_key(self, shard: int) -> str:
        return shard_key(self.encoder, self.expected_rows(shard))

    def sources(self) -> list[SourceRecord]:
        return [replace(p.source, first_shard=p.first_shard, end_shard=p.end_shard) for p in self.plans]

    def with_plan(self, plan: BuildPlan) -> StorePlans:
        return StorePlans(self.root, [*self.plans, plan])


def load_plans(root: Path, recover: bool = True) -> tuple[StorePlans | None, list[str]]:
    """The store's plans (None when it has none), and what was wrong with them.

    With ``recover``, a damaged or missing plan file is written again from the plan copies in its
    shards' markers; without it (ranks other than 0), a damaged plan file is an error.
    """
    root = Path(root)
    plans: dict[int, BuildPlan] = {}
    damaged: dict[int, str] = {}
    for path in plan_files(root):
        try:
            plans[int(path.stem)] = BuildPlan.read(path)
        except StoreError as exc:
            if not recover:
                raise
            damaged[int(path.stem)] = str(exc)
    copies: dict[int, dict[int, tuple[dict, list[dict]]]] = {}  # first shard -> shard -> (header, rows)
    for shard in done_shards(root):
        marker = shard_marker(root, shard)
        first = marker.source.get("first_shard") if marker is not None else None
        if marker is not None and isinstance(first, int):
            copies.setdefault(first, {})[shard] = (marker.source, marker.rows)
    problems = []
    for first in sorted((set(damaged) | set(copies)) - set(plans)):
        where = plan_path(root, first)
        what = damaged.get(first, f"{where} is missing")
        if not recover:
            raise StoreError(f"{what}; {_repair_hint(root)}")
        plans[first] = _recover(root, first, copies.get(first, {}), what)
        reason = damaged[first].split(": ", 1)[-1] if first in damaged else "missing"
        problems.append(f"{PLANS_DIR}/{where.name} written again from its shards (it was {reason})")
    if not plans:
        return None, problems
    return StorePlans(root, list(plans.values())), problems


def _recover(root: Path, first: int, copies: dict[int, tuple[dict, list[dict]]], what: str) -> BuildPlan:
    header = next(iter(copies.values()))[0] if copies else None
    try:
        end = int(header["source"]["end_shard"]) if header else first + 1
    except (KeyError, TypeError, ValueError):
        header, end = None, first + 1
    lost = [s for s in range(first, end) if s not in copies]
    if header is None or lost:
        shard = lost[0] if lost else first
        raise StoreError(
            f"{root}: {what}, and shard {shard}, which keeps a copy of that plan, is missing or damaged "
            f"too; {REBUILD_HINT}"
        )
    plan = BuildPlan.from_header(header, {s: rows for s, (_, rows) in copies.items()}, str(plan_path(root, first)))
    write_plan_file(root, first, plan.describe(), [(s, plan.shard_items(s)) for s in plan.shards])
    logger.warning("%s: %s; written again from its shards", root, what)
    return plan


def adopt_plans(root: Path, info: StoreInfo) -> StorePlans:
    """Plans for a store written before plans were recorded: each source of store.json, with the
    rows its shards hold (indexed rows, then rejected ones); the markers get their plan copies.
    Needs every shard intact (its rows are known from nowhere else)."""
    root = Path(root)
    encoder = comparable_fingerprint(info.encoder)
    done = set(done_shards(root))
    plans = []
    for i, source in enumerate(info.build.sources):
        rows_by_shard: dict[int, list[dict]] = {}
        for shard in range(source.first_shard, source.end_shard):
            problem = shard_problem(root, shard) if shard in done else "it is missing"
            if problem:
                raise StoreError(
                    f"{root}: was built before build plans were recorded, and shard {shard} is damaged "
                    f"({problem}); {REBUILD_HINT}"
                )
            items = [item_from_record(r) for r in read_shard_items(root, shard).to_pylist()]
            rejected = [{"id": r["id"], "path": r["path"]} for r in read_shard_rejected(root, shard)]
            rows_by_shard[shard] = [{k: v for k, v in it.items() if k != "content"} for it in items] + rejected
        plan = BuildPlan(
            "build" if i == 0 else "append",
            replace(source, first_row=0, end_row=None),
            encoder,
            info.build.shard_size,
            source.first_shard,
            [row for s in sorted(rows_by_shard) for row in rows_by_shard[s]],
            fingerprint=info.encoder,
            rows_by_shard=rows_by_shard,
        )
        plan.save(root)
        plans.append(plan)
    store = StorePlans(root, plans)
    for shard in range(store.end_shard):
        marker = shard_marker(root, shard)
        if marker is not None:
            marker.key, marker.source = store.expected_key(shard), store.owner(shard).describe()
            marker.rows = store.expected_rows(shard)
            write_marker(root, shard, marker)
    logger.info("%s: build plans recorded for its %d sources", root, len(plans))
    return store


def drop_legacy_plan(root: Path) -> None:
    """Remove ``build_plan.json`` (an interrupted run of an older version); its shards are adopted
    when their keys are the ones the new plan gives them."""
    (Path(root) / PLAN_FILE).unlink(missing_ok=True)


def _repair_hint(root: Path) -> str:
    return f"repair it with `build_index store={root} mode=repair`"


def _ids_digest(items: list[dict]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(str(item["id"]).encode() + b"\0")
    return h.hexdigest()


def plan_diff(theirs: dict, mine: dict) -> list[str]:
    keys = ("mode", "encoder", "shard_size", "first_shard", "items", "ids_sha")
    diff = [k for k in keys if theirs.get(k) != mine.get(k)]
    if theirs.get("source", {}).get("manifest_sha256") != mine["source"]["manifest_sha256"]:
        diff.append("manifest")
    return diff
