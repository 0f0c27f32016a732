"""zero_shot and the CLAP filter with a real LAION-CLAP encoder (HTSAT-tiny + RoBERTa, random weights,
saved in the released checkpoint format and loaded by the strict loader)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oracles import laion as lo
from rag_flamingo.api import answer
from rag_flamingo.audio import decode_key, load_for_encoders, wave_for
from rag_flamingo.datasets import demo
from rag_flamingo.datasets.manifest import read_manifest
from rag_flamingo.encoders.laion_clap import LaionClapConfig, LaionClapModel, load_laion_clap, load_text_side
from rag_flamingo.engine import ClapReranker, RagFlamingo
from rag_flamingo.model import GenerationSettings
from rag_flamingo.predictors import Query, ZeroShotPredictor
from support.engine import TinyWindowEncoder, build_store, embed_rows, tiny_flamingo

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")]


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def clap(tmp_path_factory):
    hub = lo.make_hub_standins(tmp_path_factory.mktemp("hub"))
    text = str(hub / "roberta-base")
    _, text_config = load_text_side(text)
    torch.manual_seed(0)
    model = LaionClapModel(LaionClapConfig(text_model=text), text_config)
    ckpt = tmp_path_factory.mktemp("ckpt") / "random-clap.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    return load_laion_clap(checkpoint=str(ckpt), text_model=text, device="cpu")


def test_zero_shot_scores_label_prompts_by_cosine(clap):
    rng = np.random.default_rng(0)
    wave = (0.3 * rng.standard_normal(48000 * 2)).astype(np.float32)
    labels = ["dog bark", "rain", "church bell"]
    zs = ZeroShotPredictor(clap, labels)
    emb = clap.embed([wave])[0]
    pred = zs.predict([Query("q", {"id": "q"}, {}, emb)], "classification")[0]
    expected = unit(clap.embed_text([f"this is a sound of {lab}" for lab in labels])) @ unit(emb)
    assert [pred.label_scores[lab] for lab in labels] == pytest.approx(expected.tolist(), abs=1e-5)
    assert pred.output == labels[int(np.argmax(expected))]
    only = zs.predict([Query("q", {"id": "q"}, {}, emb, options=["rain"])], "classification")[0]
    assert only.output == "rain" and set(only.label_scores) == {"rain"}


def test_clap_filter_keeps_the_sample_nearest_the_audio(clap, tmp_path):
    root = demo.ensure_demo()
    train = read_manifest(root / "train.jsonl")[:24]
    enc = TinyWindowEncoder()
    store = build_store(tmp_path / "store", train, embed_rows(enc, train, root), enc.fingerprint())
    model, tok = tiny_flamingo()
    gen = GenerationSettings(max_new_tokens=5, do_sample=True, num_return_sequences=4, top_k=50, seed=1)
    eng = RagFlamingo(store, model, tok, enc, enc, generation=gen, reranker=ClapReranker(clap))
    audio = root / read_manifest(root / "test.jsonl")[0]["path"]
    ans = answer(eng, audio, "captioning", k=2)
    assert len(ans.samples) == 4
    texts = [t for t, _ in ans.samples]
    waves = load_for_encoders(audio, [enc, *eng.audio_encoders])
    assert decode_key(clap) in waves  # decoded once more as the CLAP encoder takes it
    expected = unit(clap.embed_text(texts)) @ unit(clap.embed([wave_for(waves, clap)])[0])
    assert [s for _, s in ans.samples] == pytest.approx(expected.tolist(), abs=1e-5)
    assert ans.output == texts[int(np.argmax(expected))] and ans.score == pytest.approx(float(expected.max()), abs=1e-5)
    with pytest.raises(Exception, match="CLAP reranker"):
        RagFlamingo(store, model, tok, enc, enc, generation=gen)


def test_clap_filter_with_a_transformers_audio_lm(clap, tmp_path):
    """The same filter for the transformers backend (tiny Qwen2-Audio): N sampled answers, the one whose
    CLAP text embedding is nearest the query audio's kept, through the same `api.answer`."""
    from rag_flamingo.backends.loading import load_transformers_audio
    from rag_flamingo.backends.transformers_audio import TransformersAudioEngine
    from support.audio_lms import save_tiny

    root = demo.ensure_demo()
    train = [{**r, "path": str(root / r["path"])} for r in read_manifest(root / "train.jsonl")[:24]]
    enc = TinyWindowEncoder()
    store = build_store(tmp_path / "store", train, embed_rows(enc, train, root), enc.fingerprint(), features=False)
    folder = save_tiny("qwen2_audio", tmp_path / "qwen2_audio")
    model, processor = load_transformers_audio(
        {"checkpoint": str(folder), "model_class": "Qwen2AudioForConditionalGeneration", "device": "cpu"}
    )
    gen = GenerationSettings(max_new_tokens=5, do_sample=True, num_return_sequences=4, top_k=50, seed=1)
    eng = TransformersAudioEngine(store, model, processor, enc, generation=gen, reranker=ClapReranker(clap))
    audio = root / read_manifest(root / "test.jsonl")[0]["path"]
    ans = answer(eng, audio, "captioning", k=2)
    assert len(ans.samples) == 4
    texts = [t for t, _ in ans.samples]
    waves = load_for_encoders(audio, [enc, *eng.audio_encoders])
    expected = unit(clap.embed_text(texts)) @ unit(clap.embed([wave_for(waves, clap)])[0])
    assert [s for _, s in ans.samples] == pytest.approx(expected.tolist(), abs=1e-5)
    assert ans.output == texts[int(np.argmax(expected))] and ans.score == pytest.approx(float(expected.max()), abs=1e-5)
    with pytest.raises(Exception, match="CLAP reranker"):
        TransformersAudioEngine(store, model, processor, enc, generation=gen)
