"""FAISS: choose an index like autofaiss, train/add (on GPU when faiss-gpu sees one), tune recall.

Choice for ``index.type=auto`` (autofaiss's ``get_optimal_index_keys_v2``, simplified):
  n < flat_below (1,000)                         -> Flat (exact)
  n < 10,000                                     -> HNSW15
  HNSW{M} fits the memory budget with M >= 8     -> HNSW{min(M, 32)}
  n < 1M and IVF-Flat fits the budget            -> IVF{k},Flat, k = 2^round(log2(4 sqrt(n)))
  otherwise                                      -> IVF{k},PQ{m}x8 with the largest m that fits
After building, recall@10 against exact search is measured on a seeded sample of the stored vectors
used as queries, raising efSearch (HNSW) / nprobe (IVF) until it reaches ``recall_target`` or the
largest value; the chosen parameters and the achieved recall are the store's ``IndexRecord``.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import faiss
import numpy as np

from rag_flamingo.errors import ConfigError
from rag_flamingo.store import IndexRecord, apply_search_params, normalize_rows

logger = logging.getLogger(__name__)

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf_flat", "ivf_pq")
EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
PQ_SIZES = (256, 128, 64, 48, 32, 24, 16, 8, 4)
MIN_POINTS_PER_CENTROID = 39  # faiss warns below this


@dataclass
class IndexOptions:
    type: str = "auto"
    metric: str = "cosine"
    memory_budget: str = "4G"
    flat_below: int = 1000
    hnsw_m: int | None = None  # None: from the budget (auto) or 32
    ef_construction: int = 80
    nlist: int | None = None
    pq_m: int | None = None
    recall_k: int = 10
    recall_target: float = 0.99
    recall_queries: int = 1000
    use_gpu: str | bool = "auto"
    seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> IndexOptions:
        known = {k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg}
        opts = cls(**known)
        if opts.type not in INDEX_TYPES:
            raise ConfigError(f"index.type={opts.type!r}; use one of {', '.join(INDEX_TYPES)}")
        if opts.metric not in ("cosine", "l2"):
            raise ConfigError(f"index.metric={opts.metric!r}; use cosine or l2")
        return opts


def parse_bytes(text: str | int | float) -> int:
    """'4G', '512M', '1.5GB', 1024 -> bytes (powers of 1024, as autofaiss)."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ConfigError(f"memory size {text!r}: write it like 512M or 4G")
    power = " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * 1024**power)


def choose_index(n: int, dim: int, opts: IndexOptions) -> tuple[str, str]:
    """(type, faiss factory string) for ``n`` vectors of ``dim`` under the options."""
    kind = opts.type
    budget = parse_bytes(opts.memory_budget)
    if kind == "auto":
        kind = _auto_kind(n, dim, budget, opts)
    if kind == "flat":
        return kind, "Flat"
    if kind == "hnsw":
        m = opts.hnsw_m or (
            _hnsw_m(n, dim, budget) if opts.type == "auto" and n >= 10_000 else (15 if opts.type == "auto" else 32)
        )
        return kind, f"HNSW{m},Flat"
    nlist = opts.nlist or _nlist(n)
    if kind == "ivf_flat":
        return kind, f"IVF{nlist},Flat"
    m = opts.pq_m or _pq_m(n, dim, budget)
    nbits = (
        8
        if n >= MIN_POINTS_PER_CENTROID * 256
        else max(4, min(8, int(math.log2(max(2, n // MIN_POINTS_PER_CENTROID)))))
    )
    return kind, f"IVF{nlist},PQ{m}x{nbits}"


def _auto_kind(n: int, dim: int, budget: int, opts: IndexOptions) -> str:
    if n < opts.flat_below:
        return "flat"
    if n < 10_000 or _hnsw_m(n, dim, budget) >= 8:
        return "hnsw"
    ivf_flat_bytes = n * (4 * dim + 8) + _nlist(n) * 4 * dim
    if n < 1_000_000 and ivf_flat_bytes <= budget:
        return "ivf_flat"
    return "ivf_pq"


def _hnsw_m(n: int, dim: int, budget: int) -> int:
    return min(32, int((budget / (4 * max(n, 1)) - dim) // 2))


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
        return divisors[-1]
    return fitting[0]


def gpu_available(opts: IndexOptions) -> bool:
    if opts.use_gpu in (False, "false", "no", "off"):
        return False
    has = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if opts.use_gpu in (True, "true", "yes", "on") and not has:
        logger.warning("index.use_gpu=true but faiss has no visible GPU; building on CPU")
    return has


def build_index(vectors: np.ndarray, opts: IndexOptions) -> tuple[faiss.Index, IndexRecord]:
    """A trained, filled, tuned CPU index over ``vectors`` (row i = id i) and its report."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if opts.metric == "cosine" and len(vectors):
        norms = np.linalg.norm(vectors, axis=1)
        if np.abs(norms - 1.0).max() > 1e-3:  # an encoder that does not L2-normalise: cosine needs it
            logger.warning(
                "metric=cosine: vectors are not unit length (norms %.3g-%.3g); normalising them for the index",
                norms.min(),
                norms.max(),
            )
            vectors = normalize_rows(vectors)
    n, dim = vectors.shape
    kind, factory = choose_index(n, dim, opts)
    metric = faiss.METRIC_INNER_PRODUCT if opts.metric == "cosine" else faiss.METRIC_L2
    index = faiss.index_factory(dim, factory, metric)
    if kind == "hnsw":
        index.hnsw.efConstruction = opts.ef_construction
    if kind == "ivf_pq":
        # Polysemous training only serves Hamming-threshold search (unused here) and is very slow.
        index.do_polysemous_training = False
    use_gpu = kind != "hnsw" and gpu_available(opts)  # faiss has no GPU HNSW
    work = index
    if use_gpu:
        resources = faiss.StandardGpuResources()
        work = faiss.index_cpu_to_gpu(resources, 0, index)
    if not work.is_trained:
        work.train(_training_sample(vectors, factory, opts.seed))
    work.add(vectors)
    index = faiss.index_gpu_to_cpu(work) if use_gpu else work
    report = IndexRecord(
        kind, factory, opts.metric, gpu=use_gpu, memory_budget=str(opts.memory_budget), recall_target=opts.recall_target
    )
    tune_recall(index, vectors, kind, opts, report)
    logger.info(
        "index %s: recall@%d %.4f with %s",
        factory,
        opts.recall_k,
        report.recall_at_10,
        report.search_params or "exact search",
    )
    return index, report


def _training_sample(vectors: np.ndarray, factory: str, seed: int) -> np.ndarray:
    nlist = int(re.search(r"IVF(\d+)", factory).group(1)) if "IVF" in factory else 1
    size = min(vectors.shape[0], max(100 * nlist, 256 * 100 if "PQ" in factory else 0))
    if size >= vectors.shape[0]:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(vectors.shape[0], size, replace=False))
    return vectors[rows]


def sample_queries(n: int, count: int, seed: int) -> np.ndarray:
    if count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, count, replace=False))


def recall_at_k(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int) -> float:
    _, found = index.search(vectors[queries], k)
    hits = [len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, min(k, (b >= 0).sum())) for a, b in zip(found, truth)]
    return float(np.mean(hits))


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    exact = faiss.IndexFlatIP(vectors.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(vectors.shape[1])
    exact.add(vectors)
    return exact.search(vectors[queries], k)[1]


def tune_recall(index: faiss.Index, vectors: np.ndarray, kind: str, opts: IndexOptions, report: IndexRecord) -> None:
    """Raise efSearch / nprobe until recall@k >= target (or the largest value); record it."""
    n = vectors.shape[0]
    k = min(opts.recall_k, n)
    queries = sample_queries(n, opts.recall_queries, opts.seed)
    report.recall_queries = len(queries)
    truth = exact_neighbours(vectors, queries, k, opts.metric)
    if kind == "flat":
        report.recall_at_10 = recall_at_k(index, vectors, queries, truth, k)
        return
    if kind == "hnsw":
        name, values = "efSearch", [v for v in EF_SEARCH if v >= k] or [k]
    else:
        nlist = faiss.extract_index_ivf(index).nlist
        name, values = "nprobe", sorted({min(nlist, 2**i) for i in range(int(math.log2(nlist)) + 2)})
    recall = 0.0
    for value in values:
        apply_search_params(index, {name: value})
        recall = recall_at_k(index, vectors, queries, truth, k)
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
