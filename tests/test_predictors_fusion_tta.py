"""fusion (support-set classifier + retrieved shots' vote) and test-time augmentation of the query."""

from __future__ import annotations

import numpy as np
import pytest

from rag_flamingo.adapters import Fusion, NearestCentroid, ShrinkageLda, Support, probabilities
from rag_flamingo.audio import decode_key
from rag_flamingo.cli import compose_config
from rag_flamingo.config import FusionOptions, PredictorOptions, SupportOptions
from rag_flamingo.errors import ConfigError
from rag_flamingo.predictors import PredictorContext, Query, SupportPredictor, build_predictor, predictor_names
from rag_flamingo.retrieval import Retriever
from rag_flamingo.tta import GAIN_DB, SHIFT_SECONDS, embed_views, views
from rag_flamingo.vectors import normalize_rows
from support.engine import TinyWindowEncoder, build_store


def two_clusters_per_class(n=12, seed=0):
    """Classes a and b, each two tight clusters on opposite sides (a: +-x, b: +-y) around a common
    offset: the class means nearly coincide (the centroid rule is lost), the nearest neighbour is not."""
    rng = np.random.default_rng(seed)
    centres = {"a": [(4, 0, 3), (-4, 0, 3)], "b": [(0, 4, 3), (0, -4, 3)]}
    x, y = [], []
    for lab, cs in centres.items():
        for c in cs:
            x.append(np.array(c, float) + rng.normal(scale=0.3, size=(n, 3)))
            y += [lab] * n
    return np.concatenate(x).astype(np.float32), y


def store_of(tmp_path, x, labels):
    rows = [{"id": f"r{i}", "path": f"r{i}.wav", "label": lab} for i, lab in enumerate(labels)]
    return build_store(tmp_path, rows, x, {"name": "toy"}, features=False)


def fusion(store, **options):
    return build_predictor(
        "fusion",
        PredictorContext(
            PredictorOptions(fusion=FusionOptions(**options)), store, None, Retriever(store, shuffle=False), None
        ),
    )


def ask(pred, store, x, k, own=None):
    own = own or [frozenset()] * len(x)
    shots = Retriever(store, shuffle=False).search(np.asarray(x, np.float32), k, exclude_rows=own)
    qs = [Query(f"q{i}", {"id": f"q{i}"}, {}, e, shots[i], own_rows=own[i]) for i, e in enumerate(x)]
    return pred.predict(qs, "classification")


def test_fusion_is_the_weighted_mix_of_base_probabilities_and_the_vote(tmp_path):
    x, y = two_clusters_per_class()
    store = store_of(tmp_path, x, y)
    pred = fusion(store, base="prototype")
    assert "fusion" in predictor_names() and pred.uses_shots and pred.min_shots == 1
    q = x[:3] + 0.05
    out = ask(pred, store, q, 4)
    w, t = pred.weight(frozenset(), 4), FusionOptions.temperature
    assert w == FusionOptions.weight  # fixed by default (chosen across development sets), not cross-validated
    support = Support.from_items(store.embeddings(), store.items)
    base = probabilities(NearestCentroid().fit(support), normalize_rows(q.astype(np.float64)), t)
    for p, b in zip(out, base):
        sims = np.array([s.score for s in p.shots])
        weights = np.exp((sims - sims.max()) / t)
        vote = {
            lab: sum(wt for wt, s in zip(weights, p.shots) if s.item["label"] == lab) / weights.sum() for lab in "ab"
        }
        expected = {lab: (1 - w) * b[j] + w * vote[lab] for j, lab in enumerate(support.labels)}
        assert p.label_scores == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert len(p.shots) == 4


def test_the_weight_follows_cross_validation_on_the_support(tmp_path):
    """Where the class means are useless and neighbours are right, the vote gets the weight (and the
    fused answer is right); where the neighbours are noise and lda is right, lda keeps it."""
    x, y = two_clusters_per_class()
    test_x, test_y = two_clusters_per_class(seed=1)
    store = store_of(tmp_path / "clusters", x, y)
    pred = fusion(store, base="prototype", weight=None, temperature=0.1)
    assert pred.weight(frozenset(), 4) > 0.0
    answers = [p.output for p in ask(pred, store, test_x, 4)]
    assert np.mean([a == t for a, t in zip(answers, test_y)]) >= 0.95
    centroid = np.argmax(probabilities(NearestCentroid().fit(Support.from_items(x, store.items)), test_x, 0.1), 1)
    assert np.mean(np.array(["ab"[c] for c in centroid]) == np.array(test_y)) < 0.8  # the base alone fails

    rng = np.random.default_rng(0)  # two classes split along axis 1 and spread along axis 0
    spread = np.array([3.0, 0.15, 0.05])
    pts = [np.array([0, s, 4.0]) + rng.normal(size=(30, 3)) * spread for s in (-0.3, 0.3)]
    lda_store = store_of(tmp_path / "spread", np.concatenate(pts).astype(np.float32), ["a"] * 30 + ["b"] * 30)
    lda_fusion = fusion(lda_store, weight=None, temperature=0.1)
    support = Support.from_items(lda_store.embeddings(), lda_store.items)
    assert lda_fusion.weight(frozenset(), 1) <= 0.3
    # written out: the chosen weight has the best cross-validated accuracy of the grid
    folds = np.array_split(np.random.default_rng(0).permutation(len(support.emb)), Fusion.FOLDS)
    base = np.zeros((len(support.emb), 2))
    for fold in folds:
        rest = support.without(fold.tolist())
        base[fold] = probabilities(ShrinkageLda().fit(rest), support.emb[fold], 0.1)
    sims = support.emb @ support.emb.T
    np.fill_diagonal(sims, -np.inf)
    vote = support.onehot[np.argmax(sims, 1)]  # k = 1: the nearest other row's labels
    truth = np.argmax(support.onehot, 1)
    accuracy = {w: np.mean(np.argmax((1 - w) * base + w * vote, 1) == truth) for w in Fusion.WEIGHTS}
    assert accuracy[lda_fusion.weight(frozenset(), 1)] == pytest.approx(max(accuracy.values()))


def test_fusion_leaves_the_querys_own_rows_out_as_if_never_stored(tmp_path):
    x, y = two_clusters_per_class(n=8, seed=2)
    full, less = store_of(tmp_path / "full", x, y), store_of(tmp_path / "less", x[2:], y[2:])
    q = x[:3] + 0.02
    with_own = ask(fusion(full), full, q, 4, own=[frozenset({0, 1})] * 3)
    without = ask(fusion(less), less, q, 4)
    for a, b in zip(with_own, without):
        assert a.output == b.output and a.label_scores == pytest.approx(b.label_scores, rel=1e-6, abs=1e-9)
        assert {s.row for s in a.shots}.isdisjoint({0, 1})


def test_fusion_refuses_an_unknown_base(tmp_path):
    x, y = two_clusters_per_class(n=2)
    with pytest.raises(ConfigError, match="did you mean 'lda'"):
        fusion(store_of(tmp_path, x, y), base="ldaa")


def test_views_are_fixed_delays_and_gains():
    wave = np.random.default_rng(0).standard_normal(1600).astype(np.float32)
    got = views(wave, 16000, 4)
    assert len(got) == 4 and np.array_equal(got[0], wave)
    for i, v in enumerate(got[1:], start=1):
        delay = int(round(SHIFT_SECONDS * 16000 * i / 4))
        gain = 10 ** ((GAIN_DB if i % 2 else -GAIN_DB) / 20)
        assert len(v) == len(wave) + delay and not v[:delay].any()
        np.testing.assert_allclose(v[delay:], wave * gain, rtol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(got, views(wave, 16000, 4)))  # no randomness


def query_with_audio(encoder, wave, i=0):
    emb = encoder.embed([wave])[0]
    return Query(f"q{i}", {"id": f"q{i}"}, {decode_key(encoder): wave}, emb)


def test_tta_averages_the_views_embedded_by_the_stores_encoder(tmp_path):
    encoder = TinyWindowEncoder(window_seconds=0.01)  # windows shorter than the delays: the views differ
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(640).astype(np.float32) * np.hanning(640).astype(np.float32) for _ in range(12)]
    x = encoder.embed(waves)
    store = store_of(tmp_path, x, ["a", "b"] * 6)
    queries = [
        query_with_audio(encoder, w + 0.3 * rng.standard_normal(640).astype(np.float32), i)
        for i, w in enumerate(waves[:4])
    ]
    one_by_one = [
        normalize_rows(encoder.embed(views(wave_of(q, encoder), encoder.sample_rate, 4)).astype(np.float64))
        for q in queries
    ]
    expected = normalize_rows(np.stack([v.sum(0) for v in one_by_one]))
    np.testing.assert_allclose(embed_views(encoder, queries, 4), expected, atol=1e-6)
    assert not np.allclose(
        expected, normalize_rows(np.stack([q.embedding for q in queries]).astype(np.float64)), atol=1e-3
    )

    plain = SupportPredictor(ShrinkageLda(), store, encoder=encoder)
    tta = build_predictor(
        "lda", PredictorContext(PredictorOptions(lda=SupportOptions(tta=4)), store, encoder, None, None)
    )
    fit = tta.fitted(frozenset())[1]
    for p, e in zip(tta.predict(queries, "classification"), expected):
        assert list(p.label_scores.values()) == pytest.approx(list(fit.scores(e[None])[0]), abs=1e-6)

    def table(pred):
        return np.array([list(p.label_scores.values()) for p in pred.predict(queries, "classification")])

    assert np.abs(table(plain) - table(tta)).max() > 1e-4  # the views change the answer's scores
    with pytest.raises(ConfigError, match="no decoded audio"):
        tta.predict([Query("bare", {"id": "bare"}, {}, x[0])], "classification")
    with pytest.raises(ConfigError, match="tta must be"):
        build_predictor(
            "lda", PredictorContext(PredictorOptions(lda=SupportOptions(tta=0)), store, encoder, None, None)
        )


def wave_of(q, encoder):
    return q.waves[decode_key(encoder)]


def test_the_options_are_typed_config_keys():
    cfg = compose_config("evaluate", ["predictors.lda.tta=4", "predictors.fusion.base=prototype"])
    assert cfg.predictors.lda.tta == 4 and cfg.predictors.fusion.base == "prototype"
    assert cfg.predictors.fusion.tta == 1 and cfg.predictors.simpleshot.tta == 1
    with pytest.raises(ConfigError):
        compose_config("evaluate", ["predictors.lda.views=4"])
