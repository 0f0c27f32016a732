"""Predictors: what turns a query (its audio, embedding and retrieved shots) into an answer.

Reported side by side so users see what in-context learning adds:

- ``flamingo``: Audio Flamingo with the retrieved shots in its prompt (`RagFlamingo`);
- ``knn``: a similarity-weighted vote of the same retrieved shots (AF1's own retrieval with a
  vote instead of the language model; for captioning: the nearest shot's caption);
- ``prototype``: class centroids of the whole support set (``store.embeddings()``), nearest by
  cosine (Taylor & Mack's prototype baseline);
- ``zero_shot``: CLAP text embeddings of the label names, ``"this is a sound of {label}"``,
  nearest by cosine (CLAP encoders only: the encoder needs ``embed_text``);
- ``simpleshot``, ``tip_adapter``, ``lda``: training-free classifiers fitted on the whole support set
  (`rag_flamingo.adapters`: SimpleShot, Tip-Adapter, shrinkage LDA), for labels the encoder was not
  tuned for (``lda`` the best of them alone); option ``tta=N``: the
  query embedded as N augmented views, averaged (`rag_flamingo.tta`);
- ``fusion``: a support-set classifier's probabilities (``base``: lda by default, or prototype,
  simpleshot) mixed with the retrieved shots' knn vote at a fixed weight (or one chosen by
  cross-validation on the support), `rag_flamingo.adapters.Fusion`: the recommended predictor for new
  labels across the development sets (BENCHMARKS.md, "Across sets").

Every predictor sees the same `Query` records: the retrieved shots for ``k`` (``shots`` of the
evaluation), the retrieval embedding (from the store's encoder), the decoded audio and the store
rows that are the query's own recording (never used as its evidence).
Label predictors return ``label_scores`` over the option set so ranking metrics (mAP) can use them.
No predictor answers without evidence (`no_answer`: an empty output, unmatched and wrong): knn with
no shot voting for an offered label, the support-set predictors with no labelled row left once the
query's own rows are out. zero_shot's evidence is the label text, flamingo's the model: they answer.

Predictors are built by name from a registry (`register_predictor`, `build_predictor`); what a
predictor can do is declared by its attributes (`Predictor`), never by ``if name == ...``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from . import shift
from .adapters import (
    METHODS,
    Fitted,
    FusedVote,
    Fusion,
    Method,
    NearestCentroid,
    NeighbourVote,
    ShrinkageLda,
    SimpleShot,
    Support,
    vote_weights,
)
from .adapters import probabilities as class_probabilities
from .audio import DecodeKey
from .config import ZERO_SHOT_TEMPLATE, FusionOptions, KnnOptions, PredictorOptions, SupportOptions
from .errors import ConfigError, did_you_mean
from .labels import item_labels
from .prediction import Prediction
from .prompts import answer_text
from .retrieval import Shot
from .tasks import TaskFamily, TaskSpec, get_task
from .tta import check_views, embed_views
from .vectors import normalize_rows

logger = logging.getLogger(__name__)

LABEL_FAMILIES = (TaskFamily.CLASSIFICATION, TaskFamily.TAGGING)


@dataclass
class Query:
    """One query as every predictor sees it."""

    id: str
    item: dict  # the manifest row; predictors read only its inputs (question, group)
    waves: dict[DecodeKey, np.ndarray]  # decoded audio, one per decode key (`audio.wave_for`)
    embedding: np.ndarray  # retrieval embedding (the store's encoder)
    shots: list[Shot] = field(default_factory=list)  # retrieved for the current k, prompt order
    options: list[str] | None = None  # the answer set offered (labels; yes/no for AQA), or None
    own_rows: frozenset[int] = frozenset()  # store rows of the query's own recording (or exact copies)


class Predictor(Protocol):
    """What every predictor declares and does."""

    name: str
    uses_shots: bool  # False: the answer does not depend on k (reported once, shots None)
    min_shots: int  # the fewest shots it can answer with (knn: 1; flamingo: 0 = zero-shot)
    max_shots: int | None  # the most (flamingo: the model's audio slots - 1), None: no limit
    audio_encoders: Sequence[Any]  # encoders (beyond the store's) whose rate the query is decoded at

    def predict(self, queries: Sequence[Query], task: TaskSpec | str) -> list[Prediction]: ...


@dataclass
class PredictorContext:
    """What a predictor factory may use: the ``predictors`` section (each reads its own
    ``predictors.<name>``), the store, its encoder, the retriever, and the engine (built on first use:
    only flamingo needs it)."""

    options: PredictorOptions
    store: Any
    encoder: Any
    retriever: Any
    engine: Callable[[], Any]
    adapt: str = "none"  # `rag_flamingo.shift` mode (`AdaptedPredictor`)


PredictorFactory = Callable[[PredictorContext], Predictor]
_REGISTRY: dict[str, PredictorFactory] = {}


def register_predictor(name: str) -> Callable[[PredictorFactory], PredictorFactory]:
    """Decorator: ``@register_predictor("mine") def build(ctx) -> Predictor``."""

    def add(factory: PredictorFactory) -> PredictorFactory:
        _REGISTRY[name] = factory
        return factory

    return add


def predictor_names() -> list[str]:
    return sorted(_REGISTRY)


def build_predictor(name: str, ctx: PredictorContext) -> Predictor:
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown predictor {name!r}{did_you_mean(name, _REGISTRY)}; "
            f"use one or more of {', '.join(predictor_names())}"
        )
    if ctx.adapt != "none":
        return _adapted(name, ctx)
    return _REGISTRY[name](ctx)


def _require_labels(name: str, task: TaskSpec) -> None:
    if task.family not in LABEL_FAMILIES:
        raise ConfigError(
            f"predictor {name} answers classification/tagging tasks, not {task.name} "
            f"({task.family}); use predictor=flamingo{' or knn' if task.family == 'captioning' else ''}"
        )


def no_answer(shots: Sequence[Shot] = ()) -> Prediction:
    """What a predictor answers without evidence (no shot votes for an offered label, no support
    example of one): nothing. The empty output matches no option, so the metrics count it wrong
    and report it as unmatched; it is never a guess (such as the alphabetically first label)."""
    return Prediction(output="", score=None, label_scores={}, shots=list(shots))


def labels_from_scores(task: TaskSpec, scores: dict[str, float], n_tags: int = 1) -> Prediction:
    """The answer of a label predictor: the best label, or for tagging the ``n_tags`` best
    (no answer when ``scores`` is empty: no label has evidence)."""
    ranked = sorted(scores, key=lambda lab: (-scores[lab], lab))
    if not ranked:
        return no_answer()
    top = ranked[: max(1, n_tags)] if task.family == TaskFamily.TAGGING else ranked[:1]
    return Prediction(
        output=", ".join(task.map_label(lab) for lab in top),  # e.g. joy -> happy
        score=float(scores[top[0]]),
        label_scores=dict(scores),
    )


def typical_tag_count(items: Sequence[dict]) -> int:
    """How many labels a tagging answer gives: the support set's mean labels per item, rounded."""
    counts = [len(item_labels(it)) for it in items if item_labels(it)]
    return max(1, int(round(float(np.mean(counts))))) if counts else 1


class KnnPredictor:
    """Similarity-weighted vote of the retrieved shots.

    Each shot votes for its labels with weight ``exp((s - s_max) / temperature)`` (``s``: its
    retrieval similarity); a label's score is its share of the total weight (in [0, 1]). Ties break
    alphabetically. At the default temperature (`config.KnnOptions`, chosen across development
    sets) more shots never overrule the nearest one unless they come within ``T ln(k - 1)`` of its
    similarity (its weight then no longer outweighs all the others together): 1-NN is the limit as
    the temperature goes to 0, a plain majority vote as it grows. The answer is among the offered
    labels some shot voted for: with no shot left (a leave-one-out query alone in the store, every
    shot filtered) or no vote for an offered label there is no answer (`no_answer`), never a label
    no shot named. Captioning: the caption of the most similar shot (a retrieval baseline).
    """

    name = "knn"
    uses_shots, min_shots = True, 1
    max_shots: int | None = None
    audio_encoders: Sequence[Any] = ()

    def __init__(self, temperature: float = KnnOptions.temperature, n_tags: int = 1):
        if temperature <= 0:
            raise ConfigError(f"knn temperature must be > 0, got {temperature}")
        self.temperature, self.n_tags = float(temperature), int(n_tags)

    def vote(self, shots: Sequence[Shot]) -> dict[str, float]:
        if not shots:
            return {}
        weights = vote_weights([s.score for s in shots], self.temperature)
        totals: dict[str, float] = {}
        for w, shot in zip(weights, shots):
            for lab in item_labels(shot.item):
                totals[lab] = totals.get(lab, 0.0) + float(w)
        norm = float(weights.sum())
        return {lab: v / norm for lab, v in totals.items()}

    def predict(self, queries, task):
        task = get_task(task)
        if task.family == TaskFamily.CAPTIONING:
            out = []
            for q in queries:
                best = max(q.shots, key=lambda s: s.score) if q.shots else None
                out.append(
                    Prediction(
                        answer_text(task, best.item) if best else "",
                        float(best.score) if best else None,
                        shots=list(q.shots),
                    )
                )
            return out
        _require_labels(self.name, task)
        preds = []
        for q in queries:
            votes = self.vote(q.shots)
            offered = set(q.options) if q.options else None
            evidence = {lab: v for lab, v in votes.items() if v > 0 and (offered is None or lab in offered)}
            if not evidence:
                preds.append(no_answer(q.shots))
                continue
            pred = labels_from_scores(task, evidence, self.n_tags)  # only labels some shot voted for
            pred.label_scores = {lab: votes.get(lab, 0.0) for lab in q.options} if q.options else votes
            pred.shots = list(q.shots)
            preds.append(pred)
        return preds


class PrototypePredictor:
    """Nearest class centroid: the mean of the (L2-normalised) store embeddings of each label.

    A query whose own recording is in the store (leave-one-out evaluation, or an exact copy of its
    file) is scored against centroids without those rows (``Query.own_rows``), as retrieval never
    returns them.
    """

    name = "prototype"
    uses_shots, min_shots = False, 0
    max_shots: int | None = None
    audio_encoders: Sequence[Any] = ()

    def __init__(self, store, n_tags: int | None = None):
        self.store = store
        self.emb = normalize_rows(store.embeddings())
        by_label: dict[str, list[int]] = {}
        for row, item in enumerate(store.items):
            for lab in item_labels(item):
                by_label.setdefault(lab, []).append(row)
        if not by_label:
            raise ConfigError(
                f"{store.root}: no labelled items, so no prototypes; index a labelled "
                f"dataset (manifest 'label'/'labels', or sub-folders for dataset=folder)"
            )
        self.labels = sorted(by_label)
        self.sums = np.stack([self.emb[by_label[lab]].sum(0) for lab in self.labels])
        self.counts = np.array([len(by_label[lab]) for lab in self.labels])
        self.centroids = normalize_rows(self.sums)
        self.n_tags = n_tags or typical_tag_count(store.items)
        self._label_index = {lab: i for i, lab in enumerate(self.labels)}

    def centroids_without(self, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(centroids, usable label mask) with store rows ``rows`` left out."""
        if not rows:
            return self.centroids, np.ones(len(self.labels), bool)
        sums, counts = self.sums.copy(), self.counts.copy()
        for row in rows:
            for lab in item_labels(self.store.item(row)):
                sums[self._label_index[lab]] -= self.emb[row]
                counts[self._label_index[lab]] -= 1
        return normalize_rows(sums), counts > 0

    def predict(self, queries, task):
        task = get_task(task)
        _require_labels(self.name, task)
        preds = []
        for q in queries:
            centroids, usable = self.centroids_without(sorted(q.own_rows))
            sims = centroids @ normalize_rows(q.embedding[None])[0]
            labels = [lab for lab, ok in zip(self.labels, usable) if ok]
            preds.append(_restricted(task, labels, sims[usable], q.options, self.n_tags))
        return preds


class SupportPredictor:
    """A `rag_flamingo.adapters` method fitted on the store's labelled rows, without each query's own
    rows (``Query.own_rows``): one fit for the queries from outside the store, one per own-row set
    otherwise (leave-one-out evaluation refits, so it stays honest; the last few fits are kept).
    ``tta`` > 1: each query is the average of that many augmented views of its audio, embedded by
    ``encoder`` (the store's; `rag_flamingo.tta`)."""

    uses_shots, min_shots = False, 0
    max_shots: int | None = None
    audio_encoders: Sequence[Any] = ()
    KEEP_FITS = 32

    def __init__(self, method: Method, store, n_tags: int = 1, encoder=None, tta: int = 1):
        self.method, self.name, self.n_tags = method, method.name, n_tags
        self.encoder, self.tta = encoder, check_views(tta)
        self.support = Support.from_items(store.embeddings(), store.items, where=str(store.root))
        self._labelled = frozenset(self.support.rows.tolist())
        self._fits: dict[frozenset[int], tuple[Support, Fitted]] = {}

    def embed(self, queries: Sequence[Query]) -> np.ndarray:
        """The queries' L2-normalised embeddings [m, d] (float64), averaged over ``tta`` views."""
        return embed_views(self.encoder, queries, self.tta)

    def has_support(self, own_rows: frozenset[int]) -> bool:
        """Whether any labelled row is left once ``own_rows`` are (else nothing to fit, no answer)."""
        return len(self._labelled) > len(own_rows & self._labelled)

    def fitted(self, own_rows: frozenset[int]) -> tuple[Support, Fitted]:
        if own_rows not in self._fits:
            if len(self._fits) >= self.KEEP_FITS:
                self._fits.pop(next(k for k in self._fits if k))  # never the fit without own rows
            support = self.support.without(own_rows)
            self._fits[own_rows] = (support, self.method.fit(support))
        return self._fits[own_rows]

    def predict(self, queries, task):
        task = get_task(task)
        _require_labels(self.name, task)
        preds: list[Prediction | None] = [None] * len(queries)
        for own, idx in _by_own_rows(queries).items():
            if not self.has_support(own):  # every labelled row is the query's own: no evidence
                for i in idx:
                    preds[i] = no_answer()
                continue
            support, fit = self.fitted(own)
            scores = fit.scores(self.embed([queries[i] for i in idx]))
            for i, row in zip(idx, scores):
                preds[i] = _restricted(task, support.labels, row, queries[i].options, self.n_tags)
        return preds  # every index was filled


class FusionPredictor:
    """A support-set classifier's probabilities mixed with the retrieved shots' knn vote,
    ``(1 - w) p_base + w p_vote`` (`rag_flamingo.adapters.Fusion`). ``w`` is ``predictors.fusion.weight``,
    or when that is null chosen by cross-validation on the support without the query's own rows, once
    per (own rows, shots)."""

    name = "fusion"
    uses_shots, min_shots = True, 1
    max_shots: int | None = None
    audio_encoders: Sequence[Any] = ()

    def __init__(self, base: SupportPredictor, knn: KnnPredictor, weight: float | None = FusionOptions.weight):
        self.base, self.knn, self.n_tags = base, knn, base.n_tags
        self.fusion = Fusion(base.method, knn.temperature, weight)
        self._weights: dict[tuple[frozenset[int], int], float] = {}

    def weight(self, own_rows: frozenset[int], k: int) -> float:
        if (own_rows, k) not in self._weights:
            if len(self._weights) >= self.base.KEEP_FITS:
                self._weights.pop(next(key for key in self._weights if key[0]))  # keep the store-wide ones
            self._weights[own_rows, k] = self.fusion.weight(self.base.fitted(own_rows)[0], k)
        return self._weights[own_rows, k]

    def predict(self, queries, task):
        task = get_task(task)
        _require_labels(self.name, task)
        preds: list[Prediction | None] = [None] * len(queries)
        for own, idx in _by_own_rows(queries).items():
            if not self.base.has_support(own):  # no labelled row left, so no vote either: no evidence
                for i in idx:
                    preds[i] = no_answer(queries[i].shots)
                continue
            support, fit = self.base.fitted(own)
            probs = class_probabilities(fit, self.base.embed([queries[i] for i in idx]), self.knn.temperature)
            for i, p_base in zip(idx, probs):
                q = queries[i]
                w = self.weight(own, len(q.shots))
                votes = self.knn.vote(q.shots)
                fused = (1 - w) * p_base + w * np.array([votes.get(lab, 0.0) for lab in support.labels])
                pred = _restricted(task, support.labels, fused, q.options, self.n_tags)
                pred.shots = list(q.shots)
                preds[i] = pred
        return preds  # every index was filled


class AdaptedPredictor:
    """knn or a support-set rule in the space of ``adapt`` (`rag_flamingo.shift`): the store's
    labelled rows and the queries re-expressed together (for a transductive mode, every query of
    the call: evaluate and rag_classify pass all their clips in one call), then the rule fitted on
    the store's rows without each query's own. knn votes its ``k`` (the query's shot count) nearest
    rows of the adapted space, found by exact search (`adapters.NeighbourVote`), not the index's
    shots; ``propagate`` spreads the rule's class probabilities (`adapters.probabilities` at
    ``temperature``) over the graph of store and queries."""

    max_shots: int | None = None
    audio_encoders: Sequence[Any] = ()

    def __init__(self, name: str, method: Callable[[int], Method], store, mode: str, temperature: float, knn: bool):
        shift.check(mode)
        self.name, self.method, self.mode, self.temperature = name, method, mode, float(temperature)
        self.uses_shots, self.min_shots = knn, int(knn)
        self.support = Support.from_items(store.embeddings(), store.items, where=str(store.root))
        self.sources = [shift.item_source(store.item(int(r))) for r in self.support.rows]
        if mode == "source" and len(set(self.sources)) < 2:
            logger.warning(
                "adapt=source: %s's items name fewer than two sources (by a 'source' field or '<source>__' file "
                "names), so it only subtracts the store's mean; give the manifest a source per row to remove each "
                "one's offset",
                store.root,
            )
        self.n_tags = typical_tag_count(store.items)

    def predict(self, queries, task):
        task = get_task(task)
        _require_labels(self.name, task)
        if self.mode in shift.TRANSDUCTIVE and len(queries) < shift.MIN_QUERIES:  # the others were unreadable
            logger.warning(
                "adapt=%s labels clips together and needs at least %d readable ones; %d left after the "
                "unreadable ones were skipped: no answer",
                self.mode,
                shift.MIN_QUERIES,
                len(queries),
            )
            return [no_answer() for _ in queries]
        raw = np.stack([q.embedding for q in queries]).astype(np.float64)
        if self.mode in shift.TRANSDUCTIVE and (label := shift.single_label_batch(self.support, raw)):
            logger.warning(
                "adapt=%s: all %d clips are nearest to %r before adapting; a batch of one label has its shared "
                "sound centred away and its answers go wrong: label such a batch with adapt=none or adapt=source",
                self.mode,
                len(queries),
                label,
            )
        support, emb = shift.adapted(self.mode, self.support, self.sources, raw)
        groups: dict[tuple[frozenset[int], int], list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault((q.own_rows, len(q.shots)), []).append(i)
        preds: list[Prediction] = [no_answer()] * len(queries)
        for (own, k), idx in groups.items():
            rest = support.without(own)
            if not rest.labels or (self.uses_shots and k < 1):  # no labelled row left, or no shot: no evidence
                continue
            fit = self.method(k).fit(rest)
            scores = fit.scores(emb[idx])
            if self.mode == "propagate":
                probs = class_probabilities(fit, emb[idx], self.temperature)
                scores = shift.propagate(rest.emb, rest.onehot, emb[idx], probs)
            for i, row in zip(idx, scores):
                preds[i] = _restricted(task, rest.labels, row, queries[i].options, self.n_tags)
        return preds


ADAPTABLE = ("knn", "prototype", *METHODS, "fusion")


def check_adapt(adapt: str, names: Sequence[str]) -> None:
    """One-line refusal of an unknown ``adapt`` mode, or one for a predictor it does not apply to (cheap:
    the CLIs call it before checking for model weights)."""
    shift.check(adapt)
    if adapt != "none" and (other := next((n for n in names if n not in ADAPTABLE), None)):
        raise ConfigError(f"adapt={adapt} applies to {', '.join(ADAPTABLE)}, not to predictor {other}")


def _adapted(name: str, ctx: PredictorContext) -> Predictor:
    check_adapt(ctx.adapt, [name])
    if getattr(getattr(ctx.options, name, None), "tta", 1) > 1:
        raise ConfigError(f"predictors.{name}.tta and adapt={ctx.adapt} are not combined; use one of them")
    # knn's vote; a cosine rule's class probabilities (for propagate) as fusion makes them
    temperature = ctx.options.knn.temperature if name == "knn" else ctx.options.fusion.temperature
    if name == "knn":
        return AdaptedPredictor(name, lambda k: NeighbourVote(k, temperature), ctx.store, ctx.adapt, temperature, True)
    if name == "fusion":
        options = ctx.options.fusion
        fusion = Fusion(_fusion_base(options.base)(), options.temperature, options.weight)
        return AdaptedPredictor(name, lambda k: FusedVote(fusion, k), ctx.store, ctx.adapt, temperature, True)
    method: type = NearestCentroid if name == "prototype" else METHODS[name]
    return AdaptedPredictor(name, lambda k: method(), ctx.store, ctx.adapt, temperature, False)


class ZeroShotPredictor:
    """CLAP zero-shot: cosine between the query's audio embedding and ``template`` per label."""

    name = "zero_shot"
    uses_shots, min_shots = False, 0
    max_shots: int | None = None
    audio_encoders: Sequence[Any] = ()

    def __init__(self, encoder, labels: Sequence[str], template: str = ZERO_SHOT_TEMPLATE, n_tags: int = 1):
        if not hasattr(encoder, "embed_text"):
            raise ConfigError(
                f"predictor zero_shot needs a CLAP encoder with text embeddings; the store's "
                f"encoder {getattr(encoder, 'name', type(encoder).__name__)!r} has none "
                f"(build the index with encoder=laion_clap or encoder=ms_clap_2023)"
            )
        if not labels:
            raise ConfigError("predictor zero_shot needs label names (the store has no labels)")
        self.labels = list(labels)
        self.template = template
        self.text = normalize_rows(encoder.embed_text([template.format(label=lab) for lab in self.labels]))
        self.n_tags = n_tags

    def predict(self, queries, task):
        task = get_task(task)
        _require_labels(self.name, task)
        sims = normalize_rows(np.stack([q.embedding for q in queries])) @ self.text.T
        return [_restricted(task, self.labels, row, q.options, self.n_tags) for q, row in zip(queries, sims)]


class FlamingoPredictor:
    """Audio Flamingo with the retrieved shots in context (see `rag_flamingo.engine`)."""

    name = "flamingo"
    uses_shots, min_shots = True, 0

    def __init__(self, engine):
        self.engine = engine
        self.max_shots = engine.max_shots
        self.audio_encoders = engine.audio_encoders

    def predict(self, queries, task):
        task = get_task(task)
        most = max((len(q.shots) for q in queries), default=0)
        if most > self.max_shots:
            raise ConfigError(
                f"{most} shots do not fit the model's {self.engine.audio_slots} "
                f"audio slots; use shots <= {self.engine.max_shots}"
            )
        inputs = [_query_inputs(q) for q in queries]
        answers = self.engine.generate(
            task,
            inputs,
            [q.shots for q in queries],
            [q.waves for q in queries],
            query_options=[q.options if task.options else None for q in queries],
        )
        return list(answers)


def _by_own_rows(queries: Sequence[Query]) -> dict[frozenset[int], list[int]]:
    """Query indices grouped by their own rows (one support fit serves each group)."""
    groups: dict[frozenset[int], list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(q.own_rows, []).append(i)
    return groups


def _restricted(task: TaskSpec, labels: list[str], sims: np.ndarray, options, n_tags: int) -> Prediction:
    """Scores of the labels offered (all known labels when no options are given)."""
    offered = set(options) if options else None
    return labels_from_scores(
        task, {lab: float(s) for lab, s in zip(labels, sims) if offered is None or lab in offered}, n_tags
    )


def _query_inputs(q: Query) -> dict:
    """The query fields a prompt may use (never its targets)."""
    keep = ("id", "group", "question", "start", "end")
    return {k: q.item[k] for k in keep if q.item.get(k) is not None}


@register_predictor("knn")
def _knn(ctx: PredictorContext) -> Predictor:
    return KnnPredictor(temperature=ctx.options.knn.temperature, n_tags=typical_tag_count(ctx.store.items))


@register_predictor("prototype")
def _prototype(ctx: PredictorContext) -> Predictor:
    return PrototypePredictor(ctx.store, n_tags=typical_tag_count(ctx.store.items))


def _support_predictor(method: Method, ctx: PredictorContext, options: SupportOptions) -> SupportPredictor:
    return SupportPredictor(
        method, ctx.store, n_tags=typical_tag_count(ctx.store.items), encoder=ctx.encoder, tta=options.tta
    )


def _support_factory(name: str) -> PredictorFactory:
    def build(ctx: PredictorContext) -> Predictor:
        return _support_predictor(METHODS[name](), ctx, getattr(ctx.options, name))

    return build


for _name in METHODS:
    register_predictor(_name)(_support_factory(_name))

FUSION_BASES: dict[str, type] = {"lda": ShrinkageLda, "prototype": NearestCentroid, "simpleshot": SimpleShot}


@register_predictor("fusion")
def _fusion(ctx: PredictorContext) -> Predictor:
    options = ctx.options.fusion
    knn = KnnPredictor(temperature=options.temperature)
    return FusionPredictor(_support_predictor(_fusion_base(options.base)(), ctx, options), knn, options.weight)


def _fusion_base(base: str) -> type:
    if base not in FUSION_BASES:
        raise ConfigError(
            f"predictors.fusion.base={base!r} is not a fusion base{did_you_mean(base, FUSION_BASES)}; "
            f"use one of {', '.join(FUSION_BASES)}"
        )
    return FUSION_BASES[base]


@register_predictor("zero_shot")
def _zero_shot(ctx: PredictorContext) -> Predictor:
    return ZeroShotPredictor(
        ctx.encoder,
        ctx.store.label_set(),
        template=ctx.options.zero_shot.template,
        n_tags=typical_tag_count(ctx.store.items),
    )


@register_predictor("flamingo")
def _flamingo(ctx: PredictorContext) -> Predictor:
    return FlamingoPredictor(ctx.engine())
