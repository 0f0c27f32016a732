"""AudioCaps: ``train.csv`` / ``val.csv`` / ``test.csv`` (audiocap_id, youtube_id, start_time, caption).

One row per caption (``audiocap_id``); the rows of one clip share ``group`` =
``<youtube_id>_<start_time>`` (train has 1 caption per clip, val/test 5). Audio is not distributed
with the captions: it is cut from YouTube by a downloader. ``audio_pattern`` (relative to the
dataset root; fields ``{split}``, ``{youtube_id}``, ``{start_time}``, ``{audiocap_id}``) says where
the clips are; the default is the layout of aac-datasets (``AUDIOCAPS/audio_32000Hz/<split>/
<youtube_id>_<start_time>.flac``). Splits: ``train`` (index), ``val``, ``test`` (query).
"""

from __future__ import annotations

from pathlib import Path

from rag_flamingo.errors import ManifestError

from .common import Splits, read_csv, to_int

SPLITS = ("train", "val", "test")
DEFAULT_AUDIO_PATTERN = "AUDIOCAPS/audio_32000Hz/{split}/{youtube_id}_{start_time}.flac"
CSV_DIRS = (".", "dataset", "AUDIOCAPS")


def make(metadata: Path, audio_pattern: str = DEFAULT_AUDIO_PATTERN) -> Splits:
    splits: Splits = {}
    for split in SPLITS:
        csv_path = next(
            (metadata / d / f"{split}.csv" for d in CSV_DIRS if (metadata / d / f"{split}.csv").is_file()), None
        )
        if csv_path is None:
            continue
        rows = read_csv(csv_path, ["audiocap_id", "youtube_id", "start_time", "caption"])
        splits[split] = [_row(csv_path, row, split, audio_pattern) for row in rows]
    if not splits:
        raise ManifestError(
            f"{metadata}: no train.csv/val.csv/test.csv found (also looked in "
            f"{', '.join(CSV_DIRS[1:])}/); get them from github.com/cdjkim/audiocaps (dataset/)"
        )
    return splits


def _row(csv_path: Path, row: dict[str, str], split: str, audio_pattern: str) -> dict:
    start = to_int(row["start_time"], csv_path, "start_time")
    fields = {"split": split, "youtube_id": row["youtube_id"], "start_time": start, "audiocap_id": row["audiocap_id"]}
    try:
        path = audio_pattern.format(**fields)
    except KeyError as exc:
        raise ManifestError(
            f"audio_pattern {audio_pattern!r}: unknown field {exc}; use {', '.join('{' + k + '}' for k in fields)}"
        ) from exc
    return {
        "id": row["audiocap_id"],
        "path": path,
        "group": f"{row['youtube_id']}_{start}",
        "captions": [row["caption"].strip()],
        "youtube_id": row["youtube_id"],
    }
