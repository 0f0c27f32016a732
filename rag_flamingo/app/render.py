"""HTML the tabs show: audio players and tables of shots.

Players carry their audio inline (a WAV data URI of the first ``seconds``, decoded by
`rag_flamingo.audio.load_audio`) instead of a file URL: the page then serves no folder of the
machine (Gradio's ``allowed_paths`` would expose whole audio roots), only the clips it shows.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from ..errors import AudioError
from ..labels import item_labels

PLAYER_RATE = 16000  # enough to recognise a sound; keeps a 10 s player near 430 kB of page


def audio_uri(path: str | Path, seconds: float) -> str:
    """``data:audio/wav;base64,...`` of the first ``seconds`` of ``path`` (mono, 16 kHz, 16-bit)."""
    wave = load_audio(path, seconds)
    buf = io.BytesIO()
    sf.write(buf, wave, PLAYER_RATE, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def load_audio(path: str | Path, seconds: float):
    from ..audio import load_audio as decode

    return decode(path, PLAYER_RATE, max_seconds=seconds)


def player(path: str | Path | None, seconds: float) -> str:
    """An ``<audio>`` element for ``path``, or a note saying why there is none."""
    if path is None:
        return "<em>no audio</em>"
    try:
        return f'<audio controls preload="none" src="{audio_uri(path, seconds)}"></audio>'
    except AudioError as exc:
        return f"<em>{html.escape(exc.reason)}</em>"


def item_text(item: dict) -> str:
    """What a shot says: its labels, else its first caption."""
    labels = item_labels(item)
    if labels:
        return ", ".join(labels)
    captions = item.get("captions") or []
    return str(captions[0]) if captions else ""


def shots_text(k: int | None) -> str:
    """``", 1 shot"`` / ``", 4 shots"``; nothing for a predictor that uses none."""
    return "" if k is None else f", {k} shot{'' if k == 1 else 's'}"


@dataclass
class ShotRow:
    """One row of a shots table."""

    id: str
    text: str  # label(s) or caption
    similarity: float | None
    audio: str | Path | None
    status: str = "used"  # or "dropped (prompt budget)" (flamingo)


def shots_table(rows: Sequence[ShotRow], seconds: float, title: str = "Retrieved shots (prompt order)") -> str:
    """A table: # (the order given), player, label or caption, similarity, whether the prompt held it."""
    if not rows:
        return f"<p><strong>{html.escape(title)}</strong>: none</p>"
    head = "<tr><th>#</th><th>audio</th><th>id</th><th>label / caption</th><th>similarity</th><th>used</th></tr>"
    body = "".join(
        "<tr class='shot'>"
        f"<td>{i}</td><td>{player(r.audio, seconds)}</td><td>{html.escape(r.id)}</td>"
        f"<td class='shot-label'>{html.escape(r.text)}</td>"
        f"<td>{'' if r.similarity is None else f'{r.similarity:.4f}'}</td><td>{html.escape(r.status)}</td></tr>"
        for i, r in enumerate(rows, 1)
    )
    return (
        f"<p><strong>{html.escape(title)}</strong></p>"
        f"<table class='rag-shots'><thead>{head}</thead><tbody>{body}</tbody></table>"
    )


def message(text: str, kind: str = "error") -> str:
    """A message in the page (markdown): errors stand out, notes do not."""
    lines = [line for line in str(text).splitlines() if line.strip()] or [""]
    mark = "**Error:** " if kind == "error" else ""
    return "\n\n".join([mark + lines[0], *lines[1:]])
