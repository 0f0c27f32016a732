"""GTZAN: the folder layout ``genres/<genre>/<genre>.000NN.<wav|au>`` (1000 clips of 30 s, 10 genres).

The original archive (marsyas ``genres.tar.gz``) holds ``.au`` files; the common Kaggle copy holds
``genres_original/<genre>/<genre>.000NN.wav``. Both are found. There is no official split:
- when ``train_filtered.txt`` / ``valid_filtered.txt`` / ``test_filtered.txt`` (the fault-filtered,
  artist-disjoint split of Kereliuk et al. 2015, e.g. from github.com/jongpillee/
  music_dataset_split, lines like ``blues/blues.00029.wav``) are in the metadata folder, they give
  ``train`` / ``val`` / ``test`` (443 / 197 / 290 clips);
- otherwise each genre's tracks 00-69 -> ``train``, 70-79 -> ``val``, 80-99 -> ``test``
  (contiguous, because neighbouring numbers often share an artist: a random split leaks artists).
``all`` holds every clip. Index: ``train``; query: ``test``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rag_flamingo.errors import ManifestError

from .common import Splits, audio_files, find_dir, read_text

logger = logging.getLogger(__name__)

GENRE_DIRS = ("genres", "genres_original", "Data/genres_original", "gtzan/genres")
FILTERED = {"train": "train_filtered.txt", "val": "valid_filtered.txt", "test": "test_filtered.txt"}


def make(metadata: Path) -> Splits:
    genres_dir = find_dir(metadata, GENRE_DIRS)
    rows: list[dict] = []
    for genre_dir in sorted(d for d in genres_dir.iterdir() if d.is_dir() and not d.name.startswith(".")):
        for f in audio_files(genre_dir):
            rows.append(
                {
                    "id": f.stem,
                    "path": f.relative_to(metadata).as_posix(),
                    "label": genre_dir.name,
                    "track": _track_number(f),
                }
            )
    if not rows:
        raise ManifestError(f"{genres_dir}: no audio files in genre sub-folders")
    splits: Splits = {"all": rows}
    if all((metadata / name).is_file() for name in FILTERED.values()):
        splits.update(_filtered_splits(metadata, rows))
    else:
        tracks = [(int(r["track"]), r) for r in rows]
        splits["train"] = [r for t, r in tracks if t < 70]
        splits["val"] = [r for t, r in tracks if 70 <= t < 80]
        splits["test"] = [r for t, r in tracks if t >= 80]
    return splits


def _track_number(path: Path) -> int:
    try:
        return int(path.stem.rsplit(".", 1)[1])
    except (IndexError, ValueError) as exc:
        raise ManifestError(f"{path}: expected a name like <genre>.000NN{path.suffix}") from exc


def _filtered_splits(metadata: Path, rows: list[dict]) -> Splits:
    by_id = {r["id"]: r for r in rows}
    splits: Splits = {}
    for split, name in FILTERED.items():
        listed = [Path(line.strip()).stem for line in read_text(metadata / name).splitlines() if line.strip()]
        absent = [i for i in listed if i not in by_id]
        if absent:
            logger.warning(
                "%s: %d listed clip(s) not found in the audio folder, skipped: %s",
                name,
                len(absent),
                ", ".join(absent[:5]),
            )
        splits[split] = [by_id[i] for i in listed if i in by_id]
    return splits
