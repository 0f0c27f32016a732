"""A quality figure of the embeddings themselves: label precision@k, leaving each item's own recording out.

For a sample of labelled items, the k nearest other items (exact inner-product search, items of the
query's own recording - ``rag_flamingo.store.items.recording_key``, e.g. other crops of the same file -
excluded) are checked for a shared
label. Chance level is the same figure for neighbours drawn at random from the other groups, so the
two numbers side by side say whether the encoder separates the dataset's labels at all.
"""

from __future__ import annotations

import faiss
import numpy as np

from ..labels import item_labels


def label_precision(
    vectors: np.ndarray, items: list[dict], recordings: list[str], k: int = 5, sample: int = 2000, seed: int = 0
) -> dict | None:
    """``{"k", "queries", "precision", "chance"}`` over labelled items, ``recordings[i]`` being the
    recording key of item i; None when fewer than two recordings are labelled."""
    labels = [set(item_labels(it)) for it in items]
    groups = np.array(recordings)
    labelled = np.flatnonzero([bool(ls) for ls in labels])
    if len(labelled) < 2 or len(set(groups[labelled])) < 2:
        return None
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(labelled, size=min(sample, len(labelled)), replace=False))
    base = np.ascontiguousarray(vectors[labelled], dtype=np.float32)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    # Over-fetch enough to fill k after dropping the query's own group.
    biggest_group = max(np.unique(groups[labelled], return_counts=True)[1])
    _, found = index.search(
        np.ascontiguousarray(vectors[queries], dtype=np.float32), min(len(labelled), k + int(biggest_group))
    )
    pool = rng.choice(labelled, size=min(1000, len(labelled)), replace=False)  # for the chance level
    hits: list[float] = []
    chance: list[float] = []
    for q, row in zip(queries, found):
        others = [labelled[j] for j in row if j >= 0 and groups[labelled[j]] != groups[q]][:k]
        if not others:
            continue
        hits.append(float(np.mean([bool(labels[q] & labels[j]) for j in others])))
        random_others = [j for j in pool if groups[j] != groups[q]]
        chance.append(float(np.mean([bool(labels[q] & labels[j]) for j in random_others])) if random_others else 0.0)
    if not hits:
        return None
    return {"k": k, "queries": len(hits), "precision": float(np.mean(hits)), "chance": float(np.mean(chance))}
