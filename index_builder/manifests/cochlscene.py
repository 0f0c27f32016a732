"""CochlScene: the folder layout ``Train|Val|Test/<Scene>/<Scene>_<user>_<recording>_<nnn>.wav``.

76,115 clips of 10 s (44.1 kHz, mono) recorded by 831 crowd workers, 13 scenes (Bus, Cafe, Car,
CrowdedIndoor, Elevator, Kitchen, Park, ResidentialArea, Restaurant, Restroom, Street, Subway,
SubwayStation). Splits ``train`` (index), ``val``, ``test`` (query); ``label`` is the scene folder
name as written (Audio Flamingo was trained on these names, lower-cased).
"""

from __future__ import annotations

from pathlib import Path

from rag_flamingo.errors import ManifestError

from .common import Splits, audio_files

SPLITS = {"train": "Train", "val": "Val", "test": "Test"}
ROOTS = (".", "CochlScene")


def make(metadata: Path) -> Splits:
    splits: Splits = {}
    for split, folder in SPLITS.items():
        split_dir = next((metadata / r / folder for r in ROOTS if (metadata / r / folder).is_dir()), None)
        if split_dir is None:
            continue
        splits[split] = [
            {
                "id": f.relative_to(metadata).with_suffix("").as_posix(),
                "path": f.relative_to(metadata).as_posix(),
                "label": scene.name,
            }
            for scene in sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
            for f in audio_files(scene)
        ]
    if not splits or not any(splits.values()):
        raise ManifestError(
            f"{metadata}: no Train/Val/Test/<Scene>/*.wav found "
            "(extract the CochlScene archive from Zenodo record 7080122 here)"
        )
    return splits
