"""retrieval=balanced: the nearest recordings of each of the nearest classes, with knn's hygiene."""

from __future__ import annotations

import numpy as np
import pytest
from test_retrieval import DIM, N_GROUPS, ROWS_PER_GROUP, corpus, groups, make_store, own_rows

from rag_flamingo.cli import compose_config
from rag_flamingo.errors import ConfigError
from rag_flamingo.retrieval import Retriever
from rag_flamingo.vectors import normalize_rows


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    vectors, rows = corpus()
    return make_store(tmp_path_factory.mktemp("store"), vectors, rows)


def brute_force(store, query, k, per_class, own_group=None):
    """The rule written out: recordings ranked by similarity, classes by their nearest recording, as many
    classes as it takes to hold k recordings."""
    vecs, labels, names = {}, {}, {}
    for row, item in enumerate(store.items):
        vecs.setdefault(item["group"], store.embeddings()[row])
        labels[item["group"]] = item["label"]
    ranked = sorted((g for g in vecs if g != own_group), key=lambda g: -float(vecs[g] @ query))
    quota = max(per_class, -(-k // len(set(labels.values()))))
    for g in ranked:
        names.setdefault(labels[g], [])
        if len(names[labels[g]]) < quota:
            names[labels[g]].append(g)
    picked: list = []
    for gs in names.values():
        if len(picked) >= k:
            break
        picked += gs
    return sorted(picked, key=lambda g: -float(vecs[g] @ query))[:k]


@pytest.mark.parametrize(("k", "per_class"), [(1, 1), (3, 1), (4, 2), (6, 3), (7, 2), (12, 1)])
def test_balanced_matches_the_rule_and_keeps_the_hygiene(store, k, per_class):
    vectors = store.embeddings()
    queries = vectors[::ROWS_PER_GROUP][:20]
    own = [f"audio/{g}.wav" for g in range(20)]
    retriever = Retriever(store, mode="balanced", per_class=per_class, shuffle=False, overfetch=0)
    results = retriever.search(queries, k, exclude_rows=own_rows(store, own), query_ids=[f"q{g}" for g in range(20)])
    for g, shots in enumerate(results):
        got = groups(shots)
        assert own[g] not in got and len(set(got)) == len(got) == k  # own recording never, one row each
        assert got == brute_force(store, queries[g], k, per_class, own_group=own[g])
        counts = np.unique([s.item["label"] for s in shots], return_counts=True)[1]
        assert counts.max() <= max(per_class, -(-k // 4))  # 4 labels in the corpus


def test_every_likely_class_is_shown(store):
    """per_class=1, k=4 over 4 labels: every label once, whatever knn would have shown."""
    query = normalize_rows(store.embeddings()[:1] + 0.1)
    shots = Retriever(store, mode="balanced", seed=1).search(query, 4, query_ids=["x"])[0]
    assert sorted(s.item["label"] for s in shots) == ["bird", "car", "dog", "rain"]
    again = Retriever(store, mode="balanced", seed=1).search(query, 4, query_ids=["x"])[0]
    assert [s.row for s in shots] == [s.row for s in again]  # seeded order


def test_filters_and_unlabelled_rows(tmp_path, store):
    vectors, rows = corpus(seed=2)
    for r in rows[: 3 * ROWS_PER_GROUP]:
        r.pop("label")  # three unlabelled recordings: never picked
    unlabelled = make_store(tmp_path / "s", vectors, rows)
    shots = Retriever(unlabelled, mode="balanced").search(vectors[:1], 8)[0]
    assert all(s.item.get("label") for s in shots) and len(shots) == 8
    only = Retriever(store, mode="balanced").search(store.embeddings()[:1], 3, filters={"labels": ["dog", "car"]})[0]
    assert {s.item["label"] for s in only} == {"dog", "car"} and len(only) == 3


def test_bad_settings(tmp_path):
    vectors, rows = corpus(n_groups=4)
    for r in rows:
        r.pop("label")
    bare = make_store(tmp_path / "s", vectors, rows)
    with pytest.raises(ConfigError, match="labelled"):
        Retriever(bare, mode="balanced")
    with pytest.raises(ConfigError, match="per_class"):
        Retriever(bare, mode="knn", per_class=0)
    assert DIM and N_GROUPS


def test_selectable_from_config():
    cfg = compose_config("evaluate", ["retrieval=balanced", "retrieval.per_class=2"])
    assert cfg.retrieval.mode == "balanced" and cfg.retrieval.per_class == 2


def test_a_class_short_of_its_quota_lets_the_next_class_in(tmp_path):
    """per_class beyond every class's size: the prompt still holds k shots (the next classes fill it)."""
    vectors, rows = corpus(n_groups=12)  # 12 recordings over 4 labels: 3 each
    small = make_store(tmp_path / "s", vectors, rows)
    for per_class in (2, 100):
        shots = Retriever(small, mode="balanced", per_class=per_class).search(vectors[:1], 7, query_ids=["q"])[0]
        assert len(shots) == 7 and len({s.row for s in shots}) == 7
