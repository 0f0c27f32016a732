"""Multi-turn chat with the AF1 chat model (inference template of
https://github.com/NVIDIA/audio-flamingo/blob/5ea6f6d6dc50b35f24d0362ef0c24680b5199414/inference/data.py).

Prompt: ``</s>the task is dialog.<audio>`` then, per round, ``user: {u} \\nassistant: <SEP>``;
an answered round continues with ``{a}<|endofchunk|></s>\\n``. Rounds are generated one at a time,
feeding the model's previous answers back (the reference's ``inference_examples.py``). The released
chat model was trained with up to 4 rounds, so `ChatSession` refuses a 5th.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from threading import Thread
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError
from ..tokens import BOS, EOC_TOKEN, EOS, MEDIA_TOKEN, SEP_TOKEN
from .generation import generate
from .generation_settings import GenerationSettings
from .modeling import AudioFlamingo
from .tokenizer import postprocess_output, tokenize_prompts

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CHAT_PREFIX = "the task is dialog."
MAX_ROUNDS = 4


def chat_prompt(rounds: list[tuple[str, str | None]]) -> str:
    """The reference chat string for ``[(user, answer or None), ...]``; only the last may be open."""
    text = f"{BOS}{CHAT_PREFIX}{MEDIA_TOKEN}"
    for i, (user, answer) in enumerate(rounds):
        text += f"user: {user} \nassistant: {SEP_TOKEN}"
        if answer is not None:
            text += f"{answer}{EOC_TOKEN}{EOS}\n"
        elif i != len(rounds) - 1:
            raise ValueError("only the last round may be unanswered")
    return text


@dataclass
class ChatSession:
    """One audio, up to ``max_rounds`` user turns; ``ask`` returns the post-processed answer."""

    model: AudioFlamingo
    tokenizer: PreTrainedTokenizerBase
    audio_features: torch.Tensor  # (1, L, D): one audio packed into the chat model's slots
    audio_mask: torch.Tensor  # (1, L)
    # the reference's chat settings (inference_examples.py), as rag_flamingo/conf/model/chat.yaml
    settings: GenerationSettings = field(default_factory=lambda: GenerationSettings(do_sample=True, top_p=0.95))
    max_rounds: int = MAX_ROUNDS
    history: list[tuple[str, str]] = field(default_factory=list)

    def ask(self, user: str, streamer: Any = None) -> str:
        """The answer to ``user`` (recorded in ``history``); ``streamer`` gets its tokens as they come."""
        if len(self.history) >= self.max_rounds:
            raise ConfigError(f"the AF1 chat model supports up to {self.max_rounds} rounds; start a new ChatSession")
        prompt = chat_prompt([*self.history, (user, None)])
        ids, mask = tokenize_prompts(self.tokenizer, [prompt])
        out = generate(self.model, ids, mask, self.audio_features, self.audio_mask, self.settings, streamer=streamer)
        text = self.tokenizer.decode(out.new_tokens[0], skip_special_tokens=False)
        assert isinstance(text, str)  # one sequence decodes to one string
        answer = postprocess_output(text)
        self.history.append((user, answer))
        return answer

    def ask_stream(self, user: str, lock: AbstractContextManager | None = None) -> Iterator[str]:
        """The answer to ``user`` as it grows, post-processed (transformers' ``TextIteratorStreamer``;
        the model runs in a thread, under ``lock`` when given); the last value is `ask`'s answer."""
        from transformers import TextIteratorStreamer

        if self.settings.num_beams > 1:  # transformers streams one sequence; beam search keeps several
            raise ConfigError(
                f"a streamed answer is one sequence; model.generation.num_beams={self.settings.num_beams} keeps "
                f"several: use num_beams=1 to stream (or ask without streaming)"
            )
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=False)
        done: dict[str, Any] = {}

        def run() -> None:
            try:
                with lock or nullcontext():
                    done["answer"] = self.ask(user, streamer)
            except BaseException as exc:  # handed to the reader, which re-raises it
                done["error"] = exc
                streamer.end()

        thread = Thread(target=run, daemon=True)
        thread.start()
        text = ""
        for piece in streamer:
            text += piece
            yield postprocess_output(text)
        thread.join()
        if "error" in done:
            raise done["error"]
        yield done["answer"]
