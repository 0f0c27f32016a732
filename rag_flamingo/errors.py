"""The project's exception types: errors a user can cause, each naming the file/row and the fix."""


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
