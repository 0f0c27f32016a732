"""File hashing: the one sha256-of-a-file helper (store checksums, manifest and checkpoint hashes).

A floor module: it imports neither torch nor faiss, so anything may use it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20


def file_sha256(path: str | Path, chunk: int = CHUNK_BYTES) -> str:
    """sha256 (64 hex digits) of a file's bytes, read in chunks of ``chunk`` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
