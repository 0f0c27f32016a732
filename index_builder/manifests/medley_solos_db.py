"""Medley-solos-DB: ``Medley-solos-DB_metadata.csv`` (subset, instrument, instrument_id, song_id,
uuid4) + audio ``Medley-solos-DB_<subset>-<instrument_id>_<uuid4>.wav``.

21,571 clips of 2.97 s (22.05 kHz), 8 instruments. Official subsets ``training`` / ``validation`` /
``test`` (song-disjoint) become splits ``train`` (index) / ``val`` / ``test`` (query). The audio
files are looked for in ``audio/``, ``Medley-solos-DB/`` or next to the CSV (the Zenodo
archive's layout is not fixed in the metadata; pass ``audio_dir`` to override).
"""

from __future__ import annotations

from pathlib import Path

from rag_flamingo.errors import ManifestError

from .common import Splits, find_file, read_csv, to_int

COLUMNS = ["subset", "instrument", "instrument_id", "song_id", "uuid4"]
SUBSETS = {"training": "train", "validation": "val", "test": "test"}
AUDIO_DIRS = ("audio", "Medley-solos-DB", ".")


def make(metadata: Path, audio_dir: str | None = None) -> Splits:
    csv_path = find_file(metadata, "Medley-solos-DB_metadata.csv", ["annotation", "metadata"])
    rows = read_csv(csv_path, COLUMNS)
    audio_dir = audio_dir or _guess_audio_dir(metadata, rows)
    splits: Splits = {name: [] for name in SUBSETS.values()}
    for lineno, r in enumerate(rows, 2):
        if r["subset"] not in SUBSETS:
            raise ManifestError(f"{csv_path}: line {lineno}: subset {r['subset']!r} is not one of {', '.join(SUBSETS)}")
        splits[SUBSETS[r["subset"]]].append(
            {
                "id": r["uuid4"],
                "path": _join(audio_dir, _file_name(r)),
                "label": r["instrument"],
                "class_id": to_int(r["instrument_id"], csv_path, "instrument_id"),
                "song_id": to_int(r["song_id"], csv_path, "song_id"),
            }
        )
    return {k: v for k, v in splits.items() if v}


def _file_name(r: dict[str, str]) -> str:
    return f"Medley-solos-DB_{r['subset']}-{r['instrument_id']}_{r['uuid4']}.wav"


def _guess_audio_dir(metadata: Path, rows: list[dict[str, str]]) -> str:
    first = _file_name(rows[0])
    for d in AUDIO_DIRS:
        if (metadata / d / first).is_file():
            return d
    return AUDIO_DIRS[0]  # audio not there yet: the conventional place (check with --check-audio)


def _join(folder: str, name: str) -> str:
    return name if folder in ("", ".") else f"{folder}/{name}"
