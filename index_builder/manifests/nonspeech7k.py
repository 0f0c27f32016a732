"""NonSpeech7k: ``metadata of train set.csv`` / ``metadata of test set.csv`` + ``train/`` / ``test/`` audio.

Layout (Zenodo record 6967442, extracted into one folder)::

    metadata of train set.csv   train/<file>.wav
    metadata of test set.csv    test/<file>.wav

7,014 clips of human non-speech sounds, 7 classes (breath, cough, crying, laugh, screaming, sneeze,
yawn). The CSVs' file-name and class columns are found by name (``Filename``/``File name``/
``file_name``..., ``Classname``/``Class name``/``class``/``label``...), so small header variants of
the copies in circulation read alike. ``label`` is the class name as written, lower-cased.
Splits ``train`` (index) and ``test`` (query), as distributed.
"""

from __future__ import annotations

import csv
from pathlib import Path

from rag_flamingo.errors import ManifestError

from .common import Splits, read_csv, read_text

SPLITS = {"train": "metadata of train set.csv", "test": "metadata of test set.csv"}
FILE_COLUMNS = ("filename", "file name", "file_name", "fname", "file")
CLASS_COLUMNS = ("classname", "class name", "class_name", "class", "label")


def make(metadata: Path) -> Splits:
    splits: Splits = {}
    for split, name in SPLITS.items():
        csv_path = metadata / name
        if not csv_path.is_file():
            continue
        file_col, class_col = _columns(csv_path)
        rows = []
        for row in read_csv(csv_path, [file_col, class_col]):
            file_name, label = row[file_col].strip(), row[class_col].strip().lower()
            if not file_name or not label:
                raise ManifestError(f"{csv_path}: a line has an empty {file_col} or {class_col}")
            path = f"{split}/{file_name}"
            rows.append({"id": f"{split}/{Path(file_name).stem}", "path": path, "label": label})
        splits[split] = rows
    if not splits:
        raise ManifestError(
            f"{metadata}: neither {' nor '.join(repr(n) for n in SPLITS.values())} found "
            "(extract the NonSpeech7k archives from Zenodo record 6967442 here)"
        )
    return splits


def _columns(csv_path: Path) -> tuple[str, str]:
    header = next(csv.reader(read_text(csv_path).splitlines()), [])
    by_lower = {h.strip().lower(): h for h in header}
    file_col = next((by_lower[c] for c in FILE_COLUMNS if c in by_lower), None)
    class_col = next((by_lower[c] for c in CLASS_COLUMNS if c in by_lower), None)
    if file_col is None or class_col is None:
        raise ManifestError(
            f"{csv_path}: no file-name column ({', '.join(FILE_COLUMNS)}) or class column "
            f"({', '.join(CLASS_COLUMNS)}) in the header {header}; is this the official file?"
        )
    return file_col, class_col
