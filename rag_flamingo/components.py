"""The query side's parts, built from a composed config (``evaluate`` / ``rag_classify``): the store,
its encoder (checked against the store *before* any weights are loaded), the retriever, the
predictors (by name, from the registry in `rag_flamingo.predictors`), the Audio Flamingo engine, and
the dataset's query rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import paths
from .config import BuildIndexConfig, ClassifyConfig, EvaluateConfig, FlamingoConfig, QueryConfig
from .errors import ConfigError, StoreError
from .predictors import Predictor, PredictorContext, build_predictor, predictor_names
from .retrieval import Retriever
from .store.index_store import IndexStore
from .store.records import comparable_fingerprint
from .tasks import TaskFamily, TaskSpec, get_task


class StoreView(Protocol):
    """What `check_encoder_request` reads of a store (an open `IndexStore`, or store.json alone)."""

    root: Path
    info: Any


logger = logging.getLogger(__name__)

# options that say how an encoder runs, not what it computes (never compared with the store)
RUNTIME_OPTIONS = (
    "name",
    "device",
    "batch_size",
    "precision",
    "runtime",
    "dtype",
    "checkpoint",
    "hub_repo",
    "filename",
    "text_model",
    "_target_",
)


def task_name(cfg: EvaluateConfig | ClassifyConfig) -> str:
    """``task.name``, or the dataset's first task (``task=auto``)."""
    name = cfg.task.get("name")  # an open group (task/*.yaml): a mapping
    if name:
        return str(name)
    dataset = getattr(cfg, "dataset", None)
    tasks = dataset.tasks if dataset is not None else []
    if not tasks:
        raise ConfigError("no task: pass task=<name> (e.g. task=classification)")
    return str(tasks[0])


def store_path(cfg: QueryConfig | BuildIndexConfig, split_key: str = "index_split", encoder: str | None = None) -> Path:
    """The one resolver of a command's store: ``store`` (a path, or a name under
    ``${cache_root}/indices``), else what build_index writes for the dataset's index split (``split_key``
    names the config's split setting: build_index's ``split``) and the encoder (``encoder``: the name
    when the config has none), `paths.default_store` named by `sources.store_stem`."""
    from .datasets.sources import split_name, store_stem

    cache = Path(cfg.cache_root).expanduser()
    if cfg.store:
        return paths.find_store(cfg.store, cache)
    dataset = getattr(cfg, "dataset", None)
    if dataset is None or not dataset.name:
        raise ConfigError("store= is not set: the index store to use (build_index ... store=my_index)")
    split = split_name(dataset, str(getattr(cfg, split_key)))
    name = cfg.encoder.get("name") or encoder
    if not name:
        raise ConfigError("encoder= is not set: the encoder the store was built with (e.g. encoder=aisfx)")
    return paths.store_folder(paths.default_store(cache, store_stem(dataset), split, str(name)))


def open_store(cfg: QueryConfig) -> IndexStore:
    return IndexStore.open(store_path(cfg), verify=cfg.verify_store)


def check_encoder_request(store: IndexStore | StoreView, options: dict) -> None:
    """Refuse an encoder request that cannot match the store, before any weights are loaded or downloaded:
    another encoder name, or an option (crop, windows, model variant) the store was built without."""
    built = comparable_fingerprint(store.info.encoder)
    name = options.get("name")
    if name and built.get("name") and name != built["name"]:
        raise StoreError(
            f"{store.root}: built with encoder {built['name']!r}, not {name!r}; use "
            f"encoder={built['name']} (or leave encoder= out: the store's encoder is used)"
        )
    differ = sorted(
        k
        for k, v in options.items()
        if k not in RUNTIME_OPTIONS
        and v is not None
        and k in built
        and not isinstance(built[k], dict)
        and not _same_setting(built[k], v)
    )
    if differ:
        settings = ", ".join(f"{k}={options[k]!r} (store: {built[k]!r})" for k in differ)
        raise StoreError(
            f"{store.root}: encoder {name or built.get('name')} differs from the store's in {settings}; "
            f"use the store's settings, or rebuild the store with these"
        )


def _same_setting(recorded: Any, value: Any) -> bool:
    """A requested option against the store's record of it: equal; or the record is the value with its
    description (LAION-CLAP's ``long_audio: 'mean: mean of normalised embeddings of 10 s windows'``);
    or the record is a description alone (MS-CLAP's), which the built encoder's full fingerprint is
    checked against instead (`build_encoder`)."""
    if recorded == value or not isinstance(recorded, str) or " " not in recorded or " " in str(value):
        return recorded == value
    prefix, colon, _ = recorded.partition(": ")
    return prefix == str(value) if colon else True


def build_encoder(cfg: QueryConfig, store: IndexStore):
    """The retrieval encoder of ``cfg.encoder`` (default: the store's, from store.json), checked
    against the store (options first, then the full fingerprint once built)."""
    from .encoders import build_encoder as build_named

    options = dict(cfg.encoder)
    options["name"] = options.get("name") or store.info.encoder.get("name")
    if not options["name"]:
        raise ConfigError("encoder.name is not set (use the encoder the store was built with, e.g. encoder=aisfx)")
    check_encoder_request(store, options)
    if cfg.device != "auto" and not options.get("device"):
        options["device"] = cfg.device
    follow_store_precision(store, options)
    encoder = build_named(options.pop("name"), **options)
    store.check_encoder(encoder.fingerprint())
    return encoder


def follow_store_precision(store: IndexStore | StoreView, options: dict) -> None:
    """``precision=auto`` queries a store in the precision class it was built in: bf16 for a bf16
    store, fp32 on a CPU with native bf16 for any other (an explicit other precision is refused by
    ``check_encoder``)."""
    from .devices import best_device, cpu_native_bf16
    from .encoders.base import option_defaults

    if options.get("precision") not in (None, "auto") or "precision" not in option_defaults(options["name"]):
        return
    if comparable_fingerprint(store.info.encoder).get("precision") == "bf16":
        options["precision"] = "bf16"
    elif best_device(options.get("device")).type == "cpu" and cpu_native_bf16():
        options["precision"] = "fp32"


def encoder_from_options(options: dict):
    """``{name: <registered encoder>, ...options}``, or ``{_target_: module.Class, ...}`` for your own
    (``_target_`` wins over ``name``: ``model.audio_encoder={_target_:my_pkg.MyEncoder}``)."""
    from .encoders import build_encoder as build_named

    options = dict(options)
    if options.get("_target_"):
        from hydra.utils import instantiate

        options.pop("name", None)
        return instantiate(options)
    name = options.pop("name", None)
    if not name:
        raise ConfigError(f"encoder options {options} name no encoder: give name=<registered encoder> or _target_")
    return build_named(name, **options)


def build_engine(cfg: QueryConfig, store: IndexStore, encoder, retriever: Retriever, model_parts: tuple | None = None):
    """`RagFlamingo` from the ``model`` group (checkpoint, tokenizer, audio encoder, decoding; see
    `rag_flamingo.model.load_model`) and the ``flamingo`` section (how the engine uses it); with
    ``model.backend=transformers`` the engine of `rag_flamingo.backends.transformers_audio`.
    ``model_parts``: (model, tokenizer, window encoder) already loaded from that group (one model shared
    by several stores), instead of loading them here."""
    from .backends import backend_name
    from .engine import RagFlamingo
    from .model import load_model
    from .model.factory import generation_settings

    mc = model_settings(cfg)
    if not mc:
        raise ConfigError(
            "predictor=flamingo needs a model config (model=foundation, model=chat, or "
            "model.checkpoint.path=/path/to/foundation.pt)"
        )
    if backend_name(mc) == "transformers":  # AF3, Music Flamingo, Qwen2-Audio (rag_flamingo/backends/)
        from .backends.loading import build_transformers_engine

        reranker = clap_reranker(cfg.flamingo, encoder)
        return build_transformers_engine(mc, cfg.flamingo, store, encoder, retriever, model_parts, reranker)
    if not mc.get("audio_encoder"):
        raise ConfigError("predictor=flamingo needs model.audio_encoder (e.g. {name: clapcap})")
    fc = cfg.flamingo
    samples = fc.clap_filter.samples
    generation = generation_settings(mc, clap_samples=samples)  # checked before any weights load
    if model_parts is None:
        model_parts = (*load_model(mc), encoder_from_options(mc["audio_encoder"]))
    model, tokenizer, window_encoder = model_parts
    reranker = clap_reranker(fc, encoder)
    return RagFlamingo(
        store,
        model,
        tokenizer,
        window_encoder,
        encoder,
        retriever=retriever,
        generation=generation,
        feature_name=fc.features,
        audio_slots=fc.audio_slots or mc.get("num_slots"),
        template=fc.template,
        reranker=reranker,
        decode=fc.decode,
    )


def clap_reranker(flamingo: FlamingoConfig, encoder) -> Any:
    """The CLAP filter of the ``flamingo`` section (``clap_filter.samples`` > 1), any backend: its own
    ``clap_filter.encoder``, else the store's encoder; None when off."""
    from .engine import ClapReranker

    if flamingo.clap_filter.samples <= 1:
        return None
    options = flamingo.clap_filter.encoder or {}
    return ClapReranker(encoder_from_options(options) if options else encoder)


def model_settings(cfg: QueryConfig) -> dict:
    """The ``model`` group (an open group: a mapping its loader checks), with the command's ``device``
    where the group leaves it to the command."""
    mc = dict(cfg.model)
    if mc and cfg.device != "auto" and mc.get("device") in (None, "auto"):
        mc["device"] = cfg.device
    return mc


def load_model_parts(cfg: QueryConfig) -> tuple | None:
    """The (model, tokenizer, window encoder) `build_engine` would load for ``cfg``'s AF1 ``model`` group,
    loaded once to be shared by several evaluations (``evaluate suite=...``). None for the transformers
    backends (their engine reduces the loaded model's generation_config to its token ids and records what
    it ignored: a shared model would record nothing the second time; each evaluation loads its own) and
    when there is no model config."""
    from .backends import backend_name
    from .model import load_model
    from .model.factory import generation_settings

    mc = model_settings(cfg)
    if not mc or backend_name(mc) == "transformers" or not mc.get("audio_encoder"):
        return None
    generation_settings(mc)  # checked before any weights load
    return (*load_model(mc), encoder_from_options(mc["audio_encoder"]))


@dataclass
class QueryParts:
    """One store with what answers queries against it: its encoder (checked against it) and the retriever."""

    store: IndexStore
    encoder: Any
    retriever: Retriever


def query_parts(cfg: QueryConfig, store: IndexStore | None = None, encoder=None) -> QueryParts:
    """The one assembly of the query side (evaluate, rag_classify, rag_app, the suite): the store
    (``store=``, or the one handed in), its encoder (``cfg.encoder``, or the one handed in: checked
    against the store) and the retriever of ``cfg.retrieval``."""
    store = store if store is not None else open_store(cfg)
    if encoder is None:
        encoder = build_encoder(cfg, store)
    else:
        store.check_encoder(encoder.fingerprint())
    return QueryParts(store, encoder, Retriever.from_config(store, encoder, cfg.retrieval))


def predictor_context(cfg: QueryConfig, parts: QueryParts, engine: Callable[[], Any]) -> PredictorContext:
    """What a registered predictor is built from (``engine``: builds or returns the model's engine)."""
    return PredictorContext(cfg.predictors, parts.store, parts.encoder, parts.retriever, engine, cfg.adapt)


def build_predictors(
    cfg: QueryConfig, names: list[str], parts: QueryParts, engine=None, model_parts: tuple | None = None
) -> dict[str, Predictor]:
    """The named predictors (``predictors.<name>`` options); the engine is built only if one needs it
    (from ``model_parts`` when given: see `load_model_parts`)."""
    if not names:
        raise ConfigError(f"predictor is empty; use one or more of {', '.join(predictor_names())}")
    built: list[Any] = [engine]

    def the_engine():
        if built[0] is None:
            built[0] = build_engine(cfg, parts.store, parts.encoder, parts.retriever, model_parts)
        return built[0]

    return {name: build_predictor(name, predictor_context(cfg, parts, the_engine)) for name in names}


def as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass
class Evaluation:
    """Everything one evaluation run needs, built from the config (or handed in, e.g. by tests)."""

    cfg: EvaluateConfig
    store: IndexStore
    encoder: Any  # the store's retrieval encoder
    task: TaskSpec
    rows: list[dict]  # query rows (all ranks)
    audio_root: Path
    query_split: str
    manifest: Path
    predictors: dict[str, Predictor]
    retriever: Retriever


def query_rows(cfg: EvaluateConfig, task: TaskSpec) -> tuple[list[dict], Path, str, Path]:
    """(rows, audio root, split name, manifest) of the dataset's query split."""
    from .datasets.manifest import read_manifest
    from .datasets.sources import collapse_groups, resolve_split, split_name

    split = split_name(cfg.dataset, cfg.query_split)
    manifest, root = resolve_split(cfg.dataset, split)
    rows = read_manifest(manifest, allow_outside_root=cfg.dataset.allow_outside_root)
    if task.family == TaskFamily.CAPTIONING:
        rows = collapse_groups(rows)  # each recording once, scored against all its captions
    return (rows[: cfg.limit] if cfg.limit else rows), Path(root), split, Path(manifest)


def prepare(cfg: EvaluateConfig, encoder=None, engine=None, model_parts: tuple | None = None) -> Evaluation:
    """Open the store, build the encoder/retriever/predictors, read the query rows (the engine from
    ``model_parts`` when given: a model already loaded, `load_model_parts`)."""
    task = get_task(task_name(cfg))
    rows, audio_root, split, manifest = query_rows(cfg, task)  # manifest errors before any model loads
    parts = query_parts(cfg, encoder=encoder)
    names = [str(p) for p in as_list(cfg.predictor)]
    predictors = build_predictors(cfg, names, parts, engine, model_parts)
    return Evaluation(
        cfg, parts.store, parts.encoder, task, rows, audio_root, split, manifest, predictors, parts.retriever
    )
