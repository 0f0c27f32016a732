"""Retrieval of in-context shots from an index store, with Audio Flamingo's hygiene
(AF1's ``foundation/data/prepare_each_dataset.py``).

For each query the retriever

1. over-fetches ``k + overfetch`` neighbours (AF1 searches ``n_samples + 50``),
2. drops rows that fail the ``filters`` (split, label subset, any item field),
3. drops the query's own rows (``exclude_rows``, from `Retriever.own_rows`: the rows of the same
   recording -- same source and group, see `rag_flamingo.store.items.recording_key` -- and exact copies
   of its audio file, by content hash; AF1 drops the query's own file),
4. keeps one row per recording (AF1: one random manifest row per neighbour file, picked among the
   hits of that file; several captions of one recording are several rows of one recording),
5. optionally drops near-duplicates: a candidate whose cosine similarity (inner product of the
   L2-normalised vectors) with the query, or with a shot already kept, is >=
   ``near_duplicate_threshold`` (clip-retrieval uses 0.94 on normalised CLIP embeddings),
6. keeps the ``k`` nearest and, if ``shuffle``, shuffles their order (AF1 ``np.random.shuffle``).

With filters, the first fetch is scaled by (store size / rows passing the filters). If fewer than
``k`` rows survive, the search is widened (the fetch size doubles) until ``k`` shots are found or
the store is exhausted. Randomness (row within a group, shuffling, random mode) is
seeded per query from ``(seed, query id)`` so a query's shots do not depend on the batch it is in;
without a query id the query embedding's bytes stand in for it.

``mode="balanced"`` shows the classes the query is likely to be: steps 1-5 as above, then the
nearest ``per_class`` recordings of each of the nearest classes (classes ranked by their nearest
recording), as many classes as it takes to hold ``k`` rows (a class with fewer recordings than
``per_class`` lets the next one in), nearest-first and cut at ``k``. When the store has fewer labels
than ``ceil(k / per_class)``, each class gives more (``ceil(k / labels)``), so a prompt still holds
``k`` shots. A
multi-label item counts for each of its labels; unlabelled rows are never picked. The search widens
until every chosen class has its share (or the store is exhausted). The reference's ``knn`` stays the
default, for fidelity.

``mode="random"`` reproduces AF1's "random examples": ``k`` random recordings of the store (one random
row each), excluding the query's own rows, after the filters. The prompt builder then says
``Here are random examples. `` (the reference's ``interleaved_random`` wording, ``data.py``:
``f"Here are {item['interleaved']} examples. "`` with ``interleaved`` = ``similar`` | ``random``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import RETRIEVAL_MODES, RetrievalConfig
from .errors import ConfigError, StoreError
from .labels import item_labels
from .store.index_store import IndexStore
from .vectors import normalize_rows

logger = logging.getLogger(__name__)

MODES = RETRIEVAL_MODES


@dataclass
class Shot:
    """One retrieved in-context example: store row, item id, similarity (larger = nearer), item."""

    row: int
    id: str
    score: float
    item: dict = field(repr=False)


def query_seed(seed: int, query_id: str) -> int:
    """A stable 64-bit seed for one query (independent of batch composition and of PYTHONHASHSEED)."""
    digest = hashlib.sha256(f"{seed}\x00{query_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _embedding_key(vector: np.ndarray) -> str:
    return "emb:" + hashlib.sha256(np.ascontiguousarray(vector, np.float32).tobytes()).hexdigest()[:32]


def _as_set(value: Any) -> set[str]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return {str(v) for v in value}
    return {str(value)}


class ItemFilter:
    """Which store rows may be shots. ``filters`` keys:

    - ``split``: a split name or a list of them;
    - ``labels``: a label subset; an item passes if any of its labels is in it;
    - ``exclude_ids``: item ids never to return;
    - any other item field: a value or a list of accepted values (compared as strings).
    """

    def __init__(self, store: IndexStore, filters: dict | None):
        self.filters = dict(filters or {})
        self._allowed: np.ndarray | None = None
        self._n_labels: int | None = None
        if self.filters:
            self._allowed = np.array([self._passes(item) for item in store.items], dtype=bool)

    def _passes(self, item: dict) -> bool:
        for key, want in self.filters.items():
            if key == "labels":
                if not set(item_labels(item)) & _as_set(want):
                    return False
            elif key == "exclude_ids":
                if str(item.get("id")) in _as_set(want):
                    return False
            else:
                value = item.get(key)
                if value is None or str(value) not in _as_set(want):
                    return False
        return True

    def allows(self, row: int) -> bool:
        return self._allowed is None or bool(self._allowed[row])

    def count(self, total: int) -> int:
        return total if self._allowed is None else int(self._allowed.sum())

    def allowed_rows(self, count: int) -> np.ndarray:
        return np.arange(count) if self._allowed is None else np.flatnonzero(self._allowed)

    def label_count(self, labels: Sequence[Sequence[str]]) -> int:
        """How many labels the rows passing the filters have (``labels``: each row's)."""
        if self._n_labels is None:
            rows = self.allowed_rows(len(labels)).tolist()
            self._n_labels = len({lab for row in rows for lab in labels[row]})
        return self._n_labels


class Retriever:
    """Shots for queries from one index store (see the module docstring for the procedure)."""

    def __init__(
        self,
        store: IndexStore,
        encoder=None,
        overfetch: int = RetrievalConfig.overfetch,  # each default is the schema's (rag_flamingo.config)
        near_duplicate_threshold: float | None = RetrievalConfig.near_duplicate_threshold,
        shuffle: bool = RetrievalConfig.shuffle,
        seed: int = RetrievalConfig.seed,
        mode: str = RetrievalConfig.mode,
        per_class: int = RetrievalConfig.per_class,
    ):
        if mode not in MODES:
            raise ConfigError(f"retrieval mode {mode!r} is unknown; use one of {', '.join(MODES)}")
        if per_class < 1:
            raise ConfigError(f"per_class must be >= 1, got {per_class}")
        if overfetch < 0:
            raise ConfigError(f"overfetch must be >= 0, got {overfetch}")
        if encoder is not None:
            store.check_encoder(encoder.fingerprint())
        self.store, self.encoder, self.overfetch = store, encoder, int(overfetch)
        self.near_duplicate_threshold = near_duplicate_threshold
        self.shuffle, self.seed, self.mode, self.per_class = shuffle, int(seed), mode, int(per_class)
        self._labels: list[list[str]] = []  # balanced mode: each row's labels
        if mode == "balanced":
            self._labels = [item_labels(item) for item in store.items]
            if not any(self._labels):
                raise ConfigError(f"{store.root}: retrieval=balanced needs labelled items; use retrieval=knn")
        self._recordings = store.recording_keys  # one row per recording in the shots
        self._rows_by_key: dict[str, list[int]] | None = None  # recording/content key -> rows
        self._warned_short: set[int] = set()
        self._vectors: np.ndarray | None = None
        self._filters: dict[str, ItemFilter] = {}  # filter key -> ItemFilter (computed once)
        self._group_rows: dict[str, dict[str, list[int]]] = {}  # filter key -> group -> allowed rows

    # ------------------------------------------------------------------ public API

    @classmethod
    def from_config(cls, store: IndexStore, encoder, options: RetrievalConfig) -> Retriever:
        """From the ``retrieval`` section (``rag_flamingo/conf/retrieval/``)."""
        return cls(store, encoder, **dataclasses.asdict(options))

    def own_rows(self, recording: str | None = None, content: str | None = None) -> frozenset[int]:
        """Store rows that are the query itself: its recording (``recording_key`` of the query with
        its source's audio root) or an exact copy of its audio (``content_key``)."""
        if self._rows_by_key is None:
            by_key: dict[str, list[int]] = {}
            for row, key in enumerate(self._recordings):
                by_key.setdefault("r:" + key, []).append(row)
            for row, digest in enumerate(self.store.content_keys):
                if digest:
                    by_key.setdefault("c:" + digest, []).append(row)
            self._rows_by_key = by_key
        rows = self._rows_by_key.get(f"r:{recording}", []) if recording else []
        copies = self._rows_by_key.get(f"c:{content}", []) if content else []
        return frozenset(rows) | frozenset(copies)

    def search(
        self,
        query_embeddings: np.ndarray | None,
        k: int,
        exclude_rows: Sequence[Collection[int] | None] | None = None,
        query_ids: Sequence[str] | None = None,
        filters: dict | None = None,
    ) -> list[list[Shot]]:
        """Shots for each query, in prompt order (nearest-first, then shuffled if ``shuffle``).

        ``query_embeddings`` [Q, dim] (may be None in random mode when ``query_ids`` are given);
        ``exclude_rows[i]``: store rows never returned to query i (its own recording, `own_rows`);
        ``query_ids[i]``: seeds query i's randomness.
        """
        if k < 0:
            raise ConfigError(f"k must be >= 0, got {k}")
        queries = self._queries(query_embeddings, query_ids)
        count = len(queries) if queries is not None else len(query_ids or [])
        exclude = [frozenset(e or ()) for e in exclude_rows] if exclude_rows is not None else [frozenset()] * count
        if len(exclude) != count or (query_ids is not None and len(query_ids) != count):
            raise ConfigError(
                f"{count} queries but {len(exclude)} exclude_rows and "
                f"{len(query_ids) if query_ids is not None else count} query_ids"
            )
        keys = [
            str(query_ids[i]) if query_ids is not None else _embedding_key(queries[i])  # type: ignore[index]
            for i in range(count)
        ]  # without query ids there are embeddings (checked in _queries)
        rngs = [np.random.default_rng(query_seed(self.seed, key)) for key in keys]
        if k == 0 or count == 0:
            return [[] for _ in range(count)]
        key = json.dumps(filters or {}, sort_keys=True, default=str)
        if key not in self._filters:
            self._filters[key] = ItemFilter(self.store, filters)
        allowed = self._filters[key]
        if self.mode == "random":
            by_group = self._groups_allowed(key, allowed)
            rows = [self._random_rows(k, exclude[i], by_group, rngs[i], queries, i) for i in range(count)]
        else:
            rows = self._knn_rows(queries, k, exclude, allowed, rngs)
        out = []
        for i, picked in enumerate(rows):
            if self.shuffle and self.mode != "random":
                picked = [picked[j] for j in rngs[i].permutation(len(picked))]
            out.append([self._shot(row, score) for row, score in picked])
        short = [keys[i] for i, picked in enumerate(rows) if len(picked) < k]
        if short and k not in self._warned_short:  # once per k, not once per query or batch
            self._warned_short.add(k)
            logger.warning(
                "query %s (and maybe others): fewer than %d shots available in %s after filtering and "
                "self-exclusion; the outputs record the shots actually used",
                short[0],
                k,
                self.store.root,
            )
        return out

    def search_audio(self, waveforms: list[np.ndarray], k: int, **kwargs) -> list[list[Shot]]:
        """Embed ``waveforms`` (mono, at the encoder's rate) with the store's encoder, then search."""
        if self.encoder is None:
            raise ConfigError("search_audio needs the store's encoder: Retriever(store, encoder=...)")
        return self.search(np.asarray(self.encoder.embed(list(waveforms)), np.float32), k, **kwargs)

    # ------------------------------------------------------------------ k-NN

    def _queries(self, query_embeddings, query_ids) -> np.ndarray | None:
        if query_embeddings is None:
            if self.mode != "random":
                raise ConfigError(f"{self.mode} retrieval needs query embeddings")
            if query_ids is None:
                raise ConfigError("random retrieval needs query embeddings or query_ids to seed it")
            return None
        queries = np.atleast_2d(np.asarray(query_embeddings, dtype=np.float32))
        if queries.shape[1] != self.store.info.dim:
            raise StoreError(
                f"{self.store.root}: query dim {queries.shape[1]} != store dim "
                f"{self.store.info.dim}; embed queries with the store's encoder "
                f"{self.store.info.encoder.get('name')!r}"
            )
        if self.store.info.metric == "cosine":
            queries = normalize_rows(queries)
        return queries

    def _knn_rows(self, queries, k, exclude, allowed, rngs) -> list[list[tuple[int, float]]]:
        total = len(self.store)
        results: list[list[tuple[int, float]] | None] = [None] * len(queries)
        pending = list(range(len(queries)))
        fetch = k + self.overfetch
        n_allowed = allowed.count(total)
        if 0 < n_allowed < total:  # filters: scale the first fetch by the allowed fraction (fewer widenings)
            fetch = math.ceil(fetch * total / n_allowed)
        fetch = min(fetch, total)
        while pending:
            scores, rows = self.store.search(queries[pending], fetch)
            still = []
            for j, qi in enumerate(pending):
                picked = self._select(rows[j], scores[j], k, exclude[qi], allowed, rngs[qi], queries[qi])
                results[qi] = picked
                if len(picked) < k and fetch < total:
                    still.append(qi)
            if still:
                logger.debug("widening search for %d queries: %d -> %d", len(still), fetch, min(2 * fetch, total))
            pending, fetch = still, min(2 * fetch, total)
        return results  # type: ignore[return-value]

    def _select(self, rows, scores, k, exclude, allowed, rng, query) -> list[tuple[int, float]]:
        """Filter, drop own rows, one row per recording (random among its hits), near-dups, top k."""
        hits: dict[str, list[tuple[int, float]]] = {}
        for row, score in zip(rows.tolist(), scores.tolist()):
            if row < 0 or row in exclude or not allowed.allows(row):
                continue
            hits.setdefault(self._recordings[row], []).append((row, float(score)))
        # dicts keep insertion order: groups come nearest-first, as in AF1's `unique_indices`;
        # the row picked keeps its own score (rows of one recording usually share one vector)
        ranked = [members[int(rng.integers(len(members)))] for members in hits.values()]
        if self.near_duplicate_threshold is not None:
            ranked = self._drop_near_duplicates(ranked, k if self.mode == "knn" else len(ranked), query)
        if self.mode == "knn":
            return ranked[:k]
        return self._balanced(ranked, k, allowed.label_count(self._labels), complete=len(rows) >= len(self.store))

    def _balanced(
        self, ranked: list[tuple[int, float]], k: int, n_labels: int, complete: bool
    ) -> list[tuple[int, float]]:
        """The nearest ``quota`` rows of each of the nearest classes, as many classes as it takes to hold
        ``k`` rows (a class with fewer rows than its quota lets the next class in), nearest-first, at most
        ``k``. Fewer: the search widens (`_knn_rows`); a class short of its quota is only known to be
        short when ``complete`` (the whole store was fetched), so until then the next class waits."""
        quota = max(self.per_class, math.ceil(k / max(1, n_labels)))
        by_class: dict[str, list[tuple[int, float]]] = {}  # classes in the order of their nearest row
        for row, score in ranked:
            for lab in self._labels[row]:
                members = by_class.setdefault(lab, [])
                if len(members) < quota:
                    members.append((row, score))
        # rows beyond the fetched ones are all farther than these: k picks here are the exhaustive answer
        picked: dict[int, float] = {}
        for members in by_class.values():
            if len(picked) >= k:
                break
            picked.update(members)
            if len(members) < quota and not complete:
                break  # its other rows may lie beyond this fetch
        return sorted(picked.items(), key=lambda rs: -rs[1])[:k]

    # ------------------------------------------------------------------ near duplicates

    def _raw_vectors(self, rows: list[int]) -> np.ndarray:
        """Stored vectors of ``rows``: from the index when it can reconstruct, else the shards."""
        try:
            vectors = self.store.index.reconstruct_batch(np.asarray(rows, dtype=np.int64))
        except RuntimeError:  # IVF without a direct map, PQ codes, ...: use the shards
            if self._vectors is None:
                self._vectors = self.store.embeddings()
            vectors = self._vectors[np.asarray(rows)]
        return np.asarray(vectors, dtype=np.float32)

    def _vectors_of(self, rows: list[int]) -> np.ndarray:
        """L2-normalised stored vectors: near-duplicates are judged by cosine similarity."""
        return normalize_rows(self._raw_vectors(rows))

    def _drop_near_duplicates(self, ranked, k, query) -> list[tuple[int, float]]:
        threshold = float(self.near_duplicate_threshold or 0.0)  # only called when a threshold is set
        if not ranked:
            return []
        vectors = self._vectors_of([row for row, _ in ranked])
        to_query = vectors @ normalize_rows(query[None])[0]
        kept: list[int] = []
        for j in range(len(ranked)):
            if to_query[j] >= threshold:
                continue
            if kept and float(np.max(vectors[kept] @ vectors[j])) >= threshold:
                continue
            kept.append(j)
            if len(kept) == k:
                break
        return [ranked[j] for j in kept]

    # ------------------------------------------------------------------ random mode

    def _groups_allowed(self, key: str, allowed: ItemFilter) -> dict[str, list[int]]:
        if key not in self._group_rows:
            by_group: dict[str, list[int]] = {}
            for row in allowed.allowed_rows(len(self.store)).tolist():
                by_group.setdefault(self._recordings[row], []).append(row)
            self._group_rows[key] = dict(sorted(by_group.items()))
        return self._group_rows[key]

    def _random_rows(self, k, exclude, by_group, rng, queries, qi) -> list[tuple[int, float]]:
        groups = list(by_group)
        query = queries[qi] if queries is not None else None
        unit_query = normalize_rows(query[None])[0] if query is not None else None
        picked: list[int] = []
        vectors: list[np.ndarray] = []
        for g in rng.permutation(len(groups)).tolist():
            members = [row for row in by_group[groups[g]] if row not in exclude]
            if not members:
                continue
            row = members[int(rng.integers(len(members)))]
            if self.near_duplicate_threshold is not None:
                vec = self._vectors_of([row])[0]
                near = unit_query is not None and float(vec @ unit_query) >= self.near_duplicate_threshold
                if near or any(float(vec @ v) >= self.near_duplicate_threshold for v in vectors):
                    continue
                vectors.append(vec)
            picked.append(row)
            if len(picked) == k:
                break
        if query is None or not picked:
            return [(row, float("nan")) for row in picked]
        kept = self._raw_vectors(picked)
        if self.store.info.metric == "l2":  # the store's convention: larger is nearer
            scores = -np.sum((kept - query) ** 2, axis=1)
        else:
            scores = kept @ query
        return list(zip(picked, scores.tolist()))

    # ------------------------------------------------------------------ helpers

    def _shot(self, row: int, score: float) -> Shot:
        item = self.store.item(row)
        return Shot(row=int(row), id=str(item.get("id")), score=float(score), item=item)
