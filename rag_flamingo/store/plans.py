"""Plan files (``plans/``): what each source (the build, then each append) asked for, one header and
one line of planned manifest rows per shard, written before its shards and never changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import StoreError
from .layout import PLANS_DIR, write_atomic


def plan_path(root: Path, first_shard: int) -> Path:
    return Path(root) / PLANS_DIR / f"{first_shard:06d}.jsonl"


def plan_files(root: Path) -> list[Path]:
    """The plan files of a store, in shard order."""
    folder = Path(root) / PLANS_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.jsonl") if p.stem.isdigit())


def write_plan_file(root: Path, first_shard: int, header: dict, shards: list[tuple[int, list[dict]]]) -> Path:
    """``plans/<first_shard>.jsonl``: ``header`` (with the sha256 of the lines below it) and one line
    per shard with its planned rows; written atomically."""
    body = "".join(
        json.dumps({"shard": shard, "rows": rows}, sort_keys=True, ensure_ascii=False) + "\n" for shard, rows in shards
    )
    head = dict(header, rows_sha256=hashlib.sha256(body.encode("utf-8")).hexdigest())
    text = json.dumps(head, sort_keys=True, ensure_ascii=False) + "\n" + body
    path = plan_path(root, first_shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda p: Path(p).write_text(text, encoding="utf-8"))
    return path


def read_plan_file(path: Path) -> tuple[dict, dict[int, list[dict]]]:
    """(header, rows by shard) of a plan file; StoreError naming it when it is missing or damaged."""
    try:
        head, _, body = Path(path).read_bytes().partition(b"\n")
        header = json.loads(head)
        if not isinstance(header, dict) or header.get("rows_sha256") != hashlib.sha256(body).hexdigest():
            raise ValueError("its rows do not match the checksum in its header")
        shards: dict[int, list[dict]] = {}
        for line in body.decode("utf-8").splitlines():
            entry = json.loads(line)
            shards[int(entry["shard"])] = list(entry["rows"])
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise StoreError(f"{path}: damaged ({str(exc)[:120]})") from exc
    return header, shards
