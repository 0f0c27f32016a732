"""The task registry: each task's family, the reference's task prefix and prompt, and how its
options are written, as in Audio Flamingo v1's ``foundation/data/data.py``
(https://github.com/NVIDIA/audio-flamingo/blob/5ea6f6d6dc50b35f24d0362ef0c24680b5199414/foundation/data/data.py).
Rendering them into prompts is `rag_flamingo.prompts`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .errors import ConfigError

# The reference's EMOTION_MAP_DICT (data.py): option names and answers of emotion tasks.
EMOTION_MAP = {
    "amused": "amused",
    "anger": "angry",
    "angry": "angry",
    "anxious": "anxious",
    "apologetic": "apologetic",
    "assertive": "assertive",
    "calm": "calm",
    "concerned": "concerned",
    "contempt": "contempt",
    "disgust": "disgusted",
    "disgusted": "disgusted",
    "encouraging": "encouraging",
    "excited": "excited",
    "fear": "fearful",
    "fearful": "fearful",
    "frustated": "frustated",
    "happy": "happy",
    "joy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "sadness": "sad",
    "sleepy": "sleepy",
    "surprise": "surprised",
    "surprised": "surprised",
    "pleasantly surprised": "pleasantly surprised",
}


class TaskFamily(StrEnum):
    """What kind of answer a task wants (and so which metrics score it)."""

    CAPTIONING = "captioning"
    AQA = "aqa"
    CLASSIFICATION = "classification"  # one label
    TAGGING = "tagging"  # several labels


@dataclass(frozen=True)
class TaskSpec:
    """One task: its family, the reference prefix and prompt, and how options are written.

    ``options_style``: ``list`` (``\\nOPTIONS:\\n - a.\\n - b.``, sorted), ``binary``
    (``\\nOPTIONS:\\nyes.\\nno.``), ``all_labels`` (`` All labels are: a, b.``, given order).
    """

    name: str
    family: TaskFamily
    prefix_task: str  # "audio captioning" -> "The task is audio captioning. "
    prompt: str  # the instruction; for AQA the question takes its place
    options: bool  # whether the query may carry an options list
    options_style: str = "list"
    label_map: dict | None = field(default=None, hash=False, compare=False)
    shot_options: bool = False  # AQA: yes/no shots keep OPTIONS like the reference

    @property
    def prefix(self) -> str:
        return f"The task is {self.prefix_task}. "

    def map_label(self, label: str) -> str:
        """The name the reference gives ``label`` (emotion tasks: ``joy`` -> ``happy``)."""
        return self.label_map.get(label.lower(), label) if self.label_map else label


def _task(name, family, prefix_task, prompt, options, **kw) -> TaskSpec:
    return TaskSpec(name, TaskFamily(family), prefix_task, prompt, options, **kw)


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        # AC_short; MusicCaps replaces "sound" by "music" in the prompt
        _task("captioning", "captioning", "audio captioning", "describe the sound in a sentence.", False),
        _task("music_captioning", "captioning", "music captioning", "describe the music in a sentence.", False),
        # Clotho-AQA / Music-AVQA: AQA_binary_instruction ("question:" -> "please answer this question:")
        _task("aqa", "aqa", "audio question answering", "", True, options_style="binary", shot_options=True),
        # single-label: UrbanSound8K / NonSpeech7k style sound events (alias of event_classification)
        _task("classification", "classification", "event classification", "classify this sound.", True),
        _task("event_classification", "classification", "event classification", "classify this sound.", True),
        _task("scene_classification", "classification", "scene classification", "classify this sound.", True),
        _task(
            "emotion_classification",
            "classification",
            "emotion classification",
            "what is the emotion of this speech?",
            True,
            label_map=EMOTION_MAP,
        ),
        _task(
            "sentiment_classification",
            "classification",
            "sentiment classification",
            "what is the sentiment of this speech?",
            True,
        ),
        _task(
            "instrument_classification",
            "classification",
            "instrument classification",
            "what is the instrument of this music?",
            True,
        ),
        # NSynth-SourceClassification / NSynth-QualityClassification: the code paths of AF1's data.py
        # (augment_single_classification and its options; the quality prompt); no released config uses them
        _task(
            "source_classification",
            "classification",
            "source classification",
            "what is the source of this music?",
            True,
        ),
        _task(
            "quality_classification",
            "tagging",
            "quality classification",
            "what are the qualities of the music?",
            False,
        ),
        _task(
            "genre_classification", "classification", "genre classification", "what is the genre of this music?", True
        ),
        # multi-label: chime-home / SONYC-UST (EventClassification); options = " All labels are: ..."
        _task(
            "tagging",
            "tagging",
            "event classification",
            "use a few labels to describe this sound.",
            True,
            options_style="all_labels",
        ),
        _task(
            "fsd50k_tagging",
            "tagging",
            "event classification",
            "describe this sound in the order from specific to general.",
            False,
        ),
    ]
}


def get_task(task: TaskSpec | str) -> TaskSpec:
    if isinstance(task, TaskSpec):
        return task
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[task]
