"""In-context-learning prompts for chat audio-language models: the retrieved shots and the query as
chat messages, rendered by the model's own chat template.

Two formats (``model.icl_format``):

- ``single_turn`` (default): one user turn holding every shot, each shot's audio followed by its
  instruction and answer, then the query's audio and instruction (with the options)::

      user:      Here are similar examples. The task is event classification.
                 <audio 1>classify this sound.
                 Answer: dog bark
                 <audio 2>classify this sound.
                 Answer: rain
                 <audio q>classify this sound.
                 OPTIONS: ...
      assistant: (generated)

- ``multi_turn``: one user/assistant turn pair per shot (the header in the first user turn), then
  the query's user turn::

      user: Here are similar examples. The task is ... <audio 1>classify this sound.
      assistant: dog bark
      user: <audio 2>classify this sound.
      assistant: rain
      user: <audio q>classify this sound. OPTIONS: ...

  That is the message order; the model's chat template decides where an audio's placeholder lands
  in its turn. Qwen2-Audio keeps it in place (``Here are similar examples. ...\nAudio 1:
  <|AUDIO|>\nclassify this sound.``); AF3's and Music Flamingo's templates put each user turn's
  ``<sound>`` first, so their first turn renders as ``<sound>Here are similar examples. The task
  is ...\nclassify this sound.``: the header comes after shot 1's audio (tested in
  ``tests/test_backends_decoding.py``).

The texts are AF1's (`rag_flamingo.prompts`: the retrieval header, the task prefix, the task's
instruction or the AQA question, the options block, the answer text) in their natural case; shots
carry no options, the query does, as in AF1. Zero shots: one user turn with the task prefix, the
query's audio and instruction. A message's content is a list of parts, ``{"type": "audio"}`` and
``{"type": "text", "text": ...}``, in prompt order (`rag_flamingo.backends.transformers_audio`
renders them).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError, did_you_mean
from ..prompts import answer_text, format_options, icl_header, question_text
from ..retrieval import Shot
from ..tasks import TaskSpec, get_task

ICL_FORMATS = ("single_turn", "multi_turn")
AUDIO_PART = {"type": "audio"}


def check_icl_format(name: str) -> str:
    if name not in ICL_FORMATS:
        raise ConfigError(
            f"model.icl_format={name!r} is unknown{did_you_mean(name, ICL_FORMATS)}; use {' or '.join(ICL_FORMATS)}"
        )
    return name


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def _instruction(task: TaskSpec, item: dict, options: Sequence[str] | None = None) -> str:
    block = format_options(options, task.options_style, task.label_map) if options else ""
    return question_text(task, item).strip() + block


def header(task: TaskSpec, shots: int, mode: str = "knn") -> str:
    """What the prompt starts with: the retrieval header (with shots) and the task."""
    lead = icl_header(mode)  # checked even without shots
    return ((lead if shots else "") + task.prefix).strip() + "\n"


def chat_messages(
    task: TaskSpec | str,
    query_item: dict,
    shots: Sequence[Shot],
    options: Sequence[str] | None,
    icl_format: str = "single_turn",
    mode: str = "knn",
) -> list[dict]:
    """The conversation for ``query_item`` with ``shots`` (prompt order), ending with the user turn
    of the query; every shot and the query own one audio part, in that order."""
    task = get_task(task)
    check_icl_format(icl_format)
    if options and not task.options:
        raise ConfigError(f"task {task.name} takes no options list; pass options=None")
    query = [AUDIO_PART, _text(_instruction(task, query_item, options))]
    first = _text(header(task, len(shots), mode))
    if icl_format == "single_turn" or not shots:
        parts = [first]
        for shot in shots:
            parts += [AUDIO_PART, _text(f"{_instruction(task, shot.item)}\nAnswer: {answer_text(task, shot.item)}\n")]
        return [{"role": "user", "content": parts + query}]
    messages: list[dict] = []
    for i, shot in enumerate(shots):
        lead = [first] if i == 0 else []
        messages.append({"role": "user", "content": lead + [AUDIO_PART, _text(_instruction(task, shot.item))]})
        messages.append({"role": "assistant", "content": [_text(answer_text(task, shot.item))]})
    messages.append({"role": "user", "content": query})
    return messages


def count_audios(messages: Sequence[dict]) -> int:
    return sum(1 for m in messages for p in m["content"] if p.get("type") == "audio")
