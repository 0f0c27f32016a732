"""Manifest rows (JSON lines): the contract between datasets and everything downstream.

Each row: ``id`` (unique in the dataset), ``path`` (relative to the dataset root, or absolute),
optional ``start``/``end`` seconds, optional ``group`` (defaults to ``path``: rows sharing a group
are one recording), and the targets a task needs: ``captions`` (list), ``label`` or ``labels``
(list), ``question``, ``answer``. Extra keys are kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import ManifestError
from ..jsonl import write_jsonl

REQUIRED_COLUMNS = ("id", "path")
_MAX_LISTED = 10


def read_manifest(path: str | Path, required: Iterable[str] = (), allow_outside_root: bool = False) -> list[dict]:
    """Read and validate a manifest; every problem is reported at once, before any work starts.

    Raises ManifestError naming the file, the line numbers and the fix for: unreadable JSON,
    missing required columns (``id``, ``path`` and ``required``), duplicate ids, and relative paths
    that leave the dataset root (``../../x.wav``) unless ``allow_outside_root``.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found (make it with the dataset's manifest maker)")
    columns = tuple(REQUIRED_COLUMNS) + tuple(c for c in required if c not in REQUIRED_COLUMNS)
    rows: list[dict] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {lineno}: not valid JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"line {lineno}: expected a JSON object")
                continue
            missing = [c for c in columns if _absent(row, c)]
            if missing:
                problems.append(f"line {lineno}: missing column(s) {', '.join(missing)}")
                continue
            row["id"] = str(row["id"])
            if not allow_outside_root and _leaves_root(str(row["path"])):
                problems.append(
                    f"line {lineno}: path {row['path']!r} leaves the dataset root; fix it, or set "
                    f"dataset.allow_outside_root=true if that is intended"
                )
                continue
            if row["id"] in seen:
                problems.append(f"line {lineno}: duplicate id {row['id']!r} (first on line {seen[row['id']]})")
                continue
            seen[row["id"]] = lineno
            row.setdefault("group", row["path"])
            rows.append(row)
    if problems:
        listed = "\n  ".join(problems[:_MAX_LISTED])
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        raise ManifestError(f"{path}: {len(problems)} bad row(s); fix or remove them:\n  {listed}{more}")
    if not rows:
        raise ManifestError(f"{path}: manifest has no rows")
    return rows


def _leaves_root(path: str) -> bool:
    """A relative path that climbs above the folder it is relative to (absolute paths are explicit)."""
    return not Path(path).is_absolute() and os.path.normpath(path).split(os.sep)[0] == ".."


def _absent(row: dict, column: str) -> bool:
    if column == "label":  # a task needing a label accepts either form
        return row.get("label") in (None, "") and not row.get("labels")
    value = row.get(column)
    return value is None or value == "" or value == []


def write_manifest(rows: Iterable[dict], path: str | Path) -> Path:
    """Write rows as JSON lines (atomically: a crash never leaves half a manifest)."""
    write_jsonl(path, rows)
    return Path(path)
