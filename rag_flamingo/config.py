"""Typed schemas of the configs, registered with Hydra's ConfigStore: each setting's type, default
and range are declared here, once.

``rag_flamingo/conf/evaluate.yaml``, ``rag_classify.yaml``, ``build_index.yaml`` and ``rag_app.yaml``
start their defaults list with these schemas, so Hydra checks every value's type at composition
(``k=abc`` is an error, not a string) and the sections below accept no unknown key. A numeric or
enumerated setting declares its range with `ranged` (``limit: int | None = ranged(None, ge=1)``);
`check_ranges` checks the composed config against it before any work starts (called by
`rag_flamingo.cli.compose_config`), so ``limit=-1`` is one line naming the setting and its range.
The groups that vary in shape (``encoder``, ``model``, ``task``) stay open mappings; their keys are
checked against the composed config by `rag_flamingo.cli.compose_config`, ``encoder`` options by the
encoder's own signature and ``model.generation`` by the model's generation settings.
The defaults here are the documented defaults (the YAML files hold only the group choices).
"""

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError, did_you_mean

T = TypeVar("T")

ZERO_SHOT_TEMPLATE = "this is a sound of {label}"


@dataclass(frozen=True)
class Range:
    """The values a setting accepts, beyond its type: bounds, a list of choices, or whole numbers
    (``whole``: an int or a list of ints, for settings typed ``Any`` such as ``shots``)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple = ()
    whole: bool = False  # an int (for settings typed ``Any``, where Hydra does not check it)
    many: bool = False  # or a list of such values (``shots=0,1,4``)
    pattern: str = ""  # a text setting's form (a regular expression the whole value matches)
    note: str = ""  # what null means, or why the range

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is outside the range (None: it is inside)."""
        values = value if self.many and isinstance(value, list) else [value]
        plural = " (or a list of them)" if self.many else ""
        for v in values:
            if self.whole and (isinstance(v, bool) or not isinstance(v, int)):
                return "must be a whole number" + self._bounds() + plural
            if self.pattern and not re.fullmatch(self.pattern, str(v)):
                return f"must look like {self.note or self.pattern}"
            if self.choices and v not in self.choices:
                return (
                    f"must be one of {', '.join(map(str, self.choices))}{did_you_mean(str(v), map(str, self.choices))}"
                )
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if number and (not math.isfinite(v) or not self._inside(v)):
                return ("must be a finite number" if not math.isfinite(v) else "must be") + self._bounds() + plural
        return None

    def _inside(self, v: float) -> bool:
        return (
            (self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt) and (self.le is None or v <= self.le)
        )

    def _bounds(self) -> str:
        parts = [
            f">= {_num(self.ge)}" if self.ge is not None else "",
            f"> {_num(self.gt)}" if self.gt is not None else "",
        ]
        parts.append(f"<= {_num(self.le)}" if self.le is not None else "")
        text = " and ".join(p for p in parts if p)
        return f" {text}" if text else ""

    def describe(self) -> str:
        """The range as the docs and messages say it."""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.pattern:
            return self.note or self.pattern
        return ("a whole number" if self.whole else "") + self._bounds()


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def ranged(default: Any, note: str = "", **rule: Any) -> Any:
    """A dataclass field with a `Range` (``ge``, ``gt``, ``le``, ``choices``, ``whole``)."""
    return field(default=default, metadata={"range": Range(note=note, **rule)})


@functools.cache
def ranges(schema: type, prefix: str = "") -> dict[str, tuple[Range, bool]]:
    """``{dotted key: (range, null allowed)}`` of every ranged setting of ``schema`` and its sections."""
    out: dict[str, tuple[Range, bool]] = {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        key = f"{prefix}{f.name}"
        if "range" in f.metadata:
            out[key] = (f.metadata["range"], type(None) in typing.get_args(hint) or hint is Any)
        section = _section_schema(hint)
        if section is not None:
            out.update(ranges(section, f"{key}."))
    return out


@functools.cache
def scalar_types(schema: type, prefix: str = "") -> dict[str, type]:
    """``{dotted key: int | float | bool}`` of the schema's scalar settings (also ``X | None``)."""
    out: dict[str, type] = {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        section = _section_schema(hint)
        if section is not None:
            out.update(scalar_types(section, f"{prefix}{f.name}."))
            continue
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        inner = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
        if len(inner) == 1 and inner[0] in (int, float, bool):
            out[f"{prefix}{f.name}"] = inner[0]
    return out


BOOL_WORDS = ("true", "false", "yes", "no", "on", "off")


def check_bool_text(schema: type, key: str, text: str) -> None:
    """A yes/no setting's text as typed on the command line: OmegaConf would read ``overwrite=2`` as true."""
    if scalar_types(schema).get(key) is bool and text.strip().lower() not in (*BOOL_WORDS, "null", "none"):
        raise ConfigError(f"{key}={text}: must be true or false")


def _section_schema(hint: Any) -> type | None:
    """The dataclass a field holds (also inside ``X | None``), or None."""
    optional = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else ()
    for candidate in (hint, *optional):
        if dataclasses.is_dataclass(candidate) and isinstance(candidate, type):
            return candidate
    return None


def check_ranges(schema: type, cfg: Mapping) -> None:
    """Refuse, in one line naming the setting, the first value of ``cfg`` outside its declared range."""
    for key, (rule, nullable) in ranges(schema).items():
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            if nullable:
                continue
            raise ConfigError(f"{key}=null: must be set ({rule.describe()})")
        problem = rule.problem(node)
        if problem:
            shown = ",".join(map(str, node)) if isinstance(node, list) else node
            note = f" ({rule.note})" if rule.note and not rule.pattern else ""
            raise ConfigError(f"{key}={shown}: {problem}{note}")


RETRIEVAL_MODES = ("knn", "balanced", "random")
INDEX_TYPES = ("auto", "flat", "hnsw", "ivf_flat", "ivf_pq")
BUILD_MODES = ("build", "append", "repair", "features")
FUSION_BASES = ("lda", "prototype", "simpleshot")
ADAPT_MODES = ("none", "source", "center", "standardize", "propagate")  # `rag_flamingo.shift.MODES`
TEMPLATES = ("eval", "train", "inference")
DECODES = ("generate", "rank", "rank_sum")
DATASET_SOURCES = ("official", "folder", "demo")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:[0-9]+)?"
DEVICE_NOTE = "auto, cpu, cuda, cuda:N or mps"


@dataclass
class RetrievalConfig:
    """How shots are retrieved (`rag_flamingo.retrieval.Retriever`)."""

    mode: str = ranged("knn", choices=RETRIEVAL_MODES)
    per_class: int = ranged(1, ge=1)  # balanced: the nearest recordings shown of each of the nearest classes
    overfetch: int = ranged(50, ge=0)  # neighbours fetched beyond k (AF1: 50)
    # cosine >= this to the query or a kept shot: dropped (null: off)
    near_duplicate_threshold: float | None = ranged(None, gt=0, le=1, note="null: off")
    shuffle: bool = True  # shuffle the in-context order (seeded per query)
    seed: int = ranged(0, ge=0)


@dataclass
class KnnOptions:
    # vote weight exp((s - s_max) / temperature); the default chosen across sets (BENCHMARKS.md, "Across
    # sets"), small: k shots answer as the nearest one unless others come within T ln(k - 1) of it
    temperature: float = ranged(0.003, gt=0)


@dataclass
class ZeroShotOptions:
    template: str = ZERO_SHOT_TEMPLATE


@dataclass
class SupportOptions:
    """simpleshot, tip_adapter, lda (`rag_flamingo.predictors.SupportPredictor`)."""

    tta: int = ranged(1, ge=1)  # query views embedded and averaged (`rag_flamingo.tta`); 1: off


@dataclass
class FusionOptions(SupportOptions):
    base: str = ranged("lda", choices=FUSION_BASES)  # the support-set classifier fused with the knn vote
    # the vote's share w in (1 - w) p_base + w p_vote, and the vote's (and a cosine base's softmax)
    # temperature: chosen across development sets, leaving one set out (BENCHMARKS.md, "Across sets");
    # weight null: chosen on the store by cross-validation
    weight: float | None = ranged(0.8, ge=0, le=1)
    temperature: float = ranged(0.03, gt=0)


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

    samples: int = ranged(1, ge=1)  # > 1 turns it on (sampling with model.generation's top_k/top_p)
    encoder: Any | None = None  # None: the store's encoder (a CLAP encoder); or {name: laion_clap, ...}


@dataclass
class FlamingoConfig:
    """How the engine uses the model (the model itself: the ``model`` group)."""

    features: str = "clapcap"  # the store's cached shot features (build_index ... features=clapcap)
    audio_slots: int | None = ranged(None, ge=1, note="null: model.num_slots")  # 8 for AF1: 7 shots + query
    template: str = ranged("eval", choices=TEMPLATES)
    # generate | rank (options by mean answer log-prob) | rank_sum (summed); engine.py
    decode: str = ranged("generate", choices=DECODES)
    clap_filter: ClapFilterConfig = field(default_factory=ClapFilterConfig)


@dataclass
class SplitsConfig:
    index: str | None = None  # the split build_index indexes (auto: a folder's train, else all)
    query: str | None = None  # the split evaluate queries (auto: a folder's test, else all)
    available: list[str] | None = None  # the dataset's splits (None: whatever the source has)


@dataclass
class DatasetConfig:
    """A ``dataset/`` config (``rag_flamingo/conf/dataset/``; yours in ``$RAG_FLAMINGO_CONF_PATH/dataset/``)."""

    name: str | None = None
    source: str | None = ranged(None, choices=DATASET_SOURCES, note="null: from the name")
    root: str | None = None  # the audio root (official: ${data_root}/<name>)
    manifest: Any = None  # a JSONL of your own ({split} in the path is replaced), or {split: path}
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    tasks: list[str] = field(default_factory=list)  # the first is the default task
    sample_rate: int | None = ranged(None, ge=1)
    allow_outside_root: bool = False  # accept manifest paths that leave the dataset root (../x.wav)


@dataclass
class IndexConfig:
    """An ``index/`` config: the FAISS index build_index makes (``rag_flamingo.indexing.faiss_index``)."""

    type: str = ranged("auto", choices=INDEX_TYPES)
    metric: str = ranged("cosine", choices=("cosine", "l2"))
    memory_budget: str = "4G"  # memory the index may use (powers of 1024: 512M, 4G)
    flat_below: int = ranged(1000, ge=0)
    hnsw_m: int | None = ranged(None, ge=2, note="null: 32 (index=hnsw; auto never picks HNSW)")
    ef_construction: int = ranged(80, ge=1)
    nlist: int | None = ranged(None, ge=1, note="null: from the count")
    pq_m: int | None = ranged(None, ge=1, note="null: the largest that fits memory_budget")
    recall_k: int = ranged(10, ge=1)
    recall_target: float = ranged(0.99, gt=0, le=1)
    recall_queries: int = ranged(1000, ge=1)
    use_gpu: Any = ranged("auto", choices=("auto", True, False))
    seed: int = ranged(0, ge=0)
    stream_above: int = ranged(1_000_000, ge=0)  # above this many items the index is built block by block


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
    batch_size: int = ranged(8, ge=1)  # queries per batch
    device: str = ranged("auto", pattern=DEVICE_PATTERN, note=DEVICE_NOTE)
    # `rag_flamingo.shift`: source needs no queries; center, standardize, propagate are transductive
    adapt: str = ranged("none", choices=ADAPT_MODES)


FIGURE_SCALES = ("fraction", "percent")


@dataclass
class FigureConfig:
    """A published (or reproduced) figure of a suite run, held against ours by `rag_flamingo.suite`."""

    value: float | None = None  # null: none published / none readable (say why in note)
    scale: str | None = ranged("fraction", choices=FIGURE_SCALES, note="percent: /100 to compare; null: fraction")
    metric: str | None = None  # what the figure measures, when it is not the run's main metric as is
    shots: int | None = ranged(0, ge=0, note="our shot count it corresponds to (retrieved shots, query not counted)")
    source: str | None = None  # file, table or figure
    note: str = ""  # how it was read (approximate, derived, ...), why not comparable
    comparable: bool = True  # false: ours is not measured the way this figure was (say why in note)
    approximate: bool = False  # read off a chart or derived: the comparison says so


@dataclass
class SuiteRunConfig:
    """One run of a suite: a dataset (and task) evaluated with the model and the baselines."""

    dataset: str = ""  # a dataset config name
    task: str | None = None  # None: the dataset's first task
    name: str | None = None  # the run's name and folder; None: <dataset>-<task> (two runs of one task need one)
    metric: str | None = None  # the main metric (a column of the task family's table); None: the family's first
    setting: str = ""  # a label for the table (in-domain, zero-shot, ...)
    shots: list[int] = field(default_factory=lambda: [0])  # predictor=flamingo at these shot counts
    baselines: list[str] | None = None  # None: the suite's baselines of the task's family
    overrides: list[str] = field(default_factory=list)  # this run's own evaluate overrides
    paper: FigureConfig = field(default_factory=FigureConfig)  # the published figure of the run's main metric
    paper_other: list[FigureConfig] = field(default_factory=list)  # further published figures (subsets, shots)
    reproduced: list[FigureConfig] = field(default_factory=list)  # others' figures with the released weights


@dataclass
class SuiteConfig:
    """A ``suite/`` config (``rag_flamingo/conf/suite/``; `rag_flamingo.suite`); name null: no suite."""

    name: str | None = None
    dry_run: bool = False  # print the plan only (nothing is written)
    output_dir: str | None = None  # null: outputs/suite/<name>
    features: str | None = None  # the model's shot features cached in the stores the suite builds
    overrides: list[str] = field(default_factory=list)  # every run's evaluate overrides
    build_overrides: list[str] = field(default_factory=list)  # extra build_index settings
    baselines: dict[str, list[str]] = field(default_factory=dict)  # task family -> training-free baselines
    baseline_shots: list[int] = field(default_factory=lambda: [7])  # when a run has no shot count >= 1
    costs: dict[str, Any] = field(default_factory=dict)  # device kind -> measured per-item seconds
    runs: list[SuiteRunConfig] = field(default_factory=list)


@dataclass
class EvaluateConfig(QueryConfig):
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    task: Any = field(default_factory=dict)
    index_split: str = "index"  # a split name, or the role looked up in dataset.splits: names the default store
    query_split: str = "query"  # a split name, or the role: the split whose items are the queries
    limit: int | None = ranged(None, ge=1, note="null: every query")  # only the first N queries
    predictor: Any = "knn"  # one or a list of the registered predictors
    shots: Any = ranged(4, whole=True, many=True, ge=0)  # one or a list of shot counts
    output_dir: str | None = None  # None: outputs/evaluate/<dataset>-<task>-<split>-<run key>
    overwrite: bool = False  # start a reused output_dir over when its run key differs
    progress: bool = True
    suite: SuiteConfig = field(default_factory=SuiteConfig)  # name null = one evaluation (rag_flamingo/suite.py)


@dataclass
class ClassifyConfig(QueryConfig):
    audio: str | None = None  # a file or a folder (searched recursively)
    predictor: str = "knn"
    k: int = ranged(4, ge=1)  # retrieved shots
    task: Any = field(default_factory=dict)  # the task group: classification (default) or tagging
    out: str | None = None  # also write JSON lines here


@dataclass
class BuildIndexConfig:
    """``build_index`` (the values and their comments: rag_flamingo/conf/build_index.yaml)."""

    cache_root: str = "${oc.env:RAG_FLAMINGO_CACHE_ROOT,${oc.env:HOME}/.cache/rag_flamingo}"
    data_root: str = "${oc.env:RAG_FLAMINGO_DATA_ROOT,${cache_root}/data}"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    encoder: Any = field(default_factory=dict)
    index: IndexConfig = field(default_factory=IndexConfig)
    split: str = "index"
    store: str | None = None
    mode: str = ranged("build", choices=BUILD_MODES)
    features: Any | None = None
    features_encoder: Any = field(default_factory=dict)
    shard_size: int = ranged(1000, ge=1)
    batch_size: int = ranged(32, ge=1)
    num_workers: int = ranged(2, ge=0, le=256)  # decoding processes (0: in the main process)
    device: str = ranged("auto", pattern=DEVICE_PATTERN, note=DEVICE_NOTE)
    min_seconds: float = ranged(0.1, ge=0)
    progress: bool = True

    @property
    def output(self) -> Path:
        """The store folder (``store``, once `rag_flamingo.indexing.pipeline.resolve` has resolved it)."""
        if not self.store:
            raise ConfigError("store is not resolved (rag_flamingo.indexing.pipeline.resolve(cfg) resolves it)")
        return Path(self.store).expanduser()


@dataclass
class AppConfig(QueryConfig):
    """``rag_app``, the interactive page (rag_flamingo/app/): the store it opens, where it may write."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)  # with store= unset: this dataset's store
    index_split: str = "index"
    stores: list[str] = field(default_factory=list)  # more stores to offer (paths or names under cache_root)
    predictor: str = "knn"  # the Ask tab's first choice
    k: int = ranged(4, ge=1)  # retrieved shots, the Ask tab's first value
    host: str = "127.0.0.1"  # the page is served here only (0.0.0.0 to open it to the network)
    port: int = ranged(7860, ge=1, le=65535)
    share: bool = False  # a public gradio.live link (off: nothing leaves the machine)
    max_upload_mb: int = ranged(50, ge=1)  # larger uploads are refused
    clips_dir: str | None = None  # New labels: kept clips (None: ${cache_root}/app_clips/<store>)
    results_dir: str = "outputs/evaluate"  # Results: the evaluate folders listed
    player_seconds: float = ranged(10.0, gt=0)  # shots and queries are played up to this length


SCHEMAS: dict[str, type] = {
    "evaluate": EvaluateConfig,
    "rag_classify": ClassifyConfig,
    "build_index": BuildIndexConfig,
    "rag_app": AppConfig,
}


def typed(schema: type[T], values: Mapping | None = None) -> T:
    """``schema`` filled in from ``values`` (a mapping of its settings, sections as mappings), checked as
    composition checks a config file: an unknown key or a value of the wrong type is a ConfigError."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if values is not None and not isinstance(values, Mapping):
        raise ConfigError(f"{schema.__name__}: settings are a mapping of names to values, not {type(values).__name__}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), dict(values or {}))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{schema.__name__}: {str(exc).splitlines()[0]}") from None
    check_ranges(schema, OmegaConf.to_container(merged, resolve=True))  # type: ignore[arg-type]
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def register() -> None:
    """Put the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=schema)
