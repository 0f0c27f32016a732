"""Uploaded and recorded clips: checked before any model sees them, and the notes the page shows.

A clip is refused with a message (never a traceback) when it is missing, over the size limit, not
decodable audio, empty, or silent; a clip longer than what an encoder uses is kept and the page says
which part is used (the documented crop policies: aisfx its first 10 s, the AF1 window scheme its
first 33.25 s; `rag_flamingo.audio.crop_seconds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from ..audio import check_usable, crop_seconds, load_audio
from ..errors import AudioError


@dataclass
class Clip:
    path: Path
    seconds: float
    sample_rate: int


def check_clip(path: str | Path | None, max_mb: float) -> Clip:
    """The upload at ``path`` if it is usable audio, else AudioError with the reason to show."""
    if not path:
        raise AudioError("(no clip)", "upload or record a clip first")
    path = Path(path)
    if not path.is_file():
        raise AudioError(path.name, "the upload is gone (uploads are kept for an hour); upload it again")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(path.name, "the file is empty")
    if size > max_mb * 1024 * 1024:
        raise AudioError(path.name, f"{size / 1024 / 1024:.1f} MB is over the {max_mb:g} MB upload limit")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile has one error type for every failure
        raise AudioError(path.name, "not an audio file this app can decode (wav, flac, ogg, mp3, ...)") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(path.name, "the file holds no audio samples")
    seconds = info.frames / info.samplerate
    # silence is checked on (at most) the first minute at a low rate: cheap, and what the encoders see
    check_usable(load_audio(path, 8000, max_seconds=60.0), 8000, path.name)
    return Clip(path, seconds, int(info.samplerate))


def crop_notes(clip: Clip, encoders) -> list[str]:
    """One line per encoder that uses only the start of this clip."""
    notes = []
    for enc in encoders:
        used = crop_seconds(enc) if enc is not None else None
        if used and clip.seconds > used + 1e-6:
            name = getattr(enc, "name", type(enc).__name__)
            notes.append(
                f"The clip is {clip.seconds:.2f} s long; {name} uses its first {used:g} s (the documented crop policy)."
            )
    return notes
