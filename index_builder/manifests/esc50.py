"""ESC-50: ``meta/esc50.csv`` (filename, fold, target, category, esc10, src_file, take) + ``audio/``.

2000 clips of 5 s, 50 classes, 5 folds. Splits: ``fold1`` .. ``fold5``, ``train`` = all folds but
``query_fold`` (default 5: folds 1-4, the index) and ``test`` = ``query_fold`` (the query).
Labels: the category with ``_`` as a space (``crying_baby`` -> ``crying baby``).
"""

from __future__ import annotations

from pathlib import Path

from .common import Splits, find_file, fold_splits, read_csv, readable, to_int

COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


def make(metadata: Path, query_fold: int | str = 5) -> Splits:
    csv_path = find_file(metadata, "meta/esc50.csv", ["ESC-50-master"])
    prefix = csv_path.parent.parent.relative_to(metadata).as_posix()
    rows = [
        {
            "id": Path(r["filename"]).stem,
            "path": _join(prefix, "audio", r["filename"]),
            "label": readable(r["category"]),
            "class_id": to_int(r["target"], csv_path, "target"),
            "fold": to_int(r["fold"], csv_path, "fold"),
            "esc10": r["esc10"].strip().lower() == "true",
        }
        for r in read_csv(csv_path, COLUMNS)
    ]
    return fold_splits(rows, range(1, 6), query_fold)


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p not in ("", "."))
