"""MUSIC-AVQA: ``avqa-<split>.json`` question files + the audio of its videos (extracted once).

Layout (github.com/GeWu-Lab/MUSIC-AVQA ``data/json/`` + the videos from its download page)::

    avqa-train.json  avqa-val.json  avqa-test.json        (here, or in json/ or data/json/)
    MUSIC-AVQA-videos-Real/<video_id>.mp4                 (the videos, as distributed)
    audio/<video_id>.wav                                  (made once by the preparation step)

Preparation (PyAV, the ``video`` extra: ``pip install -e ".[video]"``)::

    python -m index_builder.manifests.video_audio --videos <root>/MUSIC-AVQA-videos-Real --out <root>/audio

Each question record has ``video_id``, ``question_id``, ``type`` (a JSON list such as
``["Audio", "Counting"]``), ``question_content`` with ``<Object>``-style slots filled in order by
``templ_values`` (a JSON list), ``anser`` (sic; ``answer`` is accepted too) and
``question_deleted``. Deleted questions are left out. One row per question: ``question`` (slots
filled), ``answer``, ``question_type`` (e.g. ``Audio/Counting``); every question of a video shares
its ``group``. Option ``question_types`` keeps questions whose first type is listed (default
``Audio``: the audio-only questions, the ones an audio model can answer; ``all`` keeps every type,
including ``Visual`` and ``Audio-Visual``). Option ``audio_pattern`` (default
``audio/{video_id}.wav``). Splits ``train`` (index), ``val``, ``test`` (query).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rag_flamingo.errors import ManifestError

from .common import Splits, read_json

SPLITS = ("train", "val", "test")
JSON_DIRS = (".", "json", "data/json")
DEFAULT_AUDIO_PATTERN = "audio/{video_id}.wav"
SLOT = re.compile(r"<[^<>]+>")


def make(metadata: Path, question_types: str = "Audio", audio_pattern: str = DEFAULT_AUDIO_PATTERN) -> Splits:
    types = None if question_types.strip().lower() == "all" else {t.strip() for t in question_types.split(",")}
    splits: Splits = {}
    for split in SPLITS:
        path = next(
            (metadata / d / f"avqa-{split}.json" for d in JSON_DIRS if (metadata / d / f"avqa-{split}.json").is_file()),
            None,
        )
        if path is None:
            continue
        records = read_json(path)
        if not isinstance(records, list):
            raise ManifestError(f"{path}: expected a JSON list of question records")
        rows = [_row(path, i, rec, audio_pattern) for i, rec in enumerate(records) if not _deleted(rec)]
        splits[split] = [r for r in rows if types is None or r["question_type"].split("/")[0] in types]
    if not splits:
        raise ManifestError(
            f"{metadata}: no avqa-<train|val|test>.json found (also looked in json/ and data/json/); "
            "get them from github.com/GeWu-Lab/MUSIC-AVQA (data/json/)"
        )
    return splits


def fill_slots(question: str, values: list[str]) -> str:
    """``<Object>``-style slots replaced in order by ``values`` (MUSIC-AVQA's question templates)."""
    slots = SLOT.findall(question)
    if len(slots) != len(values):
        raise ValueError(f"{len(slots)} slot(s) but {len(values)} value(s)")
    it = iter(values)
    return SLOT.sub(lambda _: str(next(it)), question)


def _deleted(rec: dict) -> bool:
    return str(rec.get("question_deleted", 0)).strip() not in ("0", "", "False", "false")


def _as_list(value, path: Path, index: int, key: str) -> list:
    if isinstance(value, list):
        return value
    try:
        parsed = json.loads(value) if isinstance(value, str) and value.strip() else []
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: record {index}: {key} is not a JSON list ({value!r})") from exc
    if not isinstance(parsed, list):
        raise ManifestError(f"{path}: record {index}: {key} is not a list ({value!r})")
    return parsed


def _row(path: Path, index: int, rec: dict, audio_pattern: str) -> dict:
    missing = [k for k in ("video_id", "question_id", "question_content") if k not in rec]
    answer = rec.get("anser", rec.get("answer"))
    if missing or answer is None:
        raise ManifestError(f"{path}: record {index} lacks {', '.join(missing) or 'anser/answer'}")
    try:
        question = fill_slots(
            str(rec["question_content"]), _as_list(rec.get("templ_values"), path, index, "templ_values")
        )
    except ValueError as exc:
        raise ManifestError(f"{path}: record {index} (question {rec['question_id']}): {exc}") from exc
    video = str(rec["video_id"])
    try:
        audio = audio_pattern.format(video_id=video)
    except KeyError as exc:
        raise ManifestError(f"audio_pattern {audio_pattern!r}: unknown field {exc}; use {{video_id}}") from exc
    kinds = [str(t) for t in _as_list(rec.get("type"), path, index, "type")]
    return {
        "id": f"q{rec['question_id']}",
        "path": audio,
        "group": audio,
        "question": question,
        "answer": str(answer).strip().lower(),
        "question_type": "/".join(kinds) or "unknown",
        "video_id": video,
    }
