"""Retrieval hygiene on real FAISS stores written with rag_flamingo.store."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest
import soundfile as sf

from rag_flamingo.audio import load_audio
from rag_flamingo.errors import ConfigError, StoreError
from rag_flamingo.retrieval import Retriever, Shot, query_seed
from rag_flamingo.store.index_store import IndexStore, write_store
from rag_flamingo.store.items import item_record
from rag_flamingo.store.records import StoreInfo
from rag_flamingo.store.shards import write_shard
from rag_flamingo.vectors import normalize_rows

DIM = 16
N_GROUPS = 60
ROWS_PER_GROUP = 3  # e.g. three captions of one recording
LABELS = ["dog", "rain", "car", "bird"]


def make_store(root, vectors, rows, index=None, metric="cosine", encoder=None):
    records = [item_record(r) for r in rows]
    if index is None:
        index = faiss.IndexFlatIP(vectors.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(vectors.shape[1])
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    info = StoreInfo(
        encoder=encoder or {"name": "synthetic", "seed": 0},
        dim=vectors.shape[1],
        count=len(records),
        metric=metric,
        index={"type": type(index).__name__},
    )
    write_shard(root, 0, vectors, records)
    write_store(root, info, index, records)
    return IndexStore.open(root)


def corpus(seed=0, n_groups=N_GROUPS):
    """Rows of `n_groups` recordings x ROWS_PER_GROUP captions; rows of a group share one vector."""
    rng = np.random.default_rng(seed)
    group_vecs = normalize_rows(rng.normal(size=(n_groups, DIM)))
    vectors, rows = [], []
    for g in range(n_groups):
        for c in range(ROWS_PER_GROUP):
            vectors.append(group_vecs[g])
            rows.append(
                {
                    "id": f"g{g}_c{c}",
                    "path": f"audio/{g}.wav",
                    "captions": [f"caption {c} of {g}"],
                    "label": LABELS[g % len(LABELS)],
                    "split": "train" if g % 5 else "val",
                }
            )
    return np.stack(vectors).astype(np.float32), rows


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    vectors, rows = corpus()
    return make_store(tmp_path_factory.mktemp("store"), vectors, rows)


@pytest.fixture(scope="module")
def vectors():
    return corpus()[0]


def own_rows(store, paths) -> list[frozenset[int]]:
    """The store rows each query must never see, for queries that are the recordings ``paths`` (None:
    a query from elsewhere), looked up by recording key as the runner does."""
    retriever, where = Retriever(store), [it["path"] for it in store.items]
    return [retriever.own_rows(store.recording_keys[where.index(p)]) if p else frozenset() for p in paths]


def groups(shots: list[Shot]) -> list[str]:
    return [s.item["group"] for s in shots]


def test_own_group_never_returned_and_one_row_per_group(store, vectors):
    queries = vectors[::ROWS_PER_GROUP]
    own = [f"audio/{g}.wav" for g in range(N_GROUPS)]
    results = Retriever(store).search(
        queries, k=7, exclude_rows=own_rows(store, own), query_ids=[f"q{g}" for g in range(N_GROUPS)]
    )
    assert len(results) == N_GROUPS
    for g, shots in enumerate(results):
        assert len(shots) == 7
        assert own[g] not in groups(shots)
        assert len(set(groups(shots))) == 7
        for shot in shots:
            assert shot.item == store.item(shot.row) and shot.id == store.item(shot.row)["id"]


def test_without_exclusion_the_query_itself_is_nearest(store, vectors):
    shots = Retriever(store, shuffle=False).search(vectors[:1], k=3)[0]
    assert shots[0].item["group"] == "audio/0.wav"
    assert shots[0].score == pytest.approx(1.0, abs=1e-5)


def test_nearest_first_without_shuffle_matches_brute_force(store, vectors):
    query = normalize_rows(vectors[5:6] + 0.3 * np.random.default_rng(1).normal(size=(1, DIM)))
    shots = Retriever(store, shuffle=False).search(query, k=8, exclude_rows=own_rows(store, ["audio/1.wav"]))[0]
    group_vecs = vectors[::ROWS_PER_GROUP]
    sims = group_vecs @ query[0]
    expected = [f"audio/{g}" + ".wav" for g in np.argsort(-sims) if g != 1][:8]
    assert groups(shots) == expected
    scores = [s.score for s in shots]
    assert scores == sorted(scores, reverse=True)
    assert scores == pytest.approx(sorted(sims[[int(g.split("/")[1][:-4]) for g in expected]], reverse=True), abs=1e-5)


def test_shuffle_is_seeded_per_query_and_batch_independent(store, vectors):
    queries = vectors[::ROWS_PER_GROUP][:10]
    ids = [f"q{i}" for i in range(10)]
    own = [f"audio/{g}.wav" for g in range(10)]
    retriever = Retriever(store, seed=3)
    batch = retriever.search(queries, k=7, exclude_rows=own_rows(store, own), query_ids=ids)
    again = Retriever(store, seed=3).search(queries, k=7, exclude_rows=own_rows(store, own), query_ids=ids)
    assert [[s.row for s in r] for r in batch] == [[s.row for s in r] for r in again]
    # a query alone gives the same shots as inside a batch
    for i in (0, 4, 9):
        alone = retriever.search(queries[i : i + 1], k=7, exclude_rows=own_rows(store, [own[i]]), query_ids=[ids[i]])[0]
        assert [s.row for s in alone] == [s.row for s in batch[i]]
    # the shuffled order is a permutation of the nearest-first set, and not always nearest-first
    plain = Retriever(store, shuffle=False).search(queries, k=7, exclude_rows=own_rows(store, own), query_ids=ids)
    assert [sorted(groups(a)) for a in batch] == [sorted(groups(b)) for b in plain]
    assert any(groups(a) != groups(b) for a, b in zip(batch, plain))
    other_seed = Retriever(store, seed=4).search(queries, k=7, exclude_rows=own_rows(store, own), query_ids=ids)
    assert [[s.row for s in r] for r in other_seed] != [[s.row for s in r] for r in batch]


def test_row_within_group_is_random_but_seeded(store, vectors):
    retriever = Retriever(store, shuffle=False)
    picked = set()
    for qid in range(30):
        shots = retriever.search(
            vectors[:1], k=1, exclude_rows=own_rows(store, ["audio/0.wav"]), query_ids=[f"q{qid}"]
        )[0]
        picked.add(shots[0].id)
    assert len(picked) > 1  # several captions of the nearest recording get used
    assert len({p.rsplit("_", 1)[0] for p in picked}) == 1  # all from the one nearest group


def test_seed_without_query_id_uses_the_embedding(store, vectors):
    retriever = Retriever(store, seed=0)
    a = retriever.search(vectors[[0, 30]], k=5)
    b = retriever.search(vectors[[30]], k=5)
    assert [s.row for s in a[1]] == [s.row for s in b[0]]
    assert query_seed(0, "x") == query_seed(0, "x") != query_seed(1, "x")


def test_filters_split_and_labels(store, vectors):
    retriever = Retriever(store)
    shots = retriever.search(vectors[:6], k=5, filters={"split": "train", "labels": ["dog", "car"]})
    for row in shots:
        assert len(row) == 5
        for s in row:
            assert s.item["split"] == "train" and s.item["label"] in ("dog", "car")
    shots = retriever.search(vectors[:1], k=4, filters={"split": ["val"]})[0]
    assert len(shots) == 4 and all(s.item["split"] == "val" for s in shots)


def test_widening_finds_far_rows_and_stops_when_exhausted(store, vectors, caplog):
    # only 12 val groups; with overfetch 0 the first fetch (k rows) holds few of them
    retriever = Retriever(store, overfetch=0, shuffle=False)
    with caplog.at_level(logging.DEBUG, logger="rag_flamingo.retrieval"):
        shots = retriever.search(
            vectors[3:4], k=10, filters={"split": "val"}, exclude_rows=own_rows(store, ["audio/1.wav"])
        )[0]
    assert "widening search" in caplog.text
    assert len(shots) == 10 and all(s.item["split"] == "val" for s in shots)
    val_groups = vectors[::ROWS_PER_GROUP][::5]  # groups 0, 5, 10, ... are the val split
    nearest = [f"audio/{5 * g}.wav" for g in np.argsort(-(val_groups @ vectors[3]))]
    assert groups(shots) == [g for g in nearest if g != "audio/1.wav"][:10]
    with caplog.at_level(logging.WARNING, logger="rag_flamingo.retrieval"):
        shots = retriever.search(vectors[3:4], k=20, filters={"split": "val"}, query_ids=["q"])[0]
    assert len(shots) == 12  # every val group, once
    assert "fewer than 20 shots" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rag_flamingo.retrieval"):
        retriever.search(vectors[3:5], k=20, filters={"split": "val"}, query_ids=["q", "r"])
    assert "fewer than" not in caplog.text  # said once per k, not once per query or batch


def test_near_duplicate_removal(tmp_path):
    rng = np.random.default_rng(5)
    base = normalize_rows(rng.normal(size=(20, DIM)))
    # group 1 is a near copy of group 0 (cos ~0.99); group 2 is a near copy of the query
    base[1] = normalize_rows(base[0:1] + 0.05 * rng.normal(size=(1, DIM)))[0]
    query = normalize_rows(rng.normal(size=(1, DIM)))
    base[2] = normalize_rows(query + 0.05 * rng.normal(size=(1, DIM)))[0]
    base[0] = normalize_rows(0.6 * query + 0.4 * base[0:1])[0]
    base[1] = normalize_rows(base[0:1] + 0.03 * rng.normal(size=(1, DIM)))[0]
    assert base[0] @ base[1] > 0.94 and base[2] @ query[0] > 0.94
    rows = [{"id": f"r{i}", "path": f"{i}.wav"} for i in range(20)]
    store = make_store(tmp_path, base.astype(np.float32), rows)
    plain = Retriever(store, shuffle=False).search(query, k=5)[0]
    assert {"2.wav", "0.wav", "1.wav"} <= set(groups(plain))
    deduped = Retriever(store, shuffle=False, near_duplicate_threshold=0.94).search(query, k=5)[0]
    assert len(deduped) == 5
    assert "2.wav" not in groups(deduped)  # near-duplicate of the query
    assert "0.wav" in groups(deduped) and "1.wav" not in groups(deduped)  # nearer one of the pair kept
    vecs = base[[s.row for s in deduped]]
    sims = vecs @ vecs.T
    assert np.all(sims[~np.eye(5, dtype=bool)] < 0.94)


def test_near_duplicates_on_ivf_index_use_the_shards(tmp_path):
    vectors, rows = corpus(seed=2, n_groups=40)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 4, faiss.METRIC_INNER_PRODUCT)
    store = make_store(tmp_path, vectors, rows, index=index)
    store.index.nprobe = 4
    shots = Retriever(store, near_duplicate_threshold=0.99).search(
        vectors[:1], k=5, exclude_rows=own_rows(store, ["audio/0.wav"])
    )[0]
    assert len(shots) == 5 and len(set(groups(shots))) == 5


def test_random_mode(store, vectors):
    retriever = Retriever(store, mode="random", seed=1)
    own = [f"audio/{g}.wav" for g in range(8)]
    ids = [f"q{g}" for g in range(8)]
    a = retriever.search(vectors[::ROWS_PER_GROUP][:8], k=7, exclude_rows=own_rows(store, own), query_ids=ids)
    b = Retriever(store, mode="random", seed=1).search(None, k=7, exclude_rows=own_rows(store, own), query_ids=ids)
    assert [[s.row for s in r] for r in a] == [[s.row for s in r] for r in b]  # needs no embedding
    assert all(np.isnan(s.score) for r in b for s in r)
    knn = Retriever(store, shuffle=False).search(vectors[::ROWS_PER_GROUP][:8], k=7, exclude_rows=own_rows(store, own))
    for g, row in enumerate(a):
        assert len(row) == 7 and own[g] not in groups(row) and len(set(groups(row))) == 7
        assert all(np.isfinite(s.score) for s in row)
    assert [sorted(groups(r)) for r in a] != [sorted(groups(r)) for r in knn]
    c = Retriever(store, mode="random", seed=2).search(None, k=7, exclude_rows=own_rows(store, own), query_ids=ids)
    assert [[s.row for s in r] for r in c] != [[s.row for s in r] for r in b]
    filtered = retriever.search(None, k=3, query_ids=["x"], filters={"labels": ["bird"]})[0]
    assert [s.item["label"] for s in filtered] == ["bird"] * 3


def test_index_of_one_dataset_serves_queries_of_another(store):
    other_vectors, _ = corpus(seed=99, n_groups=5)
    shots = Retriever(store).search(other_vectors[::ROWS_PER_GROUP], k=4, query_ids=[f"other{i}" for i in range(5)])
    assert [len(s) for s in shots] == [4] * 5


def test_bad_inputs(store, vectors):
    with pytest.raises(StoreError, match="query dim"):
        Retriever(store).search(np.zeros((1, DIM + 1), np.float32), k=3)
    with pytest.raises(ConfigError):
        Retriever(store, mode="nearest")
    with pytest.raises(ConfigError, match="exclude_rows"):
        Retriever(store).search(vectors[:2], k=3, exclude_rows=[frozenset()])
    with pytest.raises(ConfigError, match="query embeddings"):
        Retriever(store).search(None, k=3, query_ids=["a"])
    with pytest.raises(ConfigError, match="encoder"):
        Retriever(store).search_audio([np.zeros(100, np.float32)], k=3)
    assert Retriever(store).search(vectors[:2], k=0) == [[], []]


class BandEnergyEncoder:
    """A small real audio encoder: log energies in DIM linear frequency bands, L2-normalised."""

    name = "band_energy"
    normalized = True

    def __init__(self, sample_rate=16000, dim=DIM):
        self.sample_rate, self.dim = sample_rate, dim

    def embed(self, waveforms):
        out = []
        for wave in waveforms:
            spec = np.abs(np.fft.rfft(wave, n=4096)) ** 2
            bands = np.array_split(spec[1:], self.dim)
            out.append(np.log1p([b.sum() for b in bands]))
        emb = np.asarray(out, np.float32)
        emb -= emb.mean(axis=1, keepdims=True)
        return normalize_rows(emb)

    def fingerprint(self):
        return {"name": self.name, "sample_rate": self.sample_rate, "dim": self.dim, "bands": "linear"}


def test_search_audio_with_the_store_encoder_and_mismatch_refused(tmp_path):
    encoder = BandEnergyEncoder()
    sr = encoder.sample_rate
    t = np.arange(sr) / sr
    freqs = [220, 440, 880, 1760, 3000, 5000]
    rows, waves = [], []
    for i, f in enumerate(freqs):
        path = tmp_path / f"tone{i}.wav"
        sf.write(path, 0.5 * np.sin(2 * np.pi * f * t), sr)
        waves.append(load_audio(path, sr))
        rows.append({"id": f"tone{i}", "path": path.name, "captions": [f"a {f} hz tone"]})
    store = make_store(tmp_path / "store", encoder.embed(waves), rows, encoder=encoder.fingerprint())
    retriever = Retriever(store, encoder=encoder, shuffle=False)
    query = 0.5 * np.sin(2 * np.pi * 900 * t).astype(np.float32)
    shots = retriever.search_audio(
        [query, waves[0]], k=2, exclude_rows=own_rows(store, [None, "tone0.wav"]), query_ids=["a", "b"]
    )
    assert shots[0][0].id == "tone2"  # 900 Hz is nearest the 880 Hz tone
    assert "tone0" not in [s.id for s in shots[1]]
    with pytest.raises(StoreError, match="built with encoder"):
        Retriever(store, encoder=BandEnergyEncoder(dim=DIM, sample_rate=8000))


def test_l2_store_and_field_filters(tmp_path):
    vectors, rows = corpus(seed=7, n_groups=30)
    store = make_store(tmp_path, vectors * 3.0, rows, metric="l2")  # unnormalised vectors, exact L2
    retriever = Retriever(store, shuffle=False)
    shots = retriever.search(vectors[:1] * 3.0, k=5, exclude_rows=own_rows(store, ["audio/0.wav"]))[0]
    scores = [s.score for s in shots]
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)  # -squared distance
    sims = (vectors[::ROWS_PER_GROUP] @ vectors[0])[1:]
    assert groups(shots)[0] == f"audio/{int(np.argmax(sims)) + 1}.wav"
    dedup = Retriever(store, shuffle=False, near_duplicate_threshold=0.999).search(vectors[:1] * 3.0, k=5)[0]
    assert "audio/0.wav" not in groups(dedup)  # the query's own vector, found by cosine on an L2 store
    only = retriever.search(
        vectors[:1], k=3, filters={"path": ["audio/4.wav", "audio/9.wav"], "exclude_ids": ["g4_c0", "g4_c1"]}
    )[0]
    assert len(only) == 2 and {s.item["path"] for s in only} == {"audio/4.wav", "audio/9.wav"}
    assert "g4_c2" in [s.id for s in only]  # the only row of group 4 left by exclude_ids
    rand = Retriever(store, mode="random").search(
        vectors[:1] * 3.0, k=4, exclude_rows=own_rows(store, ["audio/0.wav"])
    )[0]
    assert all(s.score < 0 for s in rand)
