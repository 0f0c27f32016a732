"""adapt= (rag_flamingo.shift): per-source normalisation and the transductive options, on real stores;
knn's answer as k grows; the refusals."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from rag_flamingo import shift
from rag_flamingo.adapters import NeighbourVote, Support
from rag_flamingo.app.main import serve
from rag_flamingo.classify import main as rag_classify
from rag_flamingo.config import AppConfig, PredictorOptions
from rag_flamingo.errors import ConfigError
from rag_flamingo.predictors import KnnPredictor, PredictorContext, Query, build_predictor
from rag_flamingo.retrieval import Shot
from rag_flamingo.vectors import normalize_rows
from support.engine import build_store

DIM = 8


def shifted_sources(seed=0):
    """Two labels told apart by axis 0's sign; each source adds its own large offset along axis 1
    (support: sources s1 and s2 with opposite offsets; queries: a third offset of their own). The
    labels are the same in every source, the offsets are not: a nearest neighbour across sources
    is pulled by the offset."""
    rng = np.random.default_rng(seed)

    def clips(offset, n, label_sign):
        x = rng.normal(scale=0.1, size=(n, DIM))
        x[:, 0] += label_sign
        x[:, 1] += offset
        x[:, 2] += 1.0
        return x

    rows, emb = [], []
    for src, offset, signs in (("s1", 3.0, (1, 1, 1, 1, -1)), ("s2", -3.0, (-1, -1, -1, -1, 1))):
        for i, sign in enumerate(signs):  # s1 mostly label a, s2 mostly label b: the offset predicts the label
            emb.append(clips(offset, 1, sign)[0])
            rows.append({"id": f"{src}_{i}", "path": f"{src}__{i}.wav", "label": "a" if sign > 0 else "b"})
    queries = np.concatenate([clips(-2.5, 4, 1), clips(-2.5, 4, -1)])  # offset near s2's
    truth = ["a"] * 4 + ["b"] * 4
    return rows, np.array(emb, np.float32), queries.astype(np.float32), truth


def ask(pred, embeddings, k=1):
    shots = [Shot(0, "x", 1.0, {"id": "x", "label": "a"})] * k  # only the count matters under adapt
    queries = [Query(f"q{i}", {"id": f"q{i}"}, {}, e, shots=list(shots)) for i, e in enumerate(embeddings)]
    return [p.output for p in pred.predict(queries, "classification")]


def context(store, adapt, lda_tta=1):
    options = PredictorOptions()
    options.lda.tta = lda_tta
    return PredictorContext(options, store, None, None, lambda: None, adapt)


def test_item_source_from_the_field_or_the_file_name():
    assert shift.item_source({"source": "kitA", "path": "b__x.wav"}) == "kitA"
    assert shift.item_source({"path": "train/kick/kitB__x.wav"}) == "kitB"
    assert shift.item_source({"path": "kick/x.wav"}) == ""


def test_modes_are_the_documented_transforms():
    rng = np.random.default_rng(1)
    sup, qs = rng.normal(size=(6, DIM)) + 2.0, rng.normal(size=(4, DIM)) - 1.0
    sources = ["a", "a", "a", "b", "b", "b"]
    s, q = shift.space("none", sup, sources, qs)
    np.testing.assert_allclose(s, normalize_rows(sup), atol=1e-6)
    s, q = shift.space("center", sup, sources, qs)
    np.testing.assert_allclose(s, normalize_rows(sup - sup.mean(0)), atol=1e-6)
    np.testing.assert_allclose(q, normalize_rows(qs - qs.mean(0)), atol=1e-6)
    s, q = shift.space("source", sup, sources, qs)
    means = np.stack([sup[:3].mean(0), sup[3:].mean(0)])
    np.testing.assert_allclose(s[:3], normalize_rows(sup[:3] - means[0]), atol=1e-6)
    np.testing.assert_allclose(q, normalize_rows(qs - means.mean(0)), atol=1e-6)  # no query statistic used
    s, q = shift.space("standardize", sup, sources, qs)
    z = (qs - qs.mean(0)) / np.maximum(qs.std(0), np.median(qs.std(0)))
    np.testing.assert_allclose(q, normalize_rows(z), atol=1e-6)
    assert np.allclose(np.linalg.norm(s, axis=1), 1.0)


def test_adapting_removes_the_source_offset(tmp_path):
    rows, emb, queries, truth = shifted_sources()
    store = build_store(tmp_path / "store", rows, emb, {"name": "toy"}, features=False)
    plain = ask(build_predictor("prototype", context(store, "none")), queries)
    assert sum(g == t for g, t in zip(plain, truth)) <= 5  # the offset drags queries to s2's label b
    for mode in ("source", "center", "standardize", "propagate"):
        for name in ("knn", "prototype", "simpleshot", "lda", "tip_adapter"):
            got = ask(build_predictor(name, context(store, mode)), queries)
            hits = sum(g == t for g, t in zip(got, truth))
            # standardize also scales every noise dimension up to the label's: better, not perfect
            assert hits >= (6 if mode == "standardize" else 8), (mode, name, got)


def test_propagation_lets_neighbouring_queries_agree():
    support = normalize_rows(np.array([[1.0, 0.0, 0.2], [0.0, 1.0, 0.2]]))
    onehot = np.eye(2)
    queries = normalize_rows(np.array([[0.9, 0.1, 0.2], [0.88, 0.12, 0.2], [0.86, 0.14, 0.2], [0.87, 0.13, 0.21]]))
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.4, 0.6]])  # the last one alone is wrong
    out = shift.propagate(support, onehot, queries, probs)
    assert (out.argmax(1) == 0).all()
    alone = shift.propagate(support, onehot, queries[:1], probs[:1])
    assert alone.shape == (1, 2)


def test_knn_answer_is_1nn_when_the_nearest_leads_by_more_than_t_ln_k():
    """The vote's guarantee: when the nearest shot's similarity exceeds every other's by more than
    T ln(k - 1), its weight outweighs all others together, so k shots answer as one does."""
    t = 0.02
    for k in range(2, 9):
        margin = t * np.log(k - 1) + 1e-3
        shots = [Shot(0, "n", 0.9, {"id": "n", "label": "right"})]
        shots += [Shot(i, f"o{i}", 0.9 - margin, {"id": f"o{i}", "label": "wrong"}) for i in range(1, k)]
        got = KnnPredictor(temperature=t).predict([Query("q", {"id": "q"}, {}, np.ones(2), shots)], "classification")
        assert got[0].output == "right", k


def test_knn_accuracy_does_not_drop_as_k_grows_on_a_small_margin_set():
    """A constructed support where each query's nearest clip is right and the next ones crowd in
    from another label just behind it: a plain vote (large T) loses them as k grows, the vote at
    the default temperature keeps every 1-NN answer."""
    rng = np.random.default_rng(4)
    support, labels = [], []
    for c in range(3):
        centre = np.zeros(16)
        centre[c] = 1.0
        support.append(centre + rng.normal(scale=0.02, size=16))  # one close example of c
        labels.append(c)
        for _ in range(6):  # a crowd of the next label, a bit further from centre c
            far = centre.copy()
            far[3 + c] = 0.9
            support.append(far + rng.normal(scale=0.02, size=16))
            labels.append((c + 1) % 3)
    sup = Support(normalize_rows(np.array(support)), ["a", "b", "c"], np.eye(3)[labels], np.arange(len(labels)))
    queries = normalize_rows(np.eye(16)[:3] + 0.05 * np.eye(16)[3:6])
    truth = np.arange(3)

    def accuracy(k, t):
        return float((NeighbourVote(k, t).fit(sup).scores(queries).argmax(1) == truth).mean())

    assert accuracy(1, 0.1) == 1.0 and accuracy(8, 10.0) < 1.0  # the crowd wins a flat vote
    default = KnnPredictor().temperature
    assert [accuracy(k, default) for k in (1, 2, 4, 8)] == [1.0] * 4


def test_refusals_are_one_line(tmp_path):
    rows, emb, _, _ = shifted_sources()
    store = build_store(tmp_path / "store", rows, emb, {"name": "toy"}, features=False)
    for name, match in (("zero_shot", "applies to knn"), ("flamingo", "applies to knn")):
        with pytest.raises(ConfigError, match=match):
            build_predictor(name, context(store, "center"))
    with pytest.raises(ConfigError, match="not combined"):
        build_predictor("lda", context(store, "center", lda_tta=4))
    with pytest.raises(ConfigError, match="adapt='bogus'"):
        build_predictor("lda", context(store, "bogus"))
    pred = build_predictor("prototype", context(store, "center"))
    assert ask(pred, emb[:1]) == [""]  # one readable clip left of a batch: no answer (warned), not a crash
    assert ask(build_predictor("prototype", context(store, "source")), emb[:1])  # query-free: one clip is fine
    with pytest.raises(ConfigError, match="one process"):
        shift.query_batch("center", 8, 100, world=2)
    assert shift.query_batch("center", 8, 100) == 100 and shift.query_batch("source", 8, 100) == 8
    with pytest.raises(ConfigError, match="answers one clip at a time") as refused:  # no "1 given": no clip was
        serve(AppConfig(adapt="center"), block=False)
    assert "given" not in str(refused.value)


def test_rag_classify_refuses_a_transductive_mode_for_one_clip(tmp_path, capsys):
    clip = tmp_path / "one.wav"
    import soundfile as sf

    sf.write(clip, np.zeros(16000, np.float32), 16000)
    rows, emb, _, _ = shifted_sources()
    build_store(tmp_path / "store", rows, emb, {"name": "toy"}, features=False)
    assert rag_classify([f"store={tmp_path}/store", f"audio={clip}", "adapt=center"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "transductive" in err[0], err
    assert rag_classify([f"store={tmp_path}/store", f"audio={clip}", "adapt=centre"]) == 2
    assert "adapt" in capsys.readouterr().err
    # the mode's reach is checked before the model weights are looked for (they are not here)
    assert rag_classify([f"store={tmp_path}/store", f"audio={clip}", "predictor=flamingo", "adapt=center"]) == 2
    assert "not to predictor flamingo" in capsys.readouterr().err


def test_a_source_of_one_label_is_pooled_not_centred_away():
    """One instrument per source (every row of a source one label): its mean is the label, so
    adapt=source pools such sources instead of removing their means (which would erase the label)."""
    rng = np.random.default_rng(2)
    emb = normalize_rows(rng.normal(size=(6, DIM)) + np.repeat(np.eye(DIM)[:3] * 3, 2, axis=0))
    support = Support(emb, ["a", "b", "c"], np.repeat(np.eye(3), 2, axis=0), np.arange(6))
    queries = rng.normal(size=(2, DIM))
    got, q = shift.adapted("source", support, ["x", "x", "y", "y", "z", "z"], queries)
    want, want_q = shift.space("source", emb, [""] * 6, queries)
    np.testing.assert_allclose(got.emb, want, atol=1e-9)
    np.testing.assert_allclose(q, want_q, atol=1e-9)
    mixed, _ = shift.adapted("source", support, ["x", "y", "x", "y", "x", "y"], queries)
    np.testing.assert_allclose(mixed.emb, shift.space("source", emb, ["x", "y"] * 3, queries)[0], atol=1e-9)


def test_adapt_source_on_a_store_without_sources_warns(tmp_path, caplog):
    """No 'source' field and no '<source>__' names: adapt=source can only subtract one mean, and says so."""
    rows, emb, _, _ = shifted_sources()
    plain = [{k: v for k, v in r.items() if k != "path"} | {"path": f"{i}.wav"} for i, r in enumerate(rows)]
    with caplog.at_level(logging.WARNING, logger="rag_flamingo.predictors"):
        build_predictor("prototype", context(build_store(tmp_path / "plain", plain, emb, {"name": "toy"}), "source"))
    assert "fewer than two sources" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rag_flamingo.predictors"):
        build_predictor("prototype", context(build_store(tmp_path / "named", rows, emb, {"name": "toy"}), "source"))
    assert "fewer than two sources" not in caplog.text


def test_a_transductive_batch_nearest_to_one_label_warns(tmp_path, caplog):
    """A batch whose clips are all nearest to one label before adapting (a folder of only kicks) is
    centred away by a transductive mode: the run warns and names the label; a mixed batch does not."""
    rows, emb, queries, _ = shifted_sources()
    store = build_store(tmp_path / "store", rows, emb, {"name": "toy"}, features=False)
    pred = build_predictor("knn", context(store, "center"))
    with caplog.at_level(logging.WARNING, logger="rag_flamingo.predictors"):
        ask(pred, emb[:4])  # s1's four 'a' rows: each nearest to itself, all 'a'
    assert "nearest to 'a'" in caplog.text and "adapt=none" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rag_flamingo.predictors"):
        ask(pred, emb[3:5])  # one 'a', one 'b'
        ask(build_predictor("knn", context(store, "source")), emb[:4])  # query-free: no batch statistic
    assert "nearest to" not in caplog.text


def test_fusion_under_adapt_is_the_blend_in_the_adapted_space(tmp_path):
    """adapt=center with fusion: (1 - w) lda's posteriors + w the k nearest rows' vote, both in the
    centred space, the weight and temperature fixed by the options."""
    from rag_flamingo.adapters import ShrinkageLda, probabilities
    from rag_flamingo.config import FusionOptions

    rows, emb, queries, truth = shifted_sources()
    store = build_store(tmp_path / "store", rows, emb, {"name": "toy"}, features=False)
    pred = build_predictor("fusion", context(store, "center"))
    got = pred.predict(
        [Query(f"q{i}", {"id": f"q{i}"}, {}, e, shots=[Shot(0, "x", 1.0, {})] * 3) for i, e in enumerate(queries)],
        "classification",
    )
    support = Support.from_items(store.embeddings(), store.items)
    sup, q = shift.adapted("center", support, [shift.item_source(r) for r in rows], queries.astype(np.float64))
    w, t = FusionOptions.weight, FusionOptions.temperature
    want = (1 - w) * probabilities(ShrinkageLda().fit(sup), q, t) + w * NeighbourVote(3, t).fit(sup).scores(q)
    for p, row in zip(got, want):
        assert p.label_scores == pytest.approx(dict(zip(sup.labels, row)), rel=1e-9)
    assert sum(p.output == t for p, t in zip(got, truth)) == len(truth)
