"""`GenerationSettings`: every decoding setting in one validated record.

The ``model.generation`` section of a model config (``rag_flamingo/conf/model/*.yaml``) becomes one of these with
`GenerationSettings.from_config`; `generation.generate` takes it whole. Settings follow Hugging Face
``generate`` semantics; ``reference_cache_quirk`` and ``seed`` are ours.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

SECTION = "model.generation"


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings: greedy (default), beam search (``num_beams > 1``) or sampling (``do_sample``).

    ``num_return_sequences``: outputs per prompt, the best beams (at most ``num_beams``) or independent
    samples (needs ``do_sample``; more than one is what the CLAP filter reranks). ``seed``: the
    sampling seed (None: torch's global generator). ``reference_cache_quirk``: reproduce the reference's
    cached decoding, where new tokens see only audio 0's windows after the first step.
    """

    max_new_tokens: int = 128
    num_beams: int = 1
    do_sample: bool = False
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 1.0
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    use_cache: bool = True
    reference_cache_quirk: bool = False
    seed: int | None = 0

    def __post_init__(self) -> None:
        self._check_types()
        rules = [
            (self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1"),
            (self.num_beams >= 1, "num_beams", "must be >= 1"),
            (self.top_k >= 0, "top_k", "must be >= 0 (0: no top-k filter)"),
            (0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]"),
            (self.temperature > 0.0, "temperature", "must be > 0"),
            (self.early_stopping in (True, False, "never"), "early_stopping", "must be true, false or 'never'"),
            (self.num_return_sequences >= 1, "num_return_sequences", "must be >= 1"),
            (
                not (self.do_sample and self.num_beams > 1),
                "do_sample",
                "beam sampling is not supported: use num_beams=1 with do_sample=true, or do_sample=false",
            ),
            (
                self.num_beams == 1 or self.num_return_sequences <= self.num_beams,
                "num_return_sequences",
                f"must be <= num_beams={self.num_beams}",
            ),
            (
                self.num_beams > 1 or self.do_sample or self.num_return_sequences == 1,
                "num_return_sequences",
                "> 1 needs do_sample=true (several samples, e.g. for the CLAP filter) or num_beams >= it",
            ),
        ]
        for ok, name, rule in rules:
            if not ok:
                raise ConfigError(f"{SECTION}.{name}={getattr(self, name)!r}: {rule}")

    def _check_types(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _FLOATS and isinstance(value, (int, float)) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
            elif not _type_ok(f.name, value):
                raise ConfigError(f"{SECTION}.{f.name}={value!r}: expected {_EXPECTED[f.name]}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, **overrides: Any) -> GenerationSettings:
        """Settings from a ``model.generation`` mapping (missing keys keep their defaults); an unknown
        key is a ConfigError with the closest known name. ``overrides`` win over the section."""
        values = {**dict(section or {}), **overrides}
        check_names(values)
        return cls(**values)

    def replace(self, **changes: Any) -> GenerationSettings:
        """A copy with ``changes`` applied (names checked, the result validated)."""
        check_names(changes)
        return dataclasses.replace(self, **changes)


_FLOATS = {"top_p", "temperature", "length_penalty"}
_EXPECTED = {
    "max_new_tokens": "an integer",
    "num_beams": "an integer",
    "top_k": "an integer",
    "num_return_sequences": "an integer",
    "seed": "an integer or null",
    "do_sample": "true or false",
    "use_cache": "true or false",
    "reference_cache_quirk": "true or false",
    "early_stopping": "true, false or 'never'",
    "top_p": "a number",
    "temperature": "a number",
    "length_penalty": "a number",
}


def _type_ok(name: str, value: Any) -> bool:
    expected = _EXPECTED[name]
    if expected.startswith("an integer"):
        return (isinstance(value, int) and not isinstance(value, bool)) or (value is None and name == "seed")
    if expected == "true or false":
        return isinstance(value, bool)
    if name == "early_stopping":
        return isinstance(value, bool) or value == "never"
    return False  # numbers are converted by the caller


def check_names(values: Mapping[str, Any]) -> None:
    """ConfigError naming each key that is not a setting, with the closest known name."""
    known = [f.name for f in dataclasses.fields(GenerationSettings)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{SECTION}.{key}: not a generation setting; {hint}known: {', '.join(known)}")
