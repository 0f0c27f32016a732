"""The project's exception types: errors a user can cause, each naming the file/row and the fix."""

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, candidates: Iterable) -> str:
    """`` (did you mean 'x'?)`` for the candidate closest to a misspelt ``word``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class RagFlamingoError(Exception):
    """Base class for every error a user can cause and fix."""


class AudioError(RagFlamingoError):
    """An audio file cannot be used (missing, unreadable, empty, silent, too short)."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ManifestError(RagFlamingoError):
    """A manifest is malformed (missing column, duplicate id, bad JSON)."""


class CheckpointError(RagFlamingoError):
    """A checkpoint is missing, of the wrong kind, or its keys/shapes do not match."""


class StoreError(RagFlamingoError):
    """An index store is missing, incomplete or does not match the encoder/config used with it."""


class ConfigError(RagFlamingoError):
    """A configuration value is invalid."""
