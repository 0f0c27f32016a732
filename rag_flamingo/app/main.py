"""``rag_app``: the interactive page (Gradio), served on 127.0.0.1.

Usage (``key=value`` arguments; the config is ``rag_flamingo/conf/rag_app.yaml``, every setting in
``rag_flamingo/config.py``: AppConfig)::

    rag_app                                   # the demo store scripts/demo.sh built, http://127.0.0.1:7860
    rag_app store=my_index port=7861          # another store (a path, or a name under <cache_root>/indices)
    rag_app store=my_index model=chat         # + flamingo answers and the Chat tab (AF1 chat, hub weights)
    rag_app model=foundation model.checkpoint.path=/ckpt/foundation.safetensors

Tabs: Ask (a clip against a store: knn, prototype, zero_shot with a CLAP store, flamingo with a
model and a store with cached shot features), Chat (multi-turn with the chat model), New labels
(append a few clips of a new label to a store, then classify), Results (an ``evaluate`` folder).
Nothing is shared publicly (``share=false``); uploads go to a temporary folder removed on exit
(files older than an hour are removed while it runs) and are limited to ``max_upload_mb``. The
only other writes are the New labels tab's: the store appended to and its clips (``clips_dir``).
"""

from __future__ import annotations

import os
import sys
import tempfile

from ..cli import compose_config, export_roots, print_config, run_main
from ..errors import ConfigError, StoreError

CONFIG_NAME = "rag_app"


def load_config(argv: list[str]) -> dict:
    return compose_config(CONFIG_NAME, argv)


def serve(cfg: dict, encoders: dict | None = None, block: bool = True, upload_dir: str | None = None):
    """Open the stores, build the page and serve it; returns (the Blocks, the context) when not ``block``."""
    from .context import AppContext

    try:
        import gradio  # noqa: F401  (the optional dependency: a clear message instead of an ImportError)
    except ImportError:
        raise ConfigError('rag_app needs Gradio: pip install -e ".[app]" (scripts/setup.sh installs it)') from None
    ctx = AppContext(cfg, encoders)
    if not (ctx.primary / "store.json").is_file():
        hint = "run scripts/demo.sh first (it builds it)" if not cfg.get("store") else "build it with build_index"
        raise StoreError(f"no index store at {ctx.primary}: {hint}, or give store=<path or name>")
    if upload_dir:  # Gradio keeps uploads under GRADIO_TEMP_DIR (read when the page is built)
        os.environ["GRADIO_TEMP_DIR"] = upload_dir
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    ctx.warm_up()
    from .ui import build_app

    demo = build_app(ctx)
    demo.launch(
        server_name=str(cfg["host"]),
        server_port=int(cfg["port"]),
        share=bool(cfg.get("share")),
        max_file_size=f"{int(cfg['max_upload_mb'])}mb",
        prevent_thread_lock=not block,
        show_error=False,
        ssr_mode=False,
        quiet=not block,
    )
    return demo, ctx


def _run(argv: list[str]) -> None:
    if "--cfg" in argv:
        print_config(CONFIG_NAME, [a for a in argv if a != "--cfg"])
        return
    cfg = load_config(argv)
    export_roots(cfg)
    with tempfile.TemporaryDirectory(prefix="rag_app_uploads_") as uploads:
        serve(cfg, upload_dir=uploads)


def main(argv: list[str] | None = None) -> int:
    return run_main("rag_app", __doc__, _run, argv, log_level="WARNING")


if __name__ == "__main__":
    sys.exit(main())
