"""``rag_app``: the interactive page (Gradio), served on 127.0.0.1.

Usage (``key=value`` arguments; the config is ``rag_flamingo/conf/rag_app.yaml``, every setting in
``rag_flamingo/config.py``: AppConfig)::

    rag_app                                   # the demo store scripts/demo.sh built, http://127.0.0.1:7860
    rag_app store=my_index port=7861          # another store (a path, or a name under <cache_root>/indices)
    rag_app store=my_index model=chat         # + flamingo answers and the Chat tab (AF1 chat, hub weights)
    rag_app model=foundation model.checkpoint.path=/ckpt/foundation-hf
    rag_app model=qwen2_audio model.checkpoint=Qwen/Qwen2-Audio-7B-Instruct   # or af3, music_flamingo, voxtral

Tabs: Ask (a clip against a store: knn, prototype, zero_shot with a CLAP store, flamingo with a
model and a store with cached shot features), Chat (multi-turn with the chat model), New labels
(append a few clips of a new label to a store, then classify), Results (an ``evaluate`` folder).
Nothing is shared publicly (``share=false``); uploads go to a temporary folder removed on exit
(files older than an hour are removed while it runs) and are limited to ``max_upload_mb``. The
only other writes are the New labels tab's: the store appended to and its clips (``clips_dir``).
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import tempfile
from pathlib import Path

from .. import paths, shift
from ..cli import compose_config, export_roots, handle_flags, run_main
from ..config import AppConfig
from ..errors import ConfigError, StoreError

CONFIG_NAME = "rag_app"


def load_config(argv: list[str]) -> AppConfig:
    return compose_config(CONFIG_NAME, argv)


def check_address(host: str, port, bind: bool = True) -> None:
    """``host=``/``port=`` checked before anything loads: the port in 1..65535, the host a name or
    address of this machine and (``bind``) the port free there: bound and released at once, with
    SO_REUSEADDR as the server binds it. ConfigError naming the setting and the fix (Gradio's own
    errors name its GRADIO_SERVER_PORT environment variable, not the setting)."""
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise ConfigError(f"port={port}: not a port number; use 1..65535, e.g. port=7860") from None
    if not 1 <= number <= 65535:
        raise ConfigError(f"port={port}: out of range; use 1..65535, e.g. port=7860")
    name = str(host)
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name  # [::1] as in a URL
    try:
        infos = socket.getaddrinfo(bare, number, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            f"host={host}: not an address or a name this machine can resolve ({_reason(exc)}); "
            f"use host=127.0.0.1 (this machine only) or host=0.0.0.0 (the network)"
        ) from None
    if not bind:
        return
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(_bind_error(host, number, exc)) from None


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc)


def _bind_error(host, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port={port}: already in use on {host}; stop what serves it or choose another, "
            f"e.g. port={_free_hint(port)}"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"port={port}: not allowed ({_reason(exc)}); ports below 1024 need privileges, use e.g. port=7860"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"host={host}: not an address of this machine ({_reason(exc)}); "
            f"use host=127.0.0.1 (this machine only) or host=0.0.0.0 (the network)"
        )
    return f"host={host} port={port}: cannot serve there ({_reason(exc)})"


def _free_hint(port: int) -> int:
    return port + 1 if port < 65535 else 7860


def check_folders(cfg: AppConfig, cache: Path) -> None:
    """The other settings that name files, before anything loads: every ``stores`` entry an index
    store (a path or a name under ``<cache>/indices``), ``clips_dir`` (when given) a folder that can
    be created and written (probed: what this makes is removed again), ``results_dir`` not a file (a
    folder that does not exist yet lists nothing). ConfigError / StoreError naming the setting."""
    from ..store.layout import INFO_FILE

    for given in cfg.stores:
        store = paths.find_store(str(given), cache)
        if not (store / INFO_FILE).is_file():
            what = "is not an index store (no store.json)" if store.is_dir() else "does not exist"
            raise StoreError(f"stores=[{given}]: {store} {what}; build it with build_index, or leave it out of stores=")
    if cfg.clips_dir:
        paths.check_writable_folder(Path(cfg.clips_dir), "clips_dir=")
    results = cfg.results_dir
    if results and Path(str(results)).expanduser().exists() and not Path(str(results)).expanduser().is_dir():
        raise ConfigError(
            f"results_dir={results}: is a file, not a folder; give the folder evaluate writes to "
            f"(e.g. results_dir=outputs/evaluate)"
        )


def serve(cfg: AppConfig, encoders: dict | None = None, block: bool = True, upload_dir: str | None = None):
    """Open the stores, build the page and serve it; returns (the Blocks, the context) when not ``block``."""
    from .context import AppContext

    check_address(cfg.host, cfg.port, bind=False)  # range and name first: no side effects
    shift.check(cfg.adapt)
    if cfg.adapt in shift.TRANSDUCTIVE:  # the page answers one clip at a time
        raise ConfigError(
            f"adapt={cfg.adapt} is transductive (it labels a batch of clips together) and rag_app answers one clip "
            "at a time: use adapt=none or adapt=source, or rag_classify on a folder for a batch"
        )
    try:
        import gradio  # noqa: F401  (the optional dependency: a clear message instead of an ImportError)
    except ImportError:
        raise ConfigError('rag_app needs Gradio: pip install -e ".[app]" (scripts/setup.sh installs it)') from None
    ctx = AppContext(cfg, encoders)
    if not (ctx.primary / "store.json").is_file():
        hint = "run scripts/demo.sh first (it builds it)" if not cfg.store else "build it with build_index"
        raise StoreError(f"no index store at {ctx.primary}: {hint}, or give store=<path or name>")
    check_folders(cfg, ctx.cache)  # stores, clips_dir, results_dir: before the encoders and models load
    check_address(cfg.host, cfg.port)  # free: before the encoders and models load
    if upload_dir:  # Gradio keeps uploads under GRADIO_TEMP_DIR (read when the page is built)
        os.environ["GRADIO_TEMP_DIR"] = upload_dir
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    ctx.warm_up()
    from .ui import build_app

    demo = build_app(ctx)
    try:
        demo.launch(
            server_name=cfg.host,
            server_port=cfg.port,
            share=cfg.share,
            max_file_size=f"{cfg.max_upload_mb}mb",
            prevent_thread_lock=not block,
            show_error=False,
            ssr_mode=False,
            quiet=not block,
        )
    except OSError as exc:  # taken since the check (Gradio's message names its environment variable)
        if "port" not in str(exc).lower():
            raise
        raise ConfigError(
            f"host={cfg.host} port={cfg.port}: cannot serve there (the port was taken meanwhile?); "
            f"choose another, e.g. port={_free_hint(cfg.port)}"
        ) from None
    return demo, ctx


def _run(argv: list[str]) -> None:
    if handle_flags(CONFIG_NAME, argv):
        return
    cfg = load_config(argv)
    export_roots(cfg)
    with tempfile.TemporaryDirectory(prefix="rag_app_uploads_") as uploads:
        serve(cfg, upload_dir=uploads)


def main(argv: list[str] | None = None) -> int:
    return run_main("rag_app", __doc__, _run, argv, log_level="WARNING")


if __name__ == "__main__":
    sys.exit(main())
