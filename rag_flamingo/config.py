"""Typed schemas of the query side's configs, registered with Hydra's ConfigStore.

``rag_flamingo/conf/evaluate.yaml``, ``rag_classify.yaml`` and ``build_index.yaml`` start their defaults list with these
schemas, so Hydra checks every value's type at composition (``k=abc`` is an error, not a string) and
the sections below accept no unknown key. The groups that vary in shape (``dataset``, ``encoder``,
``model``, ``task``) stay open mappings; their keys are checked against the composed config by
`rag_flamingo.cli.compose_config`, and ``model.generation`` by the model's generation settings.
The defaults here are the documented defaults (the YAML files hold only the group choices).
"""

from dataclasses import dataclass, field
from typing import Any

ZERO_SHOT_TEMPLATE = "this is a sound of {label}"


@dataclass
class RetrievalConfig:
    """How shots are retrieved (`rag_flamingo.retrieval.Retriever`)."""

    mode: str = "knn"  # knn | balanced | random
    per_class: int = 1  # balanced: the nearest recordings shown of each of the nearest classes
    overfetch: int = 50  # neighbours fetched beyond k (AF1: 50)
    near_duplicate_threshold: float | None = None  # cosine >= this to the query or a kept shot: dropped
    shuffle: bool = True  # shuffle the in-context order (seeded per query)
    seed: int = 0


@dataclass
class KnnOptions:
    temperature: float = 0.1  # vote weight exp((s - s_max) / temperature)


@dataclass
class ZeroShotOptions:
    template: str = ZERO_SHOT_TEMPLATE


@dataclass
class SupportOptions:
    """simpleshot, tip_adapter, lda (`rag_flamingo.predictors.SupportPredictor`)."""

    tta: int = 1  # query views embedded and averaged (`rag_flamingo.tta`); 1: off


@dataclass
class FusionOptions(SupportOptions):
    base: str = "lda"  # the support-set classifier fused with the knn vote: lda | prototype | simpleshot
    temperature: float = 0.1  # the knn vote's (and a cosine base's softmax) temperature


@dataclass
class PredictorOptions:
    """``predictors.<name>``: options of the registered predictors."""

    knn: KnnOptions = field(default_factory=KnnOptions)
    zero_shot: ZeroShotOptions = field(default_factory=ZeroShotOptions)
    simpleshot: SupportOptions = field(default_factory=SupportOptions)
    tip_adapter: SupportOptions = field(default_factory=SupportOptions)
    lda: SupportOptions = field(default_factory=SupportOptions)
    fusion: FusionOptions = field(default_factory=FusionOptions)


@dataclass
class ClapFilterConfig:
    """The reference demo's trick: sample N outputs, keep the best CLAP audio-text match."""

    samples: int = 1  # > 1 turns it on (sampling with model.generation's top_k/top_p)
    encoder: Any | None = None  # None: the store's encoder (a CLAP encoder); or {name: laion_clap, ...}


@dataclass
class FlamingoConfig:
    """How the engine uses the model (the model itself: the ``model`` group)."""

    features: str = "clapcap"  # the store's cached shot features (build_index ... features=clapcap)
    audio_slots: int | None = None  # None: model.num_slots (8 for AF1: 7 shots + query)
    template: str = "eval"  # eval | train | inference
    decode: str = "generate"  # generate | rank (options by mean answer log-prob) | rank_sum (summed); engine.py
    clap_filter: ClapFilterConfig = field(default_factory=ClapFilterConfig)


@dataclass
class QueryConfig:
    """What evaluate and rag_classify share."""

    cache_root: str = "${oc.env:RAG_FLAMINGO_CACHE_ROOT,${oc.env:HOME}/.cache/rag_flamingo}"
    data_root: str = "${oc.env:RAG_FLAMINGO_DATA_ROOT,${cache_root}/data}"
    store: str | None = None  # the index store: a path, or a name under ${cache_root}/indices
    verify_store: bool = False  # also check the store files' checksums (sizes are always checked)
    encoder: Any = field(default_factory=dict)  # the store's encoder; empty: the one named in store.json
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    model: Any = field(default_factory=dict)  # predictor=flamingo: checkpoint, tokenizer, decoding
    predictors: PredictorOptions = field(default_factory=PredictorOptions)
    flamingo: FlamingoConfig = field(default_factory=FlamingoConfig)
    batch_size: int = 8  # queries per batch
    device: str = "auto"


@dataclass
class EvaluateConfig(QueryConfig):
    dataset: Any = field(default_factory=dict)
    task: Any = field(default_factory=dict)
    index_split: str = "index"  # a split name, or the role looked up in dataset.splits: names the default store
    query_split: str = "query"  # a split name, or the role: the split whose items are the queries
    limit: int | None = None  # only the first N queries
    predictor: Any = "knn"  # one or a list of the registered predictors
    shots: Any = 4  # one or a list of shot counts
    output_dir: str | None = None  # None: outputs/evaluate/<dataset>-<task>-<split>-<run key>
    overwrite: bool = False  # start a reused output_dir over when its run key differs
    progress: bool = True
    suite: Any = field(default_factory=dict)  # the suite group: name null = one evaluation (rag_flamingo/suite.py)


@dataclass
class ClassifyConfig(QueryConfig):
    audio: str | None = None  # a file or a folder (searched recursively)
    predictor: str = "knn"
    k: int = 4  # retrieved shots
    task: Any = field(default_factory=dict)  # the task group: classification (default) or tagging
    out: str | None = None  # also write JSON lines here


@dataclass
class BuildIndexConfig:
    """``build_index`` (the values and their comments: rag_flamingo/conf/build_index.yaml)."""

    cache_root: str = "${oc.env:RAG_FLAMINGO_CACHE_ROOT,${oc.env:HOME}/.cache/rag_flamingo}"
    data_root: str = "${oc.env:RAG_FLAMINGO_DATA_ROOT,${cache_root}/data}"
    dataset: Any = field(default_factory=dict)
    encoder: Any = field(default_factory=dict)
    index: Any = field(default_factory=dict)
    split: str = "index"
    store: str | None = None
    mode: str = "build"
    features: Any | None = None
    features_encoder: Any = field(default_factory=dict)
    shard_size: int = 1000
    batch_size: int = 32
    num_workers: int = 2
    device: str = "auto"
    min_seconds: float = 0.1
    progress: bool = True


@dataclass
class AppConfig(QueryConfig):
    """``rag_app``, the interactive page (rag_flamingo/app/): the store it opens, where it may write."""

    dataset: Any = field(default_factory=dict)  # with store= unset: this dataset's index store (demo)
    index_split: str = "index"
    stores: list[str] = field(default_factory=list)  # more stores to offer (paths or names under cache_root)
    predictor: str = "knn"  # the Ask tab's first choice
    k: int = 4  # retrieved shots, the Ask tab's first value
    host: str = "127.0.0.1"  # the page is served here only (0.0.0.0 to open it to the network)
    port: int = 7860
    share: bool = False  # a public gradio.live link (off: nothing leaves the machine)
    max_upload_mb: int = 50  # larger uploads are refused
    clips_dir: str | None = None  # New labels: kept clips (None: ${cache_root}/app_clips/<store>)
    results_dir: str = "outputs/evaluate"  # Results: the evaluate folders listed
    player_seconds: float = 10.0  # shots and queries are played up to this length


def register() -> None:
    """Put the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(name="rag_classify_schema", node=ClassifyConfig)
    cs.store(name="build_index_schema", node=BuildIndexConfig)
    cs.store(name="rag_app_schema", node=AppConfig)
