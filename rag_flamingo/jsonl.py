"""JSON lines files: the one reader and writers (store rejections, evaluation records, classify outputs).

- `read_jsonl`: every record; a last line cut by an interruption (kill -9 mid-write) is skipped with
  a warning when ``tolerate_cut`` (resumable outputs), an error otherwise;
- `append_jsonl`: records appended and fsynced (a resumable run loses at most the batch in flight);
- `write_jsonl`: the whole file replaced atomically.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import RagFlamingoError

logger = logging.getLogger(__name__)


def dumps(record: dict, sort_keys: bool = False) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=sort_keys, default=str) + "\n"


def read_jsonl(path: str | Path, tolerate_cut: bool = False) -> list[dict]:
    """The records of ``path`` ([] when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if not tolerate_cut:
                raise RagFlamingoError(
                    f"{path}: line {lineno} is not valid JSON ({exc.msg}); "
                    f"the file is damaged: delete it or rebuild what wrote it"
                ) from exc
            logger.warning("%s: skipping line %d, cut by an interruption (it is redone)", path, lineno)
    return out


def append_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    records = list(records)
    if not records:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with open(path, "a", encoding="utf-8") as f:
        if cut:  # a line cut by an interruption: end it so the new records start on their own lines
            f.write("\n")
        f.write("".join(dumps(r) for r in records))
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | Path, records: Iterable[dict], sort_keys: bool = False) -> None:
    """Write ``records`` whole: to a temporary file of this process, then renamed over ``path`` (two
    processes writing one file at once, e.g. torchrun ranks, each rename a complete file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(dumps(r, sort_keys) for r in records), encoding="utf-8")
    os.replace(tmp, path)
