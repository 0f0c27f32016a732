"""RAVDESS (audio-only): ``Actor_NN/03-<channel>-<emotion>-<intensity>-<statement>-<repetition>-<actor>.wav``.

Zenodo record 1188976: ``Audio_Speech_Actors_01-24.zip`` (1,440 speech clips) and
``Audio_Song_Actors_01-24.zip`` (1,012 song clips), 24 actors (odd ids male, even female).
Extract either or both into the dataset root (the ``Actor_NN`` folders are found at any depth, so
``Audio_Speech_Actors_01-24/Actor_01/...`` works too). Filename fields: modality (03 audio-only),
vocal channel (01 speech, 02 song), emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry,
06 fearful, 07 disgust, 08 surprised), intensity (01 normal, 02 strong; neutral has no strong),
statement (01 "Kids are talking by the door", 02 "Dogs are sitting by the door"), repetition, actor.
Rows keep ``channel`` (speech/song), ``intensity``, ``statement``, ``repetition``, ``actor``, ``sex``.
Option ``channels=speech`` (or ``song``) keeps one vocal channel (default: both).

There is no official split. Ours is speaker-disjoint: ``test`` = actors 5, 10, 15, 20 (two male,
two female: ~17 % of the clips), ``train`` = the other 20 actors; ``all`` = every clip. Option
``test_actors=1,2,...`` names other test actors. Audio Flamingo v1 evaluates RAVDESS zero-shot.
"""

from __future__ import annotations

from pathlib import Path

from rag_flamingo.errors import ManifestError

from .common import Splits, audio_files, parse_speakers, speaker_splits

CHANNELS = {"01": "speech", "02": "song"}
EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
INTENSITIES = {"01": "normal", "02": "strong"}
TEST_ACTORS = (5, 10, 15, 20)


def make(metadata: Path, channels: str = "speech,song", test_actors: str | None = None) -> Splits:
    keep = {c.strip() for c in str(channels).split(",") if c.strip()}
    if not keep or keep - set(CHANNELS.values()):
        raise ManifestError(f"channels={channels!r}: use speech, song or speech,song")
    actor_dirs = sorted(p for p in metadata.rglob("Actor_*") if p.is_dir())
    rows = []
    for folder in actor_dirs:
        for f in audio_files(folder):
            row = _row(metadata, f)
            if row is not None and row["channel"] in keep:
                rows.append(row)
    if not rows:
        raise ManifestError(
            f"{metadata}: no Actor_NN/03-*.wav files (extract Audio_Speech_Actors_01-24.zip and/or "
            "Audio_Song_Actors_01-24.zip from Zenodo record 1188976 here)"
        )
    chosen = parse_speakers(test_actors, "test_actors")
    return speaker_splits(rows, chosen if chosen is not None else TEST_ACTORS)


def _row(metadata: Path, f: Path) -> dict | None:
    fields = f.stem.split("-")
    if len(fields) != 7 or not all(x.isdigit() for x in fields):
        raise ManifestError(f"{f}: expected a RAVDESS name like 03-01-05-02-01-01-12{f.suffix}")
    modality, channel, emotion, intensity, statement, repetition, actor = fields
    if modality != "03":
        return None  # 01/02: the video files of the same recordings, not audio-only
    if channel not in CHANNELS or emotion not in EMOTIONS or intensity not in INTENSITIES:
        raise ManifestError(f"{f}: unknown channel, emotion or intensity code in {f.stem}")
    return {
        "id": f.stem,
        "path": f.relative_to(metadata).as_posix(),
        "label": EMOTIONS[emotion],
        "channel": CHANNELS[channel],
        "intensity": INTENSITIES[intensity],
        "statement": int(statement),
        "repetition": int(repetition),
        "actor": int(actor),
        "sex": "male" if int(actor) % 2 else "female",
    }
