"""UrbanSound8K: ``metadata/UrbanSound8K.csv`` (slice_file_name, fsID, start, end, salience, fold,
classID, class) + ``audio/fold<k>/<slice_file_name>``.

8732 slices (<= 4 s), 10 classes, 10 predefined folds (the authors ask for 10-fold cross-validation
over exactly these folds, never reshuffled). Splits: ``fold1`` .. ``fold10``, ``train`` = all folds
but ``query_fold`` (default 10, the index) and ``test`` = ``query_fold`` (the query).
``start``/``end`` in the CSV locate the slice in its Freesound source recording: the slice files are
already cut, so they are *not* copied as segment times. Labels: ``dog_bark`` -> ``dog bark``.
"""

from __future__ import annotations

from pathlib import Path

from .common import Splits, find_file, fold_splits, read_csv, readable, to_int

COLUMNS = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]


def make(metadata: Path, query_fold: int | str = 10) -> Splits:
    csv_path = find_file(metadata, "metadata/UrbanSound8K.csv", ["UrbanSound8K"])
    prefix = csv_path.parent.parent.relative_to(metadata).as_posix()
    rows = []
    for r in read_csv(csv_path, COLUMNS):
        fold = to_int(r["fold"], csv_path, "fold")
        audio = f"audio/fold{fold}/{r['slice_file_name']}"
        rows.append(
            {
                "id": Path(r["slice_file_name"]).stem,
                "path": audio if prefix == "." else f"{prefix}/{audio}",
                "label": readable(r["class"]),
                "class_id": to_int(r["classID"], csv_path, "classID"),
                "fold": fold,
                "fsid": r["fsID"],
                "salience": to_int(r["salience"], csv_path, "salience"),
            }
        )
    return fold_splits(rows, range(1, 11), query_fold)
