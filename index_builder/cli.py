"""``build_index`` console script: compose ``conf/build_index.yaml`` with Hydra and run the pipeline.

Usage (Hydra overrides)::

    build_index                                   # demo dataset, aisfx, index=auto
    build_index dataset=clotho encoder=ms_clap_2023 index=hnsw output=/data/idx/clotho
    build_index dataset=folder dataset.root=DIR output=OUT
    build_index ... mode=append dataset.manifest=new.jsonl
    build_index ... features=clapcap features_encoder.checkpoint=/ckpt/clapcap.pt
    torchrun --nproc_per_node=2 -m index_builder dataset=...   # ranks split the shards
    build_index --cfg                             # print the composed config and exit

The compose API is used instead of ``@hydra.main`` so that a run has no side effects beyond the
output folder (no ``outputs/`` dirs, no logging reconfiguration), and the config folder is found
through ``rag_flamingo.paths.conf_dir()`` wherever the console script is installed from.
"""

from __future__ import annotations

import logging
import os
import sys

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rag_flamingo import paths
from rag_flamingo.errors import RagFlamingoError

CONFIG_NAME = "build_index"


def load_config(overrides: list[str]) -> dict:
    """The composed, resolved config as a plain dict."""
    with initialize_config_dir(config_dir=str(paths.conf_dir().resolve()), version_base="1.3", job_name=CONFIG_NAME):
        cfg = compose(config_name=CONFIG_NAME, overrides=overrides)
    OmegaConf.resolve(cfg)
    return OmegaConf.to_container(cfg)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    show = "--cfg" in argv
    argv = [a for a in argv if a != "--cfg"]
    logging.basicConfig(level=os.environ.get("RAG_FLAMINGO_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(argv)
        if show:
            print(OmegaConf.to_yaml(cfg))
            return 0
        from .pipeline import config_from_dict, run  # heavy imports (torch, faiss) only when running

        # Config wins over the environment for everything downstream (dataset sources read these).
        os.environ["RAG_FLAMINGO_DATA_ROOT"] = str(cfg["data_root"])
        os.environ["RAG_FLAMINGO_CACHE_ROOT"] = str(cfg["cache_root"])
        summary = run(config_from_dict(cfg))
    except (RagFlamingoError, HydraException, OmegaConfBaseException) as exc:
        print(f"build_index: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if summary is not None:
        print(summary.text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
