"""Clotho v2.1: ``clotho_captions_<split>.csv`` (file_name, caption_1..caption_5) + audio folders.

Layout (Zenodo record 4783391, archives extracted into one folder)::

    clotho_captions_development.csv   development/<file_name>
    clotho_captions_validation.csv    validation/<file_name>
    clotho_captions_evaluation.csv    evaluation/<file_name>

One row per clip with its 5 captions. Splits: ``dev`` (index), ``val``, ``eval`` (query).
Option ``rows_per_caption``: one row per caption instead (ids ``<clip>#<k>``, one ``group`` per
clip), the Audio Flamingo reference's layout, where a retrieved clip shows one of its captions.
"""

from __future__ import annotations

from pathlib import Path

from rag_flamingo.errors import ManifestError

from .common import Splits, read_csv

SPLITS = {"dev": "development", "val": "validation", "eval": "evaluation"}
CAPTION_COLUMNS = [f"caption_{i}" for i in range(1, 6)]


def make(metadata: Path, rows_per_caption: bool | str = False) -> Splits:
    splits: Splits = {}
    for split, official in SPLITS.items():
        csv_path = metadata / f"clotho_captions_{official}.csv"
        if not csv_path.is_file():
            continue
        splits[split] = [
            _row(csv_path, lineno, row, official)
            for lineno, row in enumerate(read_csv(csv_path, ["file_name", *CAPTION_COLUMNS]), 2)
        ]
    if str(rows_per_caption).lower() in ("1", "true", "yes"):
        splits = {
            split: [_caption_row(row, k) for row in rows for k in range(len(row["captions"]))]
            for split, rows in splits.items()
        }
    if not splits:
        raise ManifestError(
            f"{metadata}: no clotho_captions_<development|validation|evaluation>.csv found "
            "(download them from Zenodo record 4783391 into this folder)"
        )
    return splits


def _row(csv_path: Path, lineno: int, row: dict[str, str], audio_dir: str) -> dict:
    captions = [row[c].strip() for c in CAPTION_COLUMNS if row[c].strip()]
    if not captions:
        raise ManifestError(f"{csv_path}: line {lineno} ({row['file_name']}) has no caption")
    name = row["file_name"]
    return {"id": Path(name).stem, "path": f"{audio_dir}/{name}", "captions": captions}


def _caption_row(row: dict, k: int) -> dict:
    return {"id": f"{row['id']}#{k + 1}", "path": row["path"], "group": row["path"], "captions": [row["captions"][k]]}
