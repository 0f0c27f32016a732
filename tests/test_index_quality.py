"""rag_flamingo.indexing.quality: label precision@k with the query's own recording left out."""

import numpy as np

from rag_flamingo.indexing.quality import label_precision


def _items(labels, groups):
    return [{"id": f"i{i}", "label": lab, "group": g} for i, (lab, g) in enumerate(zip(labels, groups))]


def test_separated_classes_score_one_and_chance_is_the_random_neighbour_rate():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 16, dtype=np.float32) * 10
    labels = [c for c in range(4) for _ in range(6)]
    vectors = centres[labels] + rng.normal(0, 0.1, (24, 16)).astype(np.float32)
    recordings = [f"g{i}" for i in range(24)]
    out = label_precision(vectors, _items([str(c) for c in labels], recordings), recordings, k=5)
    assert out["precision"] == 1.0 and out["queries"] == 24
    assert abs(out["chance"] - 5 / 23) < 1e-6  # 5 of the 23 other items share the label


def test_own_group_is_left_out():
    # Each recording has two identical crops; a crop's nearest neighbour is its twin, which must not count.
    rng = np.random.default_rng(1)
    base = rng.normal(size=(10, 8)).astype(np.float32)
    vectors = np.repeat(base, 2, axis=0)
    labels = [f"l{i}" for i in range(10) for _ in range(2)]  # a label per recording: no other group shares it
    groups = [f"g{i}" for i in range(10) for _ in range(2)]
    out = label_precision(vectors, _items(labels, groups), groups, k=3)
    assert out["precision"] == 0.0 and out["chance"] == 0.0


def test_unlabelled_items_give_no_figure():
    vectors = np.eye(3, dtype=np.float32)
    assert label_precision(vectors, [{"id": str(i), "group": str(i)} for i in range(3)], ["0", "1", "2"]) is None
