"""The Chat tab: a dialogue about one clip with the AF1 chat model (`rag_flamingo.model.ChatSession`,
the reference chat template, up to the model's rounds: 4 for the released chat model; the reference
demo stops after one).

The clip is decoded for the model's window encoder (`rag_flamingo.audio.load_for_encoders`, the
same decoding as queries) and packed into the model's audio slots once; every round feeds the
earlier answers back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..audio import load_for_encoders, wave_for
from ..errors import ConfigError
from ..model import ChatSession, encode_prompt_audios
from .context import AppContext
from .uploads import check_clip, crop_notes


@dataclass
class Chat:
    """One dialogue: the clip it is about, and the session holding the rounds so far."""

    clip: Path
    session: ChatSession
    notes: list[str]

    @property
    def rounds_left(self) -> int:
        return self.session.max_rounds - len(self.session.history)


def start_chat(ctx: AppContext, clip_path: str | Path | None) -> Chat:
    """A new dialogue about the uploaded clip (the model is loaded on first use)."""
    clip = check_clip(clip_path, ctx.cfg.max_upload_mb)
    with ctx.lock:
        model, tokenizer, window_encoder = ctx.model_parts()
        settings, slots, rounds = ctx.chat_settings()
        wave = wave_for(load_for_encoders(clip.path, [window_encoder]), window_encoder)
        feats, mask = encode_prompt_audios(window_encoder, [[wave]], num_slots=slots)
    session = ChatSession(model, tokenizer, feats, mask, settings=settings, max_rounds=rounds)
    return Chat(clip.path, session, crop_notes(clip, [window_encoder]))


def say(ctx: AppContext, chat: Chat, message: str) -> str:
    """The model's answer to ``message`` (the next round of ``chat``)."""
    text = (message or "").strip()
    if not text:
        raise ConfigError("type a message first")
    if chat.rounds_left <= 0:
        raise ConfigError(
            f"the chat model was trained for up to {chat.session.max_rounds} rounds; press Clear to start over"
        )
    with ctx.lock:
        return chat.session.ask(text).strip()
