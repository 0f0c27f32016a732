"""simpleshot, tip_adapter, lda (rag_flamingo.adapters): their rules on real stores, own rows left out."""

from __future__ import annotations

import numpy as np
import pytest

from rag_flamingo.adapters import ShrinkageLda, SimpleShot, Support, TipAdapter
from rag_flamingo.config import PredictorOptions
from rag_flamingo.errors import ConfigError
from rag_flamingo.predictors import (
    PredictorContext,
    PrototypePredictor,
    Query,
    SupportPredictor,
    build_predictor,
    predictor_names,
)
from rag_flamingo.vectors import normalize_rows
from support.engine import build_store


def elongated(n_per_class=30, dim=8, seed=0):
    """Two classes whose means differ a little along axis 1 and that spread widely along axis 0:
    the nearest centroid by cosine is confused by the spread, a covariance-aware rule is not."""
    rng = np.random.default_rng(seed)
    spread = np.array([3.0, 0.15] + [0.05] * (dim - 2))
    base = np.zeros(dim)
    base[2] = 4.0  # keep vectors away from the origin so normalisation keeps the geometry
    x, y = [], []
    for c, shift in enumerate((-0.3, 0.3)):
        pts = base + rng.normal(size=(n_per_class, dim)) * spread
        pts[:, 1] += shift
        x.append(pts)
        y += [c] * n_per_class
    return np.concatenate(x).astype(np.float32), np.array(y)


def store_of(tmp_path, x, y, names=("a", "b")):
    rows = [{"id": f"r{i}", "path": f"r{i}.wav", "label": names[c]} for i, c in enumerate(y)]
    return build_store(tmp_path / "store", rows, x, {"name": "toy"}, features=False)


def ask(pred, embeddings, own=()):
    queries = [Query(f"q{i}", {"id": f"q{i}"}, {}, e, own_rows=frozenset(own)) for i, e in enumerate(embeddings)]
    return pred.predict(queries, "classification")


def test_registered_and_built_from_the_registry(tmp_path):
    x, y = elongated()
    store = store_of(tmp_path, x, y)
    assert {"simpleshot", "tip_adapter", "lda"} <= set(predictor_names())
    for name in ("simpleshot", "tip_adapter", "lda"):
        pred = build_predictor(name, PredictorContext(PredictorOptions(), store, None, None, lambda: None))
        assert pred.name == name and not pred.uses_shots
        out = ask(pred, x[:2])[0]
        assert out.output in {"a", "b"} and set(out.label_scores) == {"a", "b"}
        with pytest.raises(ConfigError, match="classification/tagging"):
            pred.predict([Query("q", {"id": "q"}, {}, x[0])], "captioning")


def test_simpleshot_is_the_centred_nearest_centroid():
    x, y = elongated()
    onehot = np.eye(2)[y]
    support = Support(normalize_rows(x.astype(np.float64)), ["a", "b"], onehot, np.arange(len(x)))
    fit = SimpleShot().fit(support)
    mean = support.emb.mean(0)
    centred = normalize_rows(support.emb - mean)
    cents = normalize_rows(np.stack([centred[y == c].mean(0) for c in (0, 1)]))
    q = normalize_rows(x[:5].astype(np.float64))
    np.testing.assert_allclose(fit.scores(q), normalize_rows(q - mean) @ cents.T, atol=1e-6)


def test_tip_adapter_picks_the_best_leave_one_out_setting():
    x, y = elongated(n_per_class=12, seed=3)
    support = Support(normalize_rows(x.astype(np.float64)), ["a", "b"], np.eye(2)[y], np.arange(len(x)))
    tip = TipAdapter()
    fit = tip.fit(support)

    def loo_accuracy(alpha, beta):  # written out: refit without each row, ask about it
        hits = 0
        for i in range(len(x)):
            rest = support.without([i])
            base = SimpleShot().fit(rest)
            keys = normalize_rows(rest.emb - base.mean)
            q = support.emb[i : i + 1]
            cache = np.exp(-beta * (1 - normalize_rows(q - base.mean) @ keys.T)) @ rest.onehot
            hits += int(np.argmax(100 * base.scores(q) + alpha * cache) == y[i])
        return hits / len(x)

    grid = {(a, b): loo_accuracy(a, b) for b in tip.BETAS for a in tip.ALPHAS}
    assert grid[(fit.alpha, fit.beta)] == pytest.approx(max(grid.values()))
    q = support.emb[:3]
    cache = np.exp(-fit.beta * (1 - normalize_rows(q - fit.base.mean) @ fit.keys.T)) @ support.onehot
    np.testing.assert_allclose(fit.scores(q), 100 * fit.base.scores(q) + fit.alpha * cache, rtol=1e-5)


def test_lda_sees_the_within_class_spread_the_centroid_misses(tmp_path):
    x, y = elongated(seed=0)
    test_x, test_y = elongated(seed=1)
    store = store_of(tmp_path, x, y)
    lda = SupportPredictor(ShrinkageLda(), store)
    accuracy = np.mean([p.output == "ab"[c] for p, c in zip(ask(lda, test_x), test_y)])
    centroid = np.mean([p.output == "ab"[c] for p, c in zip(ask(PrototypePredictor(store), test_x), test_y)])
    assert accuracy >= 0.9 and accuracy >= centroid + 0.2, (accuracy, centroid)
    scores = ask(lda, test_x[:1])[0].label_scores
    assert sum(scores.values()) == pytest.approx(1.0)  # posteriors, uniform priors


@pytest.mark.parametrize("method", [SimpleShot, TipAdapter, ShrinkageLda])
def test_own_rows_are_left_out_as_if_never_stored(tmp_path, method):
    """A query whose recording is rows {0, 1} is answered exactly as by a store without them."""
    x, y = elongated(n_per_class=15, seed=4)
    full = SupportPredictor(method(), store_of(tmp_path / "full", x, y))
    without = SupportPredictor(method(), store_of(tmp_path / "less", x[2:], y[2:]))
    q = x[:4] + 0.01
    for a, b in zip(ask(full, q, own={0, 1}), ask(without, q)):
        assert a.output == b.output
        assert a.label_scores == pytest.approx(b.label_scores, rel=1e-6, abs=1e-9)
    assert ask(full, q)[0].label_scores != pytest.approx(ask(full, q, own={0, 1})[0].label_scores, abs=1e-9)


def test_a_label_whose_only_example_is_the_query_is_not_offered(tmp_path):
    x, y = elongated(n_per_class=6)
    x = np.concatenate([x, x[:1] + 5.0])
    y = np.concatenate([y, [2]])
    store = store_of(tmp_path, x, y, names=("a", "b", "c"))
    for method in (SimpleShot, TipAdapter, ShrinkageLda):
        pred = SupportPredictor(method(), store)
        assert set(ask(pred, x[-1:])[0].label_scores) == {"a", "b", "c"}
        held_out = ask(pred, x[-1:], own={len(x) - 1})[0]
        assert set(held_out.label_scores) == {"a", "b"} and held_out.output in {"a", "b"}


def test_options_restrict_the_answer_and_unlabelled_stores_are_refused(tmp_path):
    x, y = elongated()
    pred = SupportPredictor(ShrinkageLda(), store_of(tmp_path, x, y))
    only_b = pred.predict([Query("q", {"id": "q"}, {}, x[0], options=["b"])], "classification")[0]
    assert only_b.output == "b" and set(only_b.label_scores) == {"b"}
    rows = [{"id": f"r{i}", "path": f"r{i}.wav", "captions": ["x"]} for i in range(4)]
    bare = build_store(tmp_path / "bare", rows, x[:4], {"name": "toy"}, features=False)
    with pytest.raises(ConfigError, match="no labelled items"):
        SupportPredictor(SimpleShot(), bare)


def test_lda_with_one_example_per_class_is_the_nearest_centroid(tmp_path):
    x, y = elongated(n_per_class=1)
    store = store_of(tmp_path, x, y)
    lda, proto = SupportPredictor(ShrinkageLda(), store), PrototypePredictor(store)
    q = x + 0.05
    assert [p.output for p in ask(lda, q)] == [p.output for p in ask(proto, q)] == ["a", "b"]
    many, _ = elongated(n_per_class=4)
    big = SupportPredictor(ShrinkageLda(), store_of(tmp_path / "big", many, np.repeat([0, 1], 4)))
    assert len(ask(big, q, own=set(range(1, 4)) | set(range(5, 8)))) == 2  # left with one per class
