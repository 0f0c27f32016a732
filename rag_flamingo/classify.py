"""``rag_classify``: label new audio against the labels of an index store, without fine-tuning.

Usage (``key=value`` arguments)::

    rag_classify index=my_index audio=clip.wav                      # knn over 4 shots
    rag_classify index=my_index audio=dir/ predictor=prototype out=labels.jsonl
    rag_classify index=my_index audio=dir/ predictor=flamingo k=7              # model=foundation (hub)
    rag_classify index=my_index audio=dir/ predictor=flamingo model.checkpoint.path=/ckpt/foundation.pt

``index``: a store directory (``build_index ... output=my_index``) or a name under
``${cache_root}/indices``. The option set is the store's labels (``store.label_set()``), so a
folder of a few labelled clips per new class (``build_index dataset=folder dataset.root=clips/
output=my_index``, grown later with ``mode=append``) defines the classes. ``audio``: a file or a
folder (searched recursively). Prints ``path<TAB>label<TAB>score`` per file; ``out=`` also writes
JSON lines (path, label, score, shots). Unusable files are reported, never fatal.
Defaults for ``predictors``, ``flamingo`` and ``model`` (a group: ``model=chat``) come from
``rag_flamingo/conf/evaluate.yaml``; the encoder is the one the store was built with (``encoder.name`` from its store.json).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from . import paths
from .audio import AUDIO_EXTENSIONS
from .cli import compose_config, run_main
from .errors import AudioError, ConfigError
from .predictors import Query
from .prompts import get_task
from .store import IndexStore

logger = logging.getLogger(__name__)

DEFAULTS = {
    "index": None,
    "audio": None,
    "predictor": "knn",
    "k": 4,
    "task": "classification",
    "out": None,
    "batch_size": 8,
    "device": "auto",
    "encoder": {},
    "retrieval": {"mode": "knn", "overfetch": 50, "near_duplicate_threshold": None, "shuffle": True, "seed": 0},
}


GROUPS = ("model",)  # conf groups taken by name (model=chat); other arguments are key=value settings


def load_config(argv: list[str]) -> dict:
    """Defaults + ``predictors``/``flamingo``/``model`` of rag_flamingo/conf/evaluate.yaml, then ``key=value`` args."""
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ConfigError(f"arguments are key=value pairs; got {bad} (e.g. rag_classify index=my_index audio=clip.wav)")
    groups = [a for a in argv if a.split("=", 1)[0] in GROUPS]
    shared = compose_config("evaluate", groups)
    base = OmegaConf.merge(OmegaConf.create(DEFAULTS),
                           {k: shared[k] for k in ("predictors", "flamingo", "model", "cache_root")})
    cfg = OmegaConf.merge(base, OmegaConf.from_dotlist([a for a in argv if a not in groups]))
    return OmegaConf.to_container(cfg, resolve=True)


def audio_files(path: str | Path) -> list[Path]:
    from .datasets.folder import list_audio_files

    path = Path(path).expanduser()
    if path.is_dir():
        found = [path / p for p in list_audio_files(path)]
        if not found:
            raise ConfigError(f"audio={path}: no audio files in this folder ({', '.join(AUDIO_EXTENSIONS)})")
        return found
    if not path.exists():
        raise ConfigError(f"audio={path}: no such file or folder")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        logger.warning("%s: unusual extension; trying to decode it anyway", path)
    return [path]


def open_store(index: str | None, cache_root: str | None = None) -> IndexStore:
    if not index:
        raise ConfigError("index= is not set: the store to classify against (build_index ... output=my_index)")
    path = Path(str(index)).expanduser()
    if not path.exists() and not path.is_absolute():
        candidate = Path(cache_root or paths.cache_root()).expanduser() / "indices" / path
        path = candidate if candidate.exists() else path
    return IndexStore.open(path)


def build_components(cfg: dict, store: IndexStore, encoder=None, engine=None):
    """(encoder, retriever, predictor) for ``cfg`` against ``store``."""
    from .evaluate import build_encoder_from_cfg, build_predictors
    from .retrieval import Retriever

    if encoder is None:
        encoder = build_encoder_from_cfg(cfg, store)
    else:
        store.check_encoder(encoder.fingerprint())
    retriever = Retriever.from_config(store, encoder, cfg.get("retrieval"))
    name = str(cfg.get("predictor") or "knn")
    predictor = build_predictors(cfg, [name], store, encoder, retriever, get_task(cfg["task"]), engine)[name]
    return encoder, retriever, predictor


def classify(cfg: dict, encoder=None, engine=None, stream=None) -> list[dict]:
    """Label every file of ``cfg['audio']``; returns the records (also printed / written to ``out``)."""
    from .engine import load_for_encoders

    stream = stream or sys.stdout
    task = get_task(cfg.get("task") or "classification")
    if task.family not in ("classification", "tagging"):
        raise ConfigError(f"rag_classify labels audio (task=classification or tagging), not {task.name}")
    store = open_store(cfg.get("index"), cfg.get("cache_root"))
    labels = store.label_set()
    if not labels:
        raise ConfigError(f"{store.root}: the store has no labels; index labelled clips (one sub-folder per "
                          f"label with dataset=folder, or 'label' in the manifest)")
    encoder, retriever, predictor = build_components(cfg, store, encoder, engine)
    k = int(cfg.get("k", 4))
    files = audio_files(cfg.get("audio") or "")
    engine = getattr(predictor, "engine", None)
    load = engine.load if engine is not None else (lambda path: load_for_encoders(path, [encoder]))
    out_path = Path(cfg["out"]).expanduser() if cfg.get("out") else None
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text("")
    records = []
    batch = max(1, int(cfg.get("batch_size") or 8))
    for start in range(0, len(files), batch):
        chunk, waves, failed = [], [], []
        for path in files[start : start + batch]:
            try:
                waves.append(load(path))
                chunk.append(path)
            except AudioError as exc:
                failed.append({"path": str(path), "label": None, "score": None, "error": exc.reason})
        new = failed
        if chunk:
            emb = np.asarray(encoder.embed([w[int(encoder.sample_rate)] for w in waves]), np.float32)
            shots = retriever.search(emb, k if predictor.uses_shots else 0, query_ids=[str(p) for p in chunk])
            queries = [Query(str(p), {"id": str(p)}, w, e, s, labels) for p, w, e, s in zip(chunk, waves, emb, shots)]
            preds = predictor.predict(queries, task)
            new = new + [{"path": str(p), "label": pr.output, "score": pr.score,
                          "shots": [{"id": s.id, "label": s.item.get("label"), "score": round(float(s.score), 6)}
                                    for s in pr.shots]}
                         for p, pr in zip(chunk, preds)]
        for rec in new:
            if rec.get("error"):
                print(f"{rec['path']}\tERROR\t{rec['error']}", file=sys.stderr)
            else:
                score = "" if rec["score"] is None else f"{rec['score']:.4f}"
                print(f"{rec['path']}\t{rec['label']}\t{score}", file=stream, flush=True)
        if out_path:
            with open(out_path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
        records += new
    return records


def main(argv: list[str] | None = None) -> int:
    def body(args: list[str]) -> None:
        classify(load_config(args))

    return run_main("rag_classify", __doc__, body, argv, log_level="WARNING")


if __name__ == "__main__":
    sys.exit(main())
