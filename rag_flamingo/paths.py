"""Where things live: the Hydra config folder, the data root and the cache root.

Nothing in source files is ever edited to point at data: the roots come from config, and these
environment variables override the defaults:
  RAG_FLAMINGO_DATA_ROOT   where datasets live        (default: ~/.cache/rag_flamingo/data)
  RAG_FLAMINGO_CACHE_ROOT  generated data, indices     (default: ~/.cache/rag_flamingo)
  RAG_FLAMINGO_CONF        the Hydra config folder     (default: <repo>/conf)
"""

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("RAG_FLAMINGO_CACHE_ROOT", Path.home() / ".cache" / "rag_flamingo"))


def data_root() -> Path:
    return Path(os.environ.get("RAG_FLAMINGO_DATA_ROOT", cache_root() / "data"))


def conf_dir() -> Path:
    return Path(os.environ.get("RAG_FLAMINGO_CONF", Path(__file__).resolve().parents[1] / "conf"))
