"""NSynth: ``nsynth-<split>/examples.json`` (note_str -> {instrument_family_str,
instrument_source_str, qualities_str, pitch, velocity, ...}) + ``nsynth-<split>/audio/<note_str>.wav``.

305,979 notes of 4 s (16 kHz). Splits ``train`` (289,205 notes; index), ``val`` (``nsynth-valid``,
12,678) and ``test`` (4,096; query). ``label`` = instrument family (``synth_lead`` ->
``synth lead``); the row also keeps ``instrument_source`` (acoustic/electronic/synthetic),
``qualities`` (list), ``pitch`` (MIDI), ``velocity`` and ``instrument``.

AF1 reports three NSynth tasks (poster, in-domain table: instrument, quality, source); each is a
pair of splits whose rows carry that task's label, so a store of the index split holds the task's
label set (its options and the baselines' votes):

- ``<split>``: instrument family (``label``), task ``instrument_classification``;
- ``<split>_source``: ``label`` = instrument source (acoustic, electronic, synthetic), task
  ``source_classification``;
- ``<split>_quality``: ``labels`` = the note's qualities (``fast_decay`` -> ``fast decay``; a note
  without qualities has none), no ``label``, task ``quality_classification`` (multi-label).
"""

from __future__ import annotations

from pathlib import Path

from rag_flamingo.errors import ManifestError

from .common import Splits, read_json, readable

SPLITS = {"train": "nsynth-train", "val": "nsynth-valid", "test": "nsynth-test"}
FIELDS = ("instrument_family_str", "instrument_source_str", "qualities_str", "pitch", "velocity")


def make(metadata: Path) -> Splits:
    splits: Splits = {}
    for split, folder in SPLITS.items():
        path = metadata / folder / "examples.json"
        if path.is_file():
            rows = _rows(path, folder)
            splits[split] = rows
            splits[f"{split}_source"] = [dict(r, label=r["instrument_source"]) for r in rows]
            splits[f"{split}_quality"] = [_quality_row(r) for r in rows]
    if not splits:
        raise ManifestError(
            f"{metadata}: no nsynth-{{train,valid,test}}/examples.json found "
            "(extract the nsynth-*.jsonwav.tar.gz archives into this folder)"
        )
    return splits


def _rows(path: Path, folder: str) -> list[dict]:
    examples = read_json(path)
    if not isinstance(examples, dict):
        raise ManifestError(f"{path}: expected an object keyed by note_str")
    rows = []
    for note_str, ex in examples.items():
        missing = [f for f in FIELDS if f not in ex]
        if missing:
            raise ManifestError(f"{path}: note {note_str!r} lacks {', '.join(missing)}")
        rows.append(
            {
                "id": note_str,
                "path": f"{folder}/audio/{note_str}.wav",
                "label": readable(ex["instrument_family_str"]),
                "instrument_source": ex["instrument_source_str"],
                "qualities": list(ex["qualities_str"]),
                "pitch": int(ex["pitch"]),
                "velocity": int(ex["velocity"]),
                "instrument": ex.get("instrument_str", ""),
            }
        )
    return rows


def _quality_row(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k != "label"}
    out["labels"] = [readable(q) for q in row["qualities"]]
    return out
