"""FAISS: choose an index (Flat, IVF-Flat, IVF-PQ; measured), train/add (on GPU when faiss-gpu sees one), tune recall.

Choice for ``index.type=auto`` (decided by measurement: BENCHMARKS.md, "Which index ``auto`` picks"):
  n < flat_below (1,000)                         -> Flat (exact)
  IVF-Flat fits the memory budget                -> IVF{k},Flat, k = 2^round(log2(4 sqrt(n)))
  otherwise                                      -> IVF{k},PQ{m}x8 with the largest m that fits
HNSW is never chosen by ``auto`` (``index.type=hnsw`` builds HNSW{hnsw_m or 32}): on real aisfx clip
embeddings (100k and 1M crops of 6 h of music) and on synthetic clustered vectors, IVF-Flat reached
recall@10 0.99 at a lower single-query latency than HNSW32, in about the same memory; at 1M HNSW32 also
took the longest to build. (autofaiss, whose rule this replaced, prefers HNSW whenever it fits.)
After building, recall@10 against exact search is measured on a seeded sample of the stored vectors
used as queries, each query's own row left out of the neighbours to find (a stored vector always
finds itself: counted, it made the figure optimistic for new queries), raising efSearch (HNSW) /
nprobe (IVF) until it reaches ``recall_target`` or the largest value; the chosen parameters and the
achieved recall are the store's ``IndexRecord``. Other stored near-copies of a query still make it
optimistic for recordings unlike any stored (on real aisfx crops of overlapping spans, queries from
unseen tracks needed 4-16x the nprobe / efSearch of the tuning that counted the own row:
BENCHMARKS.md).

The vectors come as ``VectorRows``: an array in memory (``ArrayRows``) or the store's shards read a
block at a time (``rag_flamingo.indexing.ondisk.ShardRows``, for stores larger than memory). Both go through
the same steps -- normalisation decided over all rows, training on a seeded sample of rows, adding
in blocks of ``ADD_BLOCK`` rows, exact neighbours merged block by block -- so they give the same
index, byte for byte.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator
from typing import Protocol

import faiss
import numpy as np

from ..config import IndexConfig
from ..errors import ConfigError
from ..store.index_store import apply_search_params
from ..store.records import IndexRecord
from ..vectors import normalize_rows

logger = logging.getLogger(__name__)

EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
PQ_SIZES = (256, 128, 64, 48, 32, 24, 16, 8, 4)
MIN_POINTS_PER_CENTROID = 39  # faiss warns below this
ADD_BLOCK = 65_536  # rows per add / exact-search block (IndexIVF.add splits into 65,536 rows too)
READ_ROWS = 1024  # the recall check's re-scoring reads stored rows in groups of at most this many


def parse_bytes(text: str | int | float) -> int:
    """'4G', '512M', '1.5GB', 1024 -> bytes (powers of 1024, as autofaiss)."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ConfigError(f"memory size {text!r}: write it like 512M or 4G")
    power = " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * 1024**power)


def choose_index(n: int, dim: int, opts: IndexConfig) -> tuple[str, str]:
    """(type, faiss factory string) for ``n`` vectors of ``dim`` under the options."""
    kind = opts.type
    budget = parse_bytes(opts.memory_budget)
    if kind == "auto":
        kind = _auto_kind(n, dim, budget, opts)
    if kind == "flat":
        return kind, "Flat"
    if kind == "hnsw":
        return kind, f"HNSW{opts.hnsw_m or 32},Flat"
    nlist = opts.nlist or _nlist(n)
    _check_trainable(kind, n, nlist, "lists")
    if kind == "ivf_flat":
        return kind, f"IVF{nlist},Flat"
    m = opts.pq_m or _pq_m(n, dim, budget)
    if dim % m:
        raise ConfigError(f"index.pq_m={m} must divide the embedding dimension {dim} (e.g. {_pq_m(n, dim, budget)})")
    nbits = (
        8
        if n >= MIN_POINTS_PER_CENTROID * 256
        else max(4, min(8, int(math.log2(max(2, n // MIN_POINTS_PER_CENTROID)))))
    )
    _check_trainable(kind, n, 2**nbits, "PQ centroids per sub-quantiser")
    return kind, f"IVF{nlist},PQ{m}x{nbits}"


def _check_trainable(kind: str, n: int, clusters: int, what: str) -> None:
    """k-means cannot train ``clusters`` centroids on fewer points: say so instead of FAISS's abort."""
    if n < clusters:
        raise ConfigError(
            f"index={kind} trains {clusters} {what} and needs at least {clusters} items, the store has {n}; "
            f"rerun with index=flat or index=auto (the embeddings are kept, nothing is embedded again)"
        )


def _auto_kind(n: int, dim: int, budget: int, opts: IndexConfig) -> str:
    """Flat when small, IVF-Flat while the vectors fit the budget, IVF-PQ beyond (module docstring)."""
    if n < opts.flat_below:
        return "flat"
    ivf_flat_bytes = n * (4 * dim + 8) + _nlist(n) * 4 * dim  # the vectors, their ids, the centroids
    return "ivf_flat" if ivf_flat_bytes <= budget else "ivf_pq"


def _nlist(n: int) -> int:
    k = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    while k > 1 and n < MIN_POINTS_PER_CENTROID * k:
        k //= 2
    return max(1, k)


def _pq_m(n: int, dim: int, budget: int) -> int:
    fitting = [m for m in PQ_SIZES if dim % m == 0 and n * (m + 8) <= budget]
    if not fitting:
        divisors = [m for m in PQ_SIZES if dim % m == 0]
        if not divisors:
            raise ConfigError(f"no PQ size divides dim {dim}; set index.pq_m")
        logger.warning(
            "index.memory_budget %d bytes: even PQ%d (the smallest code) needs %d for %d vectors; building it "
            "over the budget (raise index.memory_budget)",
            budget,
            divisors[-1],
            n * (divisors[-1] + 8),
            n,
        )
        return divisors[-1]
    return fitting[0]


def gpu_available(opts: IndexConfig) -> bool:
    if opts.use_gpu in (False, "false", "no", "off"):
        return False
    has = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if opts.use_gpu in (True, "true", "yes", "on") and not has:
        logger.warning("index.use_gpu=true but faiss has no visible GPU; building on CPU")
    return has


class VectorRows(Protocol):
    """Rows of float32 vectors, read a block or a selection at a time."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of ``rows`` (sorted row numbers), in that order."""
        ...

    def blocks(self, size: int) -> Iterator[np.ndarray]:
        """All rows in order, ``size`` rows at a time (the last block may be shorter)."""
        ...


class ArrayRows:
    """``VectorRows`` over an array in memory."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    @property
    def shape(self) -> tuple[int, int]:
        n, dim = self.vectors.shape
        return int(n), int(dim)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors[rows]

    def blocks(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, self.vectors.shape[0], size):
            yield self.vectors[start : start + size]


def build_index(vectors: np.ndarray | VectorRows, opts: IndexConfig) -> tuple[faiss.Index, IndexRecord]:
    """A trained, filled, tuned CPU index over ``vectors`` (row i = id i) and its report."""
    rows: VectorRows = ArrayRows(vectors) if isinstance(vectors, np.ndarray) else vectors
    n, dim = rows.shape
    prepare = _preparation(rows, opts.metric)
    kind, factory = choose_index(n, dim, opts)
    metric = faiss.METRIC_INNER_PRODUCT if opts.metric == "cosine" else faiss.METRIC_L2
    index = faiss.index_factory(dim, factory, metric)
    concrete = faiss.downcast_index(index)
    if isinstance(concrete, faiss.IndexHNSW):
        concrete.hnsw.efConstruction = opts.ef_construction
    if isinstance(concrete, faiss.IndexIVFPQ):
        # Polysemous training only serves Hamming-threshold search (unused here) and is very slow.
        concrete.do_polysemous_training = False  # type: ignore[attr-defined]  # (missing from faiss's stubs)
    use_gpu = kind != "hnsw" and gpu_available(opts)  # faiss has no GPU HNSW
    work = index
    if use_gpu:
        resources = faiss.StandardGpuResources()
        work = faiss.index_cpu_to_gpu(resources, 0, index)
    if not work.is_trained:
        work.train(prepare(rows.take(training_rows(n, factory, opts.seed))))
    for block in rows.blocks(ADD_BLOCK):
        work.add(prepare(block))
    index = faiss.index_gpu_to_cpu(work) if use_gpu else work
    report = IndexRecord(
        kind, factory, opts.metric, gpu=use_gpu, memory_budget=str(opts.memory_budget), recall_target=opts.recall_target
    )
    tune_recall(index, rows, kind, opts, report, prepare)
    logger.info(
        "index %s: recall@%d %.4f with %s",
        factory,
        opts.recall_k,
        report.recall_at_10,
        report.search_params or "exact search",
    )
    return index, report


def _as_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _preparation(rows: VectorRows, metric: str) -> Callable[[np.ndarray], np.ndarray]:
    """What every block goes through before FAISS sees it: float32, and unit length for cosine when
    any row is not (an encoder that does not L2-normalise); decided once over all rows."""
    if metric != "cosine" or rows.shape[0] == 0:
        return _as_float32
    low, high = np.inf, -np.inf
    for block in rows.blocks(ADD_BLOCK):
        norms = np.linalg.norm(block, axis=1)
        low, high = min(low, float(norms.min())), max(high, float(norms.max()))
    if max(abs(low - 1.0), abs(high - 1.0)) <= 1e-3:
        return _as_float32
    logger.warning(
        "metric=cosine: vectors are not unit length (norms %.3g-%.3g); normalising them for the index", low, high
    )
    return normalize_rows


def training_rows(n: int, factory: str, seed: int) -> np.ndarray:
    """The seeded sample of rows an IVF / PQ index is trained on (all rows when few)."""
    found = re.search(r"IVF(\d+)", factory)
    nlist = int(found.group(1)) if found else 1
    size = min(n, max(100 * nlist, 256 * 100 if "PQ" in factory else 0))
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def sample_queries(n: int, count: int, seed: int) -> np.ndarray:
    if count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, count, replace=False))


def recall_at_k(
    index: faiss.Index,
    queries: np.ndarray,
    truth: np.ndarray,
    k: int,
    own: np.ndarray | None = None,
    near: Callable[[np.ndarray], np.ndarray] | None = None,
) -> float:
    """Mean share of the exact top-k (``truth``) that ``index`` finds for the query vectors. ``own``:
    each query's own row id (a stored vector used as a query), left out of what the index finds, as
    `without_own` leaves it out of ``truth``. ``near(found ids) -> bool [m, k]`` (`as_near_as_truth`):
    with it a found row as near as the k-th true neighbour counts too, so a stored copy of a true
    neighbour (a tie) is no miss."""
    _, found = index.search(queries, k + (own is not None))
    if own is not None:
        found = without_own(found, own, k)
    wanted = np.maximum(1, np.minimum(k, (truth >= 0).sum(1)))
    if near is None:
        hits = np.array([len(set(a[a >= 0]) & set(b[b >= 0])) for a, b in zip(found, truth)])
    else:
        hits = ((found >= 0) & near(found)).sum(1)
    return float(np.mean(np.minimum(hits, wanted) / wanted))


def as_near_as_truth(
    rows: VectorRows,
    query_vectors: np.ndarray,
    truth: np.ndarray,
    metric: str,
    prepare: Callable[[np.ndarray], np.ndarray],
) -> Callable[[np.ndarray], np.ndarray]:
    """``found ids -> bool``: whether each found row is as near its query as the k-th row of ``truth``
    (the truth's similarities read and computed once, the found rows' per call)."""
    exact = _similarity(rows, query_vectors, metric, prepare)
    kth = np.where(truth >= 0, exact(truth), np.inf).min(1, keepdims=True)
    floor = kth - 1e-5 * np.maximum(1.0, np.abs(kth))
    return lambda found: exact(found) >= floor


def _similarity(
    rows: VectorRows, query_vectors: np.ndarray, metric: str, prepare: Callable[[np.ndarray], np.ndarray]
) -> Callable[[np.ndarray], np.ndarray]:
    """``ids [m, j] -> [m, j]``: each query's exact similarity to those rows (cosine: inner product of
    the prepared vectors; l2: minus the squared distance); ids < 0 give -inf."""

    def exact(ids: np.ndarray) -> np.ndarray:
        sims = np.empty(ids.shape)
        step = max(1, READ_ROWS // max(1, ids.shape[1]))  # at most READ_ROWS rows read at once
        for start in range(0, len(ids), step):
            part, q = ids[start : start + step], query_vectors[start : start + step]
            vectors = prepare(rows.take(np.maximum(part, 0).ravel())).reshape(*part.shape, -1)
            if metric == "cosine":
                sims[start : start + step] = np.einsum("md,mjd->mj", q, vectors)
            else:
                sims[start : start + step] = -((vectors - q[:, None, :]) ** 2).sum(-1)
        return np.where(ids >= 0, sims, -np.inf)

    return exact


def without_own(ids: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` ids of each row other than that row's ``own`` id (padded with -1)."""
    out = np.full((len(ids), k), -1, dtype=np.int64)
    for i, (row, mine) in enumerate(zip(ids, own)):
        kept = row[row != mine][:k]
        out[i, : len(kept)] = kept
    return out


def exact_neighbours(
    vectors: np.ndarray | VectorRows,
    queries: np.ndarray,
    k: int,
    metric: str,
    prepare: Callable[[np.ndarray], np.ndarray] = _as_float32,
) -> np.ndarray:
    """Exact top-k row ids for the rows ``queries``, searched block by block and merged."""
    rows: VectorRows = ArrayRows(vectors) if isinstance(vectors, np.ndarray) else vectors
    query_vectors = prepare(rows.take(queries))
    keep_max = metric == "cosine"
    faiss_metric = faiss.METRIC_INNER_PRODUCT if keep_max else faiss.METRIC_L2
    heap = faiss.ResultHeap(len(query_vectors), k, keep_max=keep_max)
    start = 0
    for block in rows.blocks(ADD_BLOCK):
        distances, ids = faiss.knn(query_vectors, prepare(block), min(k, len(block)), metric=faiss_metric)
        heap.add_result(distances, np.where(ids >= 0, ids + start, -1))
        start += len(block)
    heap.finalize()
    return heap.I


def search_ladder(index: faiss.Index, kind: str, k: int) -> tuple[str, list[int]]:
    """The search parameter the recall tuning raises and the values it tries, in order."""
    if kind == "hnsw":
        return "efSearch", [v for v in EF_SEARCH if v >= k] or [k]
    nlist = faiss.extract_index_ivf(index).nlist
    return "nprobe", sorted({min(nlist, 2**i) for i in range(int(math.log2(nlist)) + 2)})


def tune_recall(
    index: faiss.Index,
    vectors: np.ndarray | VectorRows,
    kind: str,
    opts: IndexConfig,
    report: IndexRecord,
    prepare: Callable[[np.ndarray], np.ndarray] = _as_float32,
) -> None:
    """Raise efSearch / nprobe until recall@k >= target (or the largest value); record it."""
    rows: VectorRows = ArrayRows(vectors) if isinstance(vectors, np.ndarray) else vectors
    n = rows.shape[0]
    k = min(opts.recall_k, n - 1) if n > 1 else 1
    queries = sample_queries(n, opts.recall_queries, opts.seed)
    report.recall_queries = len(queries)
    own = queries if n > 1 else None  # a stored vector as a query: its own row is no neighbour to find
    truth = exact_neighbours(rows, queries, k + (own is not None), opts.metric, prepare)
    if own is not None:
        truth = without_own(truth, own, k)
    query_vectors = prepare(rows.take(queries))
    near = as_near_as_truth(rows, query_vectors, truth, opts.metric, prepare)
    if kind == "flat":
        report.recall_at_10 = recall_at_k(index, query_vectors, truth, k, own, near)
        return
    name, values = search_ladder(index, kind, k)
    recall = 0.0
    for value in values:
        apply_search_params(index, {name: value})
        recall = recall_at_k(index, query_vectors, truth, k, own, near)
        report.search_params = {name: int(value)}
        if recall >= opts.recall_target:
            break
    report.recall_at_10 = recall
    report.reached_target = recall >= opts.recall_target
    if not report.reached_target:
        logger.warning(
            "index %s reaches recall@%d %.4f < target %.2f at the largest %s=%d",
            report.factory,
            k,
            recall,
            opts.recall_target,
            name,
            report.search_params[name],
        )
