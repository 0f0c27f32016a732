"""Dataset sources: manifest reading (the contract), plus the built-in `folder` and `demo` sources."""

from .manifest import read_manifest, write_manifest  # noqa: F401
from .sources import resolve_split  # noqa: F401
