"""Parity with the reference AF1 implementation on the af1_tiny fixtures (tests/fixtures/af1_tiny).

Every expected number was produced by the reference code (transformers 4.27.4); see its README.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rag_flamingo.model import (
    AudioFlamingoConfig,
    generate,
    load_af1_tokenizer,
    load_audio_flamingo,
    postprocess_output,
)

FIX = Path(__file__).parent / "fixtures" / "af1_tiny"
CASES = json.loads((FIX / "cases.json").read_text())["cases"]
NAMES = [c["name"] for c in CASES]
TOL = 1e-5


@pytest.fixture(scope="module")
def arrays():
    return load_file(str(FIX / "cases.safetensors"))


@pytest.fixture(scope="module")
def tok():
    return load_af1_tokenizer(str(FIX / "tokenizer"))


@pytest.fixture(scope="module")
def model(tok):
    return load_audio_flamingo(FIX / "checkpoint.pt", AudioFlamingoConfig.from_json(FIX / "config.json"), tok)


def _case(name):
    return next(c for c in CASES if c["name"] == name)


def _inputs(arrays, name):
    return arrays[f"{name}/input_ids"], arrays[f"{name}/audio_x"], arrays[f"{name}/audio_x_mask"]


def test_tokenizer_reproduces_reference_ids(tok):
    assert [tok.convert_tokens_to_ids(t) for t in ("<audio>", "<|endofchunk|>", "<SEP>")] == [600, 601, 602]
    assert len(tok) == 603
    for c in CASES:
        ids = tok(c["prompt_text"])["input_ids"]
        assert ids == c["input_ids"], c["name"]
        assert ids[:2] == [2, 2]  # the double leading </s>
        assert [i for i, t in enumerate(ids) if t == 600] == c["audio_token_positions"]
        if "full_text" in c:
            assert tok(c["full_text"])["input_ids"] == c["full_input_ids"]


@pytest.mark.parametrize("name", NAMES)
def test_audio_transformer_and_masks(model, arrays, name):
    ids, x, xm = _inputs(arrays, name)
    with torch.no_grad():
        states = model.encode_audio(x)
    assert (states - arrays[f"{name}/audio_transformer_out"]).abs().max() <= TOL
    mask, _ = model.compute_xattn_mask(ids, xm)
    expected = arrays[f"{name}/xattn_mask"]  # (X, T, L), identical in every xattn layer
    for layer_mask in expected:
        assert torch.equal(mask[0].to(torch.uint8), layer_mask)


@pytest.mark.parametrize("name", NAMES)
def test_teacher_forced_logits(model, arrays, name):
    ids, x, xm = _inputs(arrays, name)
    with torch.no_grad():
        out = model(ids, x, xm)
    assert (out.logits - arrays[f"{name}/logits"]).abs().max() <= TOL
    if f"{name}/full_input_ids" in arrays:
        with torch.no_grad():
            full = model(arrays[f"{name}/full_input_ids"], x, xm)
        assert (full.logits - arrays[f"{name}/full_logits"]).abs().max() <= TOL


def _check_generation(out, arrays, name, kind):
    tokens = arrays[f"{name}/gen_{kind}_tokens"]
    assert out.new_tokens[0].tolist() == tokens.tolist()
    scores = torch.stack([s[0] for s in out.scores])
    assert (scores - arrays[f"{name}/gen_{kind}_scores"]).abs().max() <= TOL
    masks = torch.stack([m[0] for m in out.xattn_masks]).to(torch.uint8)
    for layer_masks in arrays[f"{name}/gen_{kind}_xattn_mask"]:
        assert torch.equal(masks, layer_masks)


@pytest.mark.parametrize("name", NAMES)
def test_generation_matches_reference(model, arrays, tok, name):
    ids, x, xm = _inputs(arrays, name)
    gen = dict(max_new_tokens=8, eos_token_id=None)  # the fixtures use an eos that never occurs
    uncached = generate(model, ids, None, x, xm, use_cache=False, **gen)
    _check_generation(uncached, arrays, name, "nocache")
    quirk = generate(model, ids, None, x, xm, use_cache=True, reference_cache_quirk=True, **gen)
    _check_generation(quirk, arrays, name, "cache")
    cached = generate(model, ids, None, x, xm, use_cache=True, **gen)
    assert torch.equal(cached.new_tokens, uncached.new_tokens)  # correct masks under the cache
    for a, b in zip(cached.xattn_masks, uncached.xattn_masks):
        assert torch.equal(a, b)
    # reference post-processing of the decoded full sequence
    gen_ref = _case(name)["generation"]
    for out, kind in ((uncached, "nocache"), (quirk, "cache")):
        text = tok.decode(out.sequences[0], skip_special_tokens=False)
        assert postprocess_output(text) == gen_ref[kind]["af1_postprocessed_output"]


def test_quirk_changes_multi_audio_generation(model, arrays):
    """The ICL case is where the reference cache bug shows: our cached decoding must not have it."""
    ids, x, xm = _inputs(arrays, "icl_caption_3audio")
    cached = generate(model, ids, None, x, xm, max_new_tokens=8, eos_token_id=None)
    quirk = generate(model, ids, None, x, xm, max_new_tokens=8, eos_token_id=None, reference_cache_quirk=True)
    assert cached.new_tokens.tolist() != quirk.new_tokens.tolist()
    assert all(int(m[0].sum()) == 12 for m in cached.xattn_masks)  # all 3 audios, every step
    assert all(int(m[0].sum()) == 4 for m in quirk.xattn_masks[1:])  # audio 0 only after step 0


def test_first_eos_stop(model, arrays):
    """With the real eos (</s>) generation stops at the step the reference recorded (or runs on)."""
    for c in CASES:
        ids, x, xm = _inputs(arrays, c["name"])
        out = generate(model, ids, None, x, xm, max_new_tokens=8, use_cache=True)
        step = c["generation"]["nocache"]["first_eos_step"]
        expected = arrays[f"{c['name']}/gen_nocache_tokens"].tolist()
        assert out.new_tokens[0].tolist() == (expected if step is None else expected[: step + 1])


def test_eager_attention_matches_too(arrays):
    """The OPT layers' kernel is configurable (sdpa default, eager = the reference's math)."""
    cfg = AudioFlamingoConfig.from_json(FIX / "config.json")
    cfg.attn_implementation = "eager"
    model = load_audio_flamingo(FIX / "checkpoint.pt", cfg)
    ids, x, xm = _inputs(arrays, "icl_caption_3audio")
    with torch.no_grad():
        out = model(ids, x, xm)
    assert (out.logits - arrays["icl_caption_3audio/logits"]).abs().max() <= TOL
