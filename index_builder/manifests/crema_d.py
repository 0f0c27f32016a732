"""CREMA-D: ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav`` (+ ``VideoDemographics.csv``).

7,442 clips of 91 actors (ids 1001-1091) reading 12 sentences in 6 emotions: ANG anger, DIS
disgust, FEA fear, HAP happy, NEU neutral, SAD sad; level LO/MD/HI (XX: unspecified). Layout: the
GitHub repository CheyneyComputerScience/CREMA-D (``AudioWAV/``, Git LFS) or its copies, with the
folder directly under the dataset root (or under ``CREMA-D/``). ``label`` is the emotion word
(``anger``, ``disgust``, ...; the emotion task maps it to the reference's answer, e.g. ``angry``);
``actor``, ``sentence``, ``level`` and, when ``VideoDemographics.csv`` is there, ``sex`` are kept.

There is no official split. Ours is speaker-disjoint: ``test`` = the actors whose id is a
multiple of 5 (1005, 1010, ..., 1090: 18 of 91 actors, ~20 %), ``train`` = the other 73;
``all`` = every clip. Option ``test_actors=1001,1002,...`` names other test actors.
Audio Flamingo v1 evaluates CREMA-D zero-shot (never trained on it): index ``train``, query ``test``.
"""

from __future__ import annotations

from pathlib import Path

from rag_flamingo.errors import ManifestError

from .common import Splits, audio_files, find_dir, parse_speakers, read_csv, speaker_splits

EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
AUDIO_DIRS = ("AudioWAV", "CREMA-D/AudioWAV")


def default_test_actors(actors: list[int]) -> list[int]:
    return [a for a in actors if a % 5 == 0]


def make(metadata: Path, test_actors: str | None = None) -> Splits:
    audio_dir = find_dir(metadata, AUDIO_DIRS)
    sex = _demographics(metadata)
    rows: list[dict] = []
    actors: set[int] = set()
    for f in audio_files(audio_dir):
        parts = f.stem.split("_")
        if len(parts) != 4 or parts[2] not in EMOTIONS or not parts[0].isdigit():
            raise ManifestError(f"{f}: expected <actor>_<sentence>_<ANG|DIS|FEA|HAP|NEU|SAD>_<level>{f.suffix}")
        actor = int(parts[0])
        actors.add(actor)
        row = {
            "id": f.stem,
            "path": f.relative_to(metadata).as_posix(),
            "label": EMOTIONS[parts[2]],
            "actor": actor,
            "sentence": parts[1],
            "level": LEVELS.get(parts[3], parts[3].lower()),
        }
        if actor in sex:
            row["sex"] = sex[actor]
        rows.append(row)
    if not rows:
        raise ManifestError(f"{audio_dir}: no audio files")
    chosen = parse_speakers(test_actors, "test_actors")
    return speaker_splits(rows, chosen if chosen is not None else default_test_actors(sorted(actors)))


def _demographics(metadata: Path) -> dict[int, str]:
    path = next(
        (
            p
            for p in (metadata / "VideoDemographics.csv", metadata / "CREMA-D" / "VideoDemographics.csv")
            if p.is_file()
        ),
        None,
    )
    if path is None:
        return {}
    return {int(r["ActorID"]): r["Sex"].strip().lower() for r in read_csv(path, ["ActorID", "Sex"])}
