"""The New labels tab: a few uploaded clips of a new label are appended to a store with the index
builder's append mode (`rag_flamingo.indexing.pipeline.run`, ``mode=append``: only the new clips are
embedded, the index is rebuilt from all shards), after which the store answers with the enlarged
label set.

The clips are kept (the store refers to its audio by path): under ``clips_dir`` (default
``<cache_root>/app_clips/<store folder name>``), as ``<label>/<content digest>.<ext>``, with one
manifest per append in ``manifests/``. An item's id is ``app/<label>/<digest>``, so adding the same
clip again is a no-op ("already in the store"). Nothing else is written.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..cli import compose_config
from ..datasets.manifest import write_manifest
from ..errors import AudioError, ConfigError
from ..hashing import file_sha256
from ..labels import item_labels
from ..store.index_store import IndexStore
from .context import AppContext
from .uploads import check_clip

logger = logging.getLogger(__name__)

LABEL_RE = re.compile(r"^[\w][\w .()'&+-]{0,63}$")  # a folder-safe name: no slashes, no leading dot


@dataclass
class AddResult:
    status: str  # the builder's: appended | nothing-new
    added: int
    skipped: list[str] = field(default_factory=list)  # "name: reason" of unusable uploads
    summary: str = ""  # the builder's summary (items, encoder, index, quality)


def clips_root(ctx: AppContext, store: IndexStore) -> Path:
    given = ctx.cfg.clips_dir
    base = Path(given).expanduser() if given else ctx.cache / "app_clips"
    return base / store.root.name


def check_label(label: str | None) -> str:
    name = (label or "").strip()
    if not name:
        raise ConfigError("type the new label's name first")
    if not LABEL_RE.match(name):
        raise ConfigError(
            f"label {name!r}: use letters, digits, spaces and _ - . ( ) ' & + (up to 64, no slashes, no leading dot)"
        )
    return name


def add_clips(
    ctx: AppContext, store_path: str | Path, label: str | None, files: Sequence[str | Path] | None
) -> AddResult:
    """Append the usable ``files`` to the store as examples of ``label``."""
    name = check_label(label)
    if not files:
        raise ConfigError("upload one or more clips of the new label first")
    parts = ctx.parts(store_path)
    root = clips_root(ctx, parts.store)
    rows, skipped = [], []
    for f in files:
        try:
            clip = check_clip(f, ctx.cfg.max_upload_mb)
        except AudioError as exc:
            skipped.append(f"{Path(exc.path).name}: {exc.reason}")
            continue
        digest = file_sha256(clip.path)[:16]
        rel = Path(name) / f"{digest}{clip.path.suffix.lower()}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (root / rel).exists():
            shutil.copyfile(clip.path, root / rel)
        rows.append({"id": f"app/{name}/{digest}", "path": rel.as_posix(), "label": name})
    if not rows:
        raise AudioError(", ".join(Path(f).name for f in files), "no usable clip: " + "; ".join(skipped))
    manifest = write_manifest(rows, root / "manifests" / f"{time.strftime('%Y%m%d-%H%M%S')}-{len(rows)}.jsonl")
    with ctx.lock:
        summary = append_to_store(ctx, parts.store, manifest, root)
        ctx.forget(store_path)
    # the builder's summary without its first line (the store's full path: the page names the store)
    details = "\n".join(summary.text().splitlines()[1:])
    return AddResult(summary.status, summary.count - len(parts.store), skipped, details)


def append_to_store(ctx: AppContext, store: IndexStore, manifest: Path, audio_root: Path):
    """``build_index store=<store> mode=append`` over ``manifest`` (the store's own encoder)."""
    from rag_flamingo.indexing.pipeline import resolve, run

    encoder = store.info.encoder.get("name")
    cfg = compose_config(
        "build_index",
        [
            f"cache_root={ctx.cache}",
            f"store={store.root}",
            "mode=append",
            "dataset=folder",
            "dataset.name=rag_app",
            f"dataset.manifest={manifest}",
            f"dataset.root={audio_root}",
            f"encoder={encoder}",
            "num_workers=0",
            "progress=false",
        ],
    )
    if ctx.cfg.encoder.get("name") == encoder:  # the app's encoder settings (a checkpoint) serve this store too
        cfg.encoder.update(ctx.cfg.encoder)
    return run(resolve(cfg))


def label_counts(store: IndexStore) -> list[list]:
    """[[label, items]] of the store, most items first."""
    counts = Counter(lab for it in store.items for lab in item_labels(it))
    return [[lab, n] for lab, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
