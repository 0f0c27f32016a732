"""``build_index`` console script: compose ``rag_flamingo/conf/build_index.yaml`` with Hydra and run the pipeline.

Usage (Hydra overrides)::

    build_index                                   # demo dataset, aisfx, index=auto
    build_index dataset=clotho encoder=ms_clap_2023 index=hnsw store=/data/idx/clotho
    build_index dataset=folder dataset.root=DIR store=OUT
    build_index ... mode=append dataset.manifest=new.jsonl
    build_index ... features=clapcap features_encoder.checkpoint=/ckpt/clapcap.pt
    torchrun --nproc_per_node=2 -m index_builder dataset=...   # ranks split the shards
    build_index --cfg                             # print the composed config and exit
    build_index --check dataset=clotho            # every file the run needs: present, or the command that fetches it

Composition, ``--help``, logging and error exits: ``rag_flamingo.cli``.
"""

from __future__ import annotations

import sys

from rag_flamingo.cli import compose_config, export_roots, handle_flags, run_main
from rag_flamingo.paths import store_folder
from rag_flamingo.preflight import require

CONFIG_NAME = "build_index"


ALIASES = {"output": "store"}  # the store's folder was once output=; the name is store= in every command


def load_config(overrides: list[str]) -> dict:
    """The composed, resolved config as a plain dict."""
    return compose_config(CONFIG_NAME, overrides, ALIASES)


def _run(argv: list[str]) -> None:
    if handle_flags(CONFIG_NAME, argv, ALIASES):
        return
    from .pipeline import config_from_dict, run  # heavy imports (torch, faiss) only when running

    cfg = load_config(argv)
    export_roots(cfg)
    build = config_from_dict(cfg)
    store_folder(build.output)
    require(CONFIG_NAME, cfg)
    summary = run(build)
    if summary is not None:
        print(summary.text(), flush=True)


def main(argv: list[str] | None = None) -> int:
    return run_main("build_index", __doc__, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
