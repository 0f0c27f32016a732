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
from pathlib import Path

from rag_flamingo.cli import compose_config, export_roots, handle_flags, run_main
from rag_flamingo.config import BuildIndexConfig
from rag_flamingo.errors import ConfigError
from rag_flamingo.paths import check_writable_folder, store_folder
from rag_flamingo.preflight import require
from rag_flamingo.store.layout import holds_other_files

CONFIG_NAME = "build_index"


ALIASES = {"output": "store"}  # the store's folder was once output=; the name is store= in every command


def load_config(overrides: list[str]) -> BuildIndexConfig:
    """The composed, resolved config."""
    return compose_config(CONFIG_NAME, overrides, ALIASES)


def _run(argv: list[str]) -> None:
    if handle_flags(CONFIG_NAME, argv, ALIASES):
        return
    from rag_flamingo.indexing.pipeline import resolve, run  # heavy imports (torch, faiss) only when running

    cfg = load_config(argv)
    export_roots(cfg)
    build = resolve(cfg)
    store_folder(build.output)
    check_writable_folder(build.output, "store=")
    _refuse_a_folder_of_other_files(build.output)
    require(CONFIG_NAME, cfg)
    summary = run(build)
    if summary is not None:
        print(summary.text(), flush=True)


def _refuse_a_folder_of_other_files(store: Path) -> None:
    """A store goes into a new or empty folder, or one that is a store: never among the user's files
    (``store=`` naming a folder of audio would mix the store's files with them)."""
    if holds_other_files(store):
        raise ConfigError(f"store={store} holds other files, not a store; name a new or empty folder for the store")


def main(argv: list[str] | None = None) -> int:
    return run_main("build_index", __doc__, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
