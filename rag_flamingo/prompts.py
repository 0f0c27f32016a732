"""Audio Flamingo v1 prompt templates: the one place prompts are rendered (each task's own texts are
`rag_flamingo.tasks`).

Three layouts, as in the reference code (https://github.com/NVIDIA/audio-flamingo/blob/5ea6f6d6dc50b35f24d0362ef0c24680b5199414/,
``foundation/data/data.py`` and ``inference/data.py``):

- ``eval`` (default; what the reference evaluates with, val/test and ICL samples)::

      </s>the task is audio captioning.<audio>describe the sound in a sentence.\\nanswer:<SEP>

  prefix stripped + lowercased, no space before ``<audio>``, prompt/options/answers lowercased.
- ``train`` (the training samples)::

      </s>The task is audio captioning. <audio>describe the sound in a sentence.\\nAnswer:<SEP>

  prefix capitalised with a trailing space, ``\\nOPTIONS:``/``\\nAnswer:`` keep their case.
- ``inference`` (the reference's single-audio API, ``inference/data.py``)::

      </s>the task is audio captioning. <audio>describe the sound in a sentence.\\nanswer:<SEP>

  like ``eval`` but with one space before ``<audio>``.

With shots (ICL), every layout is::

    </s>Here are similar examples. The task is X. <audio>{shot prompt}<SEP>{shot answer}<|endofchunk|>
    ... <audio>{query prompt}<SEP>

where the header and prefix keep their case; prompts/answers are lowercased (``eval``/``inference``)
or keep ``\\nAnswer:``/``\\nOPTIONS:`` (``train``). The reference has no ICL layout for its
inference API; ``inference`` with shots renders the ``eval`` ICL layout. The header is
``Here are random examples. `` for ``mode="random"`` (the reference's ``interleaved_random``).
Shots carry no OPTIONS list (reference ``no_options``), except that AQA shots whose answer is yes/no
keep ``\\nOPTIONS:\\nyes.\\nno.``: the reference's ``augment_binary_AQA`` ignores ``no_options``
(set ``shot_options=False`` for options on the query only). The prompt ends at the query's
``<SEP>``; `Prompt.full_text` appends an answer, ``<|endofchunk|>`` and ``</s>`` (the reference's
evaluation sample).

Budget: at most ``max_windows`` audio windows (128 = 8 audios x 16 windows) and, when a token
counter is given, ``max_tokens`` tokens (default 2048 - 128 new tokens). Shots that do not fit are
dropped lowest-score first (the farthest neighbours); the others keep their order; a warning says
how many were dropped. The query is never dropped: if it alone does not fit, ConfigError.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import ConfigError, ManifestError
from .labels import item_labels
from .metrics.aqa import YES_NO
from .retrieval import Shot
from .tasks import TaskFamily, TaskSpec, get_task
from .tokens import BOS, EOC_TOKEN, EOS, MEDIA_TOKEN, SEP_TOKEN

logger = logging.getLogger(__name__)

ICL_HEADERS = {  # balanced shots are the nearest of each likely class: AF1's "similar" wording
    "knn": "Here are similar examples. ",
    "balanced": "Here are similar examples. ",
    "random": "Here are random examples. ",
}
TEMPLATES = ("eval", "train", "inference")


def icl_header(mode: str) -> str:
    """The sentence that introduces the shots of a retrieval ``mode`` (ConfigError for an unknown mode)."""
    if mode not in ICL_HEADERS:
        raise ConfigError(f"unknown retrieval mode {mode!r}; use one of {', '.join(ICL_HEADERS)}")
    return ICL_HEADERS[mode]


OPT_MAX_POSITIONS = 2048
DEFAULT_MAX_NEW_TOKENS = 128  # every reference entry point generates at most 128 tokens
DEFAULT_MAX_TOKENS = OPT_MAX_POSITIONS - DEFAULT_MAX_NEW_TOKENS
WINDOWS_PER_AUDIO = 16  # clap_config.max_num_window: 7 s windows, hop 1.75 s, 33.25 s
MAX_WINDOWS = 128  # max_num_media: 8 audios (7 shots + query) x 16 windows

# ----------------------------------------------------------------------------- item texts


def _item_name(item: dict) -> str:
    return str(item.get("id", item.get("path", "?")))


def answer_text(task: TaskSpec | str, item: dict) -> str:
    """The target text of ``item`` for ``task``.

    captioning: the row's first caption (``captions[0]``; AF1 has one caption per manifest row, so a
    recording with 5 captions is 5 rows of one group and retrieval picks one row per group at
    random, as the reference does); classification: the label (emotion names mapped like the
    reference); tagging: the labels joined with ", " (trailing "." removed); AQA: the answer.
    """
    task = get_task(task)
    if task.family == TaskFamily.CAPTIONING:
        captions = item.get("captions") or ([item["caption"]] if item.get("caption") else [])
        if not captions:
            raise ManifestError(
                f"item {_item_name(item)}: no 'captions' for task {task.name}; "
                f"add a 'captions' list to its manifest row"
            )
        return str(captions[0]).strip()
    if task.family == TaskFamily.AQA:
        if item.get("answer") in (None, ""):
            raise ManifestError(
                f"item {_item_name(item)}: no 'answer' for task {task.name}; "
                f"add 'question' and 'answer' to its manifest row"
            )
        return str(item["answer"]).strip()
    labels = item_labels(item)
    if not labels:
        raise ManifestError(
            f"item {_item_name(item)}: no 'label'/'labels' for task {task.name}; add them to its manifest row"
        )
    if task.family == TaskFamily.CLASSIFICATION:
        if len(labels) != 1:
            raise ManifestError(
                f"item {_item_name(item)}: {len(labels)} labels {labels} for the "
                f"single-label task {task.name}; use a tagging task or one label"
            )
        return task.map_label(str(labels[0]).strip())
    text = ", ".join(str(label).strip() for label in labels)
    return text[:-1] if text.endswith(".") else text


def question_text(task: TaskSpec | str, item: dict) -> str:
    """The instruction of ``item``: for AQA its question rewritten like the reference
    (``question: q`` -> ``please answer this question: q``; a bare ``q`` gets the same lead-in);
    for every other task the task's fixed prompt."""
    task = get_task(task)
    if task.family != TaskFamily.AQA:
        return task.prompt
    question = str(item.get("question") or "").strip()
    if not question:
        raise ManifestError(
            f"item {_item_name(item)}: no 'question' for task {task.name}; "
            f"add 'question' and 'answer' to its manifest row"
        )
    lead = "please answer this question:"
    lowered = question.lower()
    if lowered.startswith(lead):
        return question
    if lowered.startswith("question:"):
        return lead + question[len("question:") :]
    return f"{lead} {question}"


def _is_yes_no(answer: str) -> bool:
    return all(part.strip().lower() in YES_NO for part in str(answer).split(","))


def format_options(labels: Sequence[str], style: str = "list", label_map: dict | None = None) -> str:
    """The options block appended to a prompt (train casing; the eval template lowercases it).

    ``list``: ``\\nOPTIONS:\\n - a.\\n - b.`` (mapped, de-duplicated, sorted as the reference does);
    ``binary``: ``\\nOPTIONS:\\nyes.\\nno.`` (given order; yes/no always yes first);
    ``all_labels``: `` All labels are: a, b.`` (given order).
    """
    labels = [str(label).strip() for label in labels]
    if not labels:
        raise ConfigError("format_options needs at least one label")
    if label_map:
        labels = [label_map.get(label.lower(), label) for label in labels]
    if style == "list":
        return "\nOPTIONS:\n - {}.".format(".\n - ".join(sorted(set(labels))))
    if style == "binary":
        if {label.lower() for label in labels} == set(YES_NO):
            labels = list(YES_NO)
        return "\nOPTIONS:\n" + "\n".join(f"{label}." for label in labels)
    if style == "all_labels":
        return " All labels are: " + ", ".join(labels) + "."
    raise ConfigError(f"unknown options style {style!r}; use list, binary or all_labels")


def default_options(task: TaskSpec | str, item: dict, labels: Sequence[str] | None = None) -> list[str] | None:
    """The options the reference gives a query: AQA yes/no when the item's answer is yes/no;
    single-label classification: ``labels`` (the dataset's label set, e.g. ``store.label_set()``);
    tagging: ``labels`` if given (reference: chime-home, SONYC-UST); otherwise None."""
    task = get_task(task)
    if not task.options:
        return None
    if task.family == TaskFamily.AQA:
        return list(YES_NO) if item.get("answer") and _is_yes_no(item["answer"]) else None
    return list(labels) if labels else None


# ----------------------------------------------------------------------------- rendering


def _segment_prompt(task: TaskSpec, item: dict, options: Sequence[str] | None, template: str) -> str:
    """One audio's prompt text (instruction + options + answer cue) in the template's casing."""
    block = format_options(options, task.options_style, task.label_map) if options else ""
    if template == "train":  # manifest prompt lowercased first; OPTIONS/Answer keep their case
        return question_text(task, item).lower().strip() + block + "\nAnswer:"
    return (question_text(task, item) + block + "\nAnswer:").strip().lower()


def _answer(task: TaskSpec, item: dict) -> str:
    return answer_text(task, item).strip().lower()


def _shot_options(task: TaskSpec, item: dict, enabled: bool) -> list[str] | None:
    if enabled and task.family == TaskFamily.AQA and item.get("answer") and _is_yes_no(item["answer"]):
        return list(YES_NO)
    return None


def render(
    task: TaskSpec | str,
    query_item: dict,
    shots: Sequence[Shot],
    options: Sequence[str] | None,
    template: str = "eval",
    mode: str = "knn",
    shot_options: bool | None = None,
) -> str:
    """The prompt text (up to and including the query's ``<SEP>``) with every shot given."""
    task = get_task(task)
    if template not in TEMPLATES:
        raise ConfigError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}")
    header = icl_header(mode)
    if options and not task.options:
        raise ConfigError(f"task {task.name} takes no options list; pass options=None")
    query = _segment_prompt(task, query_item, options, template)
    if not shots:
        if template == "train":
            return f"{BOS}{task.prefix}{MEDIA_TOKEN}{query}{SEP_TOKEN}"
        space = " " if template == "inference" else ""
        return f"{BOS}{task.prefix.strip().lower()}{space}{MEDIA_TOKEN}{query}{SEP_TOKEN}"
    with_options = task.shot_options if shot_options is None else shot_options
    parts = [BOS, header, task.prefix]
    for shot in shots:
        shot_prompt = _segment_prompt(task, shot.item, _shot_options(task, shot.item, with_options), template)
        parts.append(f"{MEDIA_TOKEN}{shot_prompt}{SEP_TOKEN}{_answer(task, shot.item)}{EOC_TOKEN}")
    parts.append(f"{MEDIA_TOKEN}{query}{SEP_TOKEN}")
    return "".join(parts)


@dataclass
class Prompt:
    """A generation prompt: text ending at the query's ``<SEP>``; shots kept (prompt order) and
    dropped by the budget; ``num_audios`` = kept shots + the query (the query is the last audio)."""

    text: str
    shots: list[Shot]
    dropped: list[Shot]
    windows: list[int] = field(default_factory=list)  # windows of each audio, prompt order
    template: str = "eval"

    @property
    def num_audios(self) -> int:
        return len(self.shots) + 1

    def full_text(self, answer: str) -> str:
        """The reference's complete sample: prompt + answer (stripped, lowercased as in every
        layout) + ``<|endofchunk|></s>``; e.g. for teacher-forced scoring of a reference answer."""
        return f"{self.text}{answer.strip().lower()}{EOC_TOKEN}{EOS}"


def token_counter(tokenizer) -> Callable[[str], int]:
    """``count_tokens`` for a Hugging Face tokenizer (counts the automatic ``</s>`` too)."""
    return lambda text: len(tokenizer(text)["input_ids"])


def drop_order(shots: Sequence[Shot]) -> list[int]:
    """Indices of shots in the order they are dropped: lowest score first (NaN lowest), then
    later-in-prompt first."""

    def key(i: int):
        score = shots[i].score
        return (-math.inf if score is None or math.isnan(score) else score, -i)

    return sorted(range(len(shots)), key=key)


def build_prompt(
    task: TaskSpec | str,
    query_item: dict,
    shots: Sequence[Shot],
    options: Sequence[str] | None,
    template: str = "eval",
    windows_per_audio: Sequence[int] | None = None,
    max_windows: int = MAX_WINDOWS,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    mode: str = "knn",
    shot_options: bool | None = None,
    default_windows: int = WINDOWS_PER_AUDIO,
) -> Prompt:
    """The prompt for ``query_item`` with as many ``shots`` as the budget allows.

    ``windows_per_audio``: window count of each audio in prompt order, shots then query
    (default ``default_windows`` each, i.e. 16: a 128-window budget holds 7 shots + the query).
    ``max_tokens`` needs ``count_tokens``; with a counter and no ``max_tokens`` the limit is
    ``DEFAULT_MAX_TOKENS`` (2048 - 128).
    """
    task = get_task(task)
    shots = list(shots)
    windows = list(windows_per_audio) if windows_per_audio is not None else [default_windows] * (len(shots) + 1)
    if len(windows) != len(shots) + 1:
        raise ConfigError(
            f"windows_per_audio has {len(windows)} entries for {len(shots)} shots + the query; "
            f"give one per audio in prompt order, query last"
        )
    if max_tokens is not None and count_tokens is None:
        raise ConfigError("max_tokens needs count_tokens (e.g. prompts.token_counter(tokenizer))")
    token_limit = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens

    def text_of(kept: list[int]) -> str:
        return render(task, query_item, [shots[i] for i in kept], options, template, mode, shot_options)

    def over_budget(kept: list[int]) -> str | None:
        used = sum(windows[i] for i in kept) + windows[-1]
        if used > max_windows:
            return f"{used} audio windows > max_windows={max_windows}"
        if count_tokens is not None:
            n = count_tokens(text_of(kept))
            if n > token_limit:
                return f"{n} tokens > max_tokens={token_limit}"
        return None

    kept = list(range(len(shots)))
    order = drop_order(shots)
    reason = over_budget(kept)
    while reason is not None and kept:
        kept.remove(order.pop(0))
        reason = over_budget(kept)
    if reason is not None:
        raise ConfigError(
            f"query {_item_name(query_item)} alone does not fit the prompt budget ({reason}); "
            f"raise max_tokens/max_windows or shorten the options list"
        )
    dropped = [shots[i] for i in range(len(shots)) if i not in kept]
    if dropped:
        logger.warning(
            "query %s: dropped %d of %d shots to fit the prompt budget (lowest scores first)",
            _item_name(query_item),
            len(dropped),
            len(shots),
        )
    return Prompt(
        text=text_of(kept),
        shots=[shots[i] for i in kept],
        dropped=dropped,
        windows=[windows[i] for i in kept] + [windows[-1]],
        template=template,
    )
