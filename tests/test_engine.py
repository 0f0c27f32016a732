"""RagFlamingo end to end on tiny real parts: demo audio -> store -> retrieve -> prompt -> tiny AF1."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from rag_flamingo.api import answer, answer_batch
from rag_flamingo.audio import load_for_encoders, load_waveform, wave_for
from rag_flamingo.engine import RagFlamingo
from rag_flamingo.errors import AudioError, ConfigError, StoreError
from rag_flamingo.model import GenerationSettings, generate, postprocess_output, tokenize_prompts
from rag_flamingo.predictors import FlamingoPredictor, Query
from support.engine import TinyWindowEncoder, build_store, demo_engine_parts


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return demo_engine_parts(tmp_path_factory.mktemp("store"))


def make_engine(parts, **kw):
    gen = kw.pop("generation", GenerationSettings(max_new_tokens=6))
    return RagFlamingo(parts["store"], parts["model"], parts["tok"], parts["enc"], parts["enc"], generation=gen, **kw)


def load(eng, path):
    return load_for_encoders(path, [eng.retrieval_encoder, *eng.audio_encoders])


def embed(eng, waves):
    return eng.retrieval_encoder.embed([wave_for(w, eng.retrieval_encoder) for w in waves])


def test_answer_batch_end_to_end(parts):
    eng = make_engine(parts)
    rows = parts["test"][:3]
    answers = answer_batch(
        eng,
        [parts["root"] / r["path"] for r in rows],
        "event_classification",
        k=2,
        items=[{"id": r["id"]} for r in rows],
        options=parts["store"].label_set(),
    )
    assert len(answers) == 3
    train_ids = {r["id"] for r in parts["train"]}
    for ans in answers:
        assert len(ans.shots) == 2 and all(s.id in train_ids for s in ans.shots)
        assert ans.prompt.startswith("</s>Here are similar examples. The task is event classification. ")
        assert ans.prompt.count("<audio>") == 3 and ans.prompt.endswith("<SEP>")
        assert "options:" in ans.prompt.split("<audio>")[-1]  # only the query carries the options
        assert "options:" not in "".join(ans.prompt.split("<audio>")[1:-1])
        for s in ans.shots:  # each shot's answer (its label) is in the prompt
            assert f"<SEP>{s.item['label']}<|endofchunk|>" in ans.prompt
        assert isinstance(ans.output, str)


def test_media_uses_cached_shot_features_and_encodes_only_the_query(parts):
    eng = make_engine(parts)
    row = parts["test"][0]
    waves = [load(eng, parts["root"] / row["path"])]
    shots = eng.retriever.search(embed(eng, waves), 3, query_ids=[row["id"]])
    prompts = eng.prompts("event_classification", [{"id": row["id"]}], shots, None)
    calls = []
    orig = eng.window_encoder.window_features
    eng.window_encoder.window_features = lambda w: calls.append(len(w)) or orig(w)
    try:
        feats, mask = eng.media(prompts, [wave_for(waves[0], parts["enc"])])
    finally:
        del eng.window_encoder.window_features
    assert calls == [1]  # one call, one waveform: the query's
    w = 4
    assert feats.shape == (1, eng.audio_slots * w, 32)
    cached, cached_mask = parts["store"].features("clapcap").get([s.row for s in prompts[0].shots])
    for slot, _ in enumerate(prompts[0].shots):
        torch.testing.assert_close(feats[0, slot * w : (slot + 1) * w], torch.from_numpy(cached[slot]))
        torch.testing.assert_close(mask[0, slot * w : (slot + 1) * w], torch.from_numpy(cached_mask[slot]))
    q_feats, q_mask = parts["enc"].window_features([wave_for(waves[0], parts["enc"])])
    q = len(prompts[0].shots)
    torch.testing.assert_close(feats[0, q * w : (q + 1) * w], q_feats[0])
    assert mask[0, q * w :].sum() == q_mask[0].sum()  # nothing after the query slot is attended


def test_engine_output_matches_direct_model_call(parts):
    """The engine's answer is exactly what the model generates from the same prompt and media."""
    eng = make_engine(parts, generation=GenerationSettings(max_new_tokens=5, num_beams=2))
    row = parts["test"][5]
    waves = [load(eng, parts["root"] / row["path"])]
    shots = eng.retriever.search(embed(eng, waves), 2, query_ids=[row["id"]])
    answers = eng.generate("captioning", [{"id": row["id"]}], shots, waves)
    prompt = eng.prompts("captioning", [{"id": row["id"]}], shots)[0]
    feats, mask = eng.media([prompt], [wave_for(waves[0], parts["enc"])])
    ids, attn = tokenize_prompts(parts["tok"], [prompt.text])
    out = generate(parts["model"], ids, attn, feats, mask, max_new_tokens=5, num_beams=2)
    expected = postprocess_output(parts["tok"].decode(out.new_tokens[0])).strip()
    assert answers[0].output == expected and answers[0].prompt == prompt.text


def test_sampling_is_seeded(parts):
    gen = GenerationSettings(max_new_tokens=6, do_sample=True, top_k=50, seed=3)
    eng = make_engine(parts, generation=gen)
    audio = parts["root"] / parts["test"][1]["path"]
    a = answer(eng, audio, "captioning", k=1)
    b = answer(eng, audio, "captioning", k=1)
    assert a.output == b.output


def test_too_many_shots_and_missing_features_are_user_errors(parts, tmp_path):
    eng = make_engine(parts)
    with pytest.raises(ConfigError, match="audio slots"):
        answer(eng, parts["root"] / parts["test"][0]["path"], "captioning", k=eng.max_shots + 1)
    bare = build_store(
        tmp_path / "bare",
        parts["train"][:8],
        np.eye(8, 32, dtype=np.float32),
        parts["enc"].fingerprint(),
        features=False,
    )
    with pytest.raises(StoreError, match="features=clapcap"):
        RagFlamingo(bare, parts["model"], parts["tok"], parts["enc"], parts["enc"])
    mismatched = build_store(
        tmp_path / "mm", parts["train"][:8], np.eye(8, 32, dtype=np.float32), parts["enc"].fingerprint(), windows=3
    )
    with pytest.raises(StoreError, match="rebuild"):
        RagFlamingo(mismatched, parts["model"], parts["tok"], parts["enc"], parts["enc"])
    other = build_store(
        tmp_path / "other", parts["train"][:8], np.eye(8, 32, dtype=np.float32), parts["enc"].fingerprint()
    )
    other.info.features["clapcap"].fingerprint = TinyWindowEncoder(seed=1).fingerprint()
    with pytest.raises(StoreError, match="another window encoder"):
        RagFlamingo(other, parts["model"], parts["tok"], parts["enc"], parts["enc"])
    other.info.features["clapcap"].fingerprint = dict(parts["enc"].fingerprint(), device="cuda:0")
    RagFlamingo(other, parts["model"], parts["tok"], parts["enc"], parts["enc"])  # same encoder elsewhere: fine


def test_flamingo_predictor_checks_every_query_for_too_many_shots(parts):
    """A batch whose first query has few shots must not hide a later query with too many."""
    eng = make_engine(parts)
    rows = parts["test"][:2]
    waves = [load(eng, parts["root"] / r["path"]) for r in rows]
    emb = embed(eng, waves)
    many = eng.retriever.search(emb[1:], eng.max_shots + 1, query_ids=[rows[1]["id"]])[0]
    assert len(many) == eng.max_shots + 1
    queries = [
        Query(rows[0]["id"], {"id": rows[0]["id"]}, waves[0], emb[0], shots=many[:1]),
        Query(rows[1]["id"], {"id": rows[1]["id"]}, waves[1], emb[1], shots=many),
    ]
    with pytest.raises(ConfigError, match="audio slots"):
        FlamingoPredictor(eng).predict(queries, "captioning")


def test_bad_query_audio_raises_audio_error(parts, tmp_path):
    eng = make_engine(parts)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    with pytest.raises(AudioError, match="silent"):
        answer(eng, silent, "captioning", k=1)
    with pytest.raises(AudioError, match="not found"):
        answer(eng, tmp_path / "missing.wav", "captioning", k=1)


def test_load_waveform_resamples_arrays():
    wave = np.sin(np.linspace(0, 2000, 44100)).astype(np.float32)
    out = load_waveform((wave, 44100), 16000)
    assert out.shape == (16000,) and out.dtype == np.float32
