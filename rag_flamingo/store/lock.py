"""The store's write lock (``build.lock``), held by the one build_index writing a store."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import StoreError
from .layout import LOCK_FILE


@contextlib.contextmanager
def build_lock(root: Path) -> Iterator[None]:
    """Hold the store's write lock (fcntl.flock: a killed holder leaves no stale lock) or refuse."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"{root}: another build_index is writing this store ({LOCK_FILE} is locked); "
                f"wait for it to finish or pick another store="
            ) from None
        yield
    finally:
        os.close(fd)
