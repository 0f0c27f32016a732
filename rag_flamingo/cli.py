"""What the console scripts (build_index, evaluate, rag_classify) share: config composition, the
``--help`` / logging / error-exit contract, and handing the config's roots to the environment.

The Hydra compose API is used instead of ``@hydra.main`` so that a run has no side effects beyond
its output folder (no ``outputs/`` dirs, no logging reconfiguration), and the configs
(``rag_flamingo/conf``, shipped in the package) are found through ``rag_flamingo.paths.conf_dir()``
wherever the console script is installed from, plus the user folders of ``paths.user_conf_dirs()``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from . import paths
from .errors import RagFlamingoError


def compose_config(config_name: str, overrides: list[str]) -> dict:
    """``rag_flamingo/conf/<config_name>.yaml`` composed with Hydra overrides, resolved, as a plain dict."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(paths.conf_dir().resolve()), version_base="1.3", job_name=config_name):
        cfg = compose(config_name=config_name, overrides=paths.with_user_conf(overrides))
    OmegaConf.resolve(cfg)
    return OmegaConf.to_container(cfg)


def export_roots(cfg: dict) -> None:
    """The config wins over the environment for everything downstream (dataset sources read these)."""
    os.environ["RAG_FLAMINGO_DATA_ROOT"] = str(cfg["data_root"])
    os.environ["RAG_FLAMINGO_CACHE_ROOT"] = str(cfg["cache_root"])


def run_main(prog: str, doc: str | None, body: Callable[[list[str]], int | None], argv: list[str] | None = None,
             log_level: str = "INFO") -> int:
    """Run ``body(argv)``: ``-h``/``--help`` prints ``doc``; a user error (bad config, bad input)
    prints ``<prog>: error: ...`` and returns 2 instead of a traceback."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(doc)
        return 0
    logging.basicConfig(level=os.environ.get("RAG_FLAMINGO_LOG", log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it found: noise here
    try:
        return body(argv) or 0
    except (RagFlamingoError, HydraException, OmegaConfBaseException) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
