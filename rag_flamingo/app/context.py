"""What the page's tabs share: the config, the stores offered (each opened once, with its encoder,
retriever and predictors), the Audio Flamingo model (loaded on first use, one for every store and
the Chat tab), and one lock so that one model or index job runs at a time.

Predictors are built by name from the registry (`rag_flamingo.predictors`); one that cannot serve a
store (zero_shot without a text encoder, flamingo without a model or without the store's cached
shot features) is listed as unavailable with the registry's own reason.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import paths
from ..components import (
    QueryParts,
    build_encoder,
    build_engine,
    encoder_from_options,
    model_settings,
    predictor_context,
    query_parts,
    store_path,
)
from ..config import AppConfig
from ..datasets.demo import DEMO_ENCODER
from ..errors import ConfigError, RagFlamingoError, StoreError
from ..predictors import Predictor, build_predictor, predictor_names
from ..store.index_store import IndexStore
from ..store.layout import INFO_FILE

logger = logging.getLogger(__name__)


def primary_store(cfg: AppConfig) -> Path:
    """``store=`` (a path or a name under ``<cache_root>/indices``), else the index store of ``dataset``
    (default: the demo store `scripts/demo.sh` builds)."""
    return store_path(cfg, encoder=DEMO_ENCODER)


@dataclass
class StoreParts(QueryParts):
    """One opened store with what answers queries against it, and its predictors."""

    predictors: dict[str, Predictor] = field(default_factory=dict)  # built on first use
    unavailable: dict[str, str] = field(default_factory=dict)  # predictor -> why not


class AppContext:
    """The app's state (see the module docstring). ``encoders``: retrieval encoders already built,
    by name (tests hand in tiny ones); each is checked against the store it serves."""

    def __init__(self, cfg: AppConfig, encoders: dict[str, Any] | None = None):
        self.cfg = cfg
        self.cache = Path(cfg.cache_root).expanduser()
        self.primary = primary_store(cfg)
        self.lock = threading.RLock()  # one model / index job at a time (the page's queue does the same)
        self._encoders: dict[str, Any] = dict(encoders or {})
        self._parts: dict[Path, StoreParts] = {}
        self._engines: dict[tuple[Path, int], Any] = {}
        self._model: tuple | None = None

    # ------------------------------------------------------------------ stores
    def store_paths(self) -> list[Path]:
        """The primary store, the configured ``stores``, and the complete stores under ``<cache_root>/indices``."""
        found = [self.primary] + [paths.find_store(str(s), self.cache) for s in self.cfg.stores]
        indices = self.cache / "indices"
        if indices.is_dir():
            found += sorted(p for p in indices.iterdir() if (p / INFO_FILE).is_file())
        out: list[Path] = []
        for p in found:
            if p.resolve() not in {q.resolve() for q in out}:
                out.append(p)
        return out

    def store_arg(self, path: Path) -> str:
        """How ``store=`` names a store: its name when it is under ``<cache_root>/indices``, else its path."""
        return path.name if path.resolve().parent == (self.cache / "indices").resolve() else str(path)

    def warm_up(self) -> None:
        """Run the primary store's encoder once (its first call is several times slower than the next)."""
        import numpy as np

        encoder = self.parts(self.primary).encoder
        noise = np.random.default_rng(0).standard_normal(int(encoder.sample_rate)).astype(np.float32) * 0.1
        encoder.embed([noise])

    def parts(self, path: str | Path) -> StoreParts:
        """The store at ``path`` opened with its encoder and retriever (once; `forget` reopens it)."""
        key = Path(path).resolve()
        with self.lock:
            if key not in self._parts:
                store = IndexStore.open(path, verify=self.cfg.verify_store)
                parts = query_parts(self.cfg, store, self._encoder_for(store))
                self._parts[key] = StoreParts(parts.store, parts.encoder, parts.retriever)
            return self._parts[key]

    def forget(self, path: str | Path) -> None:
        """Drop what was built for the store at ``path`` (it changed on disk: an append)."""
        key = Path(path).resolve()
        with self.lock:
            self._parts.pop(key, None)
            self._engines = {k: v for k, v in self._engines.items() if k[0] != key}

    def _encoder_for(self, store: IndexStore):
        name = str(store.info.encoder.get("name"))
        if name not in self._encoders:
            options = dict(self.cfg.encoder)
            if options.get("name") not in (None, name):
                options = {}  # the configured encoder is another store's; this one uses its own
            self._encoders[name] = build_encoder(dataclasses.replace(self.cfg, encoder=options), store)
        else:
            store.check_encoder(self._encoders[name].fingerprint())
        return self._encoders[name]

    # ------------------------------------------------------------------ predictors
    def predictor(self, parts: StoreParts, name: str, clap_samples: int = 1) -> Predictor:
        """The registered predictor ``name`` for a store; flamingo with ``clap_samples`` CLAP-filtered samples."""
        with self.lock:
            if name in parts.predictors and clap_samples <= 1:
                return parts.predictors[name]
            context = predictor_context(self.cfg, parts, lambda: self.engine(parts, clap_samples))
            built = build_predictor(name, context)
            if clap_samples <= 1:
                parts.predictors[name] = built
            return built

    def predictor_choices(self, parts: StoreParts) -> tuple[list[str], dict[str, str]]:
        """(predictors that can answer against this store, {predictor: why not} for the others)."""
        names = []
        for name in predictor_names():
            if name not in parts.unavailable:
                try:
                    self.predictor(parts, name)
                except RagFlamingoError as exc:
                    parts.unavailable[name] = str(exc)
            if name not in parts.unavailable:
                names.append(name)
        return names, dict(parts.unavailable)

    # ------------------------------------------------------------------ the model
    @property
    def has_model(self) -> bool:
        return bool(self.cfg.model)

    @property
    def is_af1(self) -> bool:
        """The model is AF1 (``model.backend=af1``): its cached shot features and the Chat tab apply."""
        from ..backends import backend_name

        return self.has_model and backend_name(self.cfg.model) == "af1"

    def model_parts(self) -> tuple:
        """The ``model`` group's model, loaded once: (model, tokenizer, window encoder) for AF1,
        (model, processor) for a transformers audio-LM (``model.backend=transformers``)."""
        from ..backends.loading import load_transformers_audio
        from ..model import load_model

        with self.lock:
            if self._model is None:
                mc = model_settings(self.cfg)
                if not mc:
                    raise ConfigError(
                        "no model configured: start rag_app with model=chat (the dialogue model) or "
                        "model=foundation, and model.checkpoint.path=/path/to/the/checkpoint"
                    )
                if not self.is_af1:
                    self._model = load_transformers_audio(mc)
                    return self._model
                if not mc.get("audio_encoder"):
                    raise ConfigError("the model needs model.audio_encoder (e.g. {name: clapcap})")
                self._model = (*load_model(mc), encoder_from_options(mc["audio_encoder"]))
            return self._model

    def engine(self, parts: StoreParts, clap_samples: int = 1):
        """The model's engine over a store (`RagFlamingo`, or the transformers backend's), sharing the
        loaded model; ``clap_samples`` > 1 turns the CLAP filter on."""
        key = (parts.store.root.resolve(), max(1, int(clap_samples)))
        with self.lock:
            if key not in self._engines:
                if not self.has_model:
                    self.model_parts()  # the one message saying how to configure a model
                feature = self.cfg.flamingo.features
                if self.is_af1 and feature not in parts.store.info.features:  # the others read the shots' audio
                    where = self.store_arg(parts.store.root)
                    raise StoreError(
                        f"{parts.store.root.name} has no cached '{feature}' shot features, which flamingo "
                        f"needs: build_index ... store={where} mode=features features={feature}"
                    )
                clap_filter = dataclasses.replace(self.cfg.flamingo.clap_filter, samples=key[1])
                flamingo = dataclasses.replace(self.cfg.flamingo, clap_filter=clap_filter)
                cfg = dataclasses.replace(self.cfg, flamingo=flamingo)
                self._engines[key] = build_engine(cfg, parts.store, parts.encoder, parts.retriever, self.model_parts())
            return self._engines[key]

    def chat_settings(self):
        """The model group's decoding settings and its number of audio slots, for the Chat tab."""
        from ..model.factory import generation_settings

        mc = model_settings(self.cfg)
        return generation_settings(mc), mc.get("num_slots"), int(mc.get("max_rounds") or 4)
