"""Rank scoring of answer continuations (`rag_flamingo.model.scoring`) on the af1_tiny real-class model:
each score equals the log-likelihood of a full uncached forward of prompt + answer, the shared prefix
ranks like separate forwards, and continuation tokens of multi-audio prompts see every audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rag_flamingo.errors import ConfigError
from rag_flamingo.model import tokenize_prompts
from rag_flamingo.model.scoring import OptionScores, answer_token_ids, score_continuations
from support.engine import tiny_flamingo

EOC, COMMA = 601, 15  # af1_tiny's <|endofchunk|> and "," (tests/fixtures/af1_tiny/config.json)


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_flamingo()
    return model.eval(), tok


def _batch(model, tok, texts, seed=0):
    """Left-padded prompts with random window features for every audio slot (some windows padded)."""
    ids, attn = tokenize_prompts(tok, texts)
    gen = torch.Generator().manual_seed(seed)
    w, slots = model.config.windows_per_audio, 3
    feats = torch.randn(len(texts), slots * w, model.config.audio_embed_dim, generator=gen)
    mask = torch.ones(len(texts), slots * w)
    mask[:, w - 1] = 0.0  # the first audio's last window is padding
    return ids, attn, feats, mask


PROMPTS = [
    "</s>Here are similar examples. The task is event classification. <audio>classify this sound.\nanswer:<SEP>"
    "dog<|endofchunk|><audio>classify this sound.\nanswer:<SEP>rain<|endofchunk|><audio>classify this sound."
    "\noptions:\n - cat.\n - dog.\n - dog bark.\n - rain.\nanswer:<SEP>",
    "</s>the task is event classification.<audio>classify this sound.\nanswer:<SEP>",
]
ANSWERS = ["cat", "dog", "dog bark", "rain", "a"]


def _reference(model, ids, attn, feats, mask, b, cont, end_ids, audio0_only=False):
    """log p(cont [+ end]) from one uncached forward of prompt b (unpadded) + cont; ``audio0_only``:
    the continuation's positions limited to the first audio's windows (what a media count lost across
    the cache gives: the reference's cached quirk), the prompt's positions keep the right mask."""
    keep = attn[b].bool()
    row = torch.cat([ids[b][keep], torch.tensor(cont, dtype=torch.long)])[None]
    override = None
    if audio0_only:
        w = model.config.windows_per_audio
        override = model.compute_xattn_mask(row, mask[b : b + 1])[0]
        override[:, int(keep.sum()) :] = False
        override[:, int(keep.sum()) :, :w] = mask[b, :w].bool()
    with torch.no_grad():
        out = model(row, feats[b : b + 1], mask[b : b + 1], xattn_mask_override=override)
    logp = out.logits[0].double().log_softmax(-1)
    start = int(keep.sum()) - 1
    total = sum(float(logp[start + j, t]) for j, t in enumerate(cont))
    if end_ids:
        total += float(logp[start + len(cont), list(end_ids)].logsumexp(-1))
    return total


def _continuations(tok, texts):
    return [answer_token_ids(tok, t, [t + a + "<|endofchunk|></s>" for a in ANSWERS], 2) for t in texts]


@pytest.mark.parametrize("end_ids", [(EOC,), (EOC, COMMA), ()])
def test_each_score_equals_the_full_uncached_log_likelihood(tiny, end_ids):
    model, tok = tiny
    ids, attn, feats, mask = _batch(model, tok, PROMPTS)
    conts = _continuations(tok, PROMPTS)
    assert attn[1].sum() < attn[0].sum()  # the second prompt is left-padded
    assert len(conts[0][2]) > len(conts[0][0]) > 1  # multi-token answers of different lengths
    scores = score_continuations(model, ids, attn, feats, mask, conts, end_ids=end_ids, rows_per_pass=2)
    for b in range(len(PROMPTS)):
        ref = [_reference(model, ids, attn, feats, mask, b, c, end_ids) for c in conts[b]]
        np.testing.assert_allclose(scores[b].total, ref, atol=1e-5, rtol=0)
        assert list(scores[b].length) == [len(c) + (1 if end_ids else 0) for c in conts[b]]
        np.testing.assert_allclose(scores[b].mean, np.array(ref) / scores[b].length, atol=1e-5, rtol=0)


def test_shared_prefix_ranks_like_separate_forwards(tiny):
    model, tok = tiny
    ids, attn, feats, mask = _batch(model, tok, PROMPTS, seed=3)
    conts = _continuations(tok, PROMPTS)
    shared = score_continuations(model, ids, attn, feats, mask, conts, end_ids=(EOC,))
    separate = score_continuations(model, ids, attn, feats, mask, conts, end_ids=(EOC,), share_prefix=False)
    for a, b in zip(shared, separate):
        np.testing.assert_allclose(a.total, b.total, atol=1e-5, rtol=0)
        for kind in ("mean", "sum"):
            assert list(np.argsort(-a.get(kind), kind="stable")) == list(np.argsort(-b.get(kind), kind="stable"))


def test_continuation_tokens_of_a_multi_audio_prompt_see_every_audio(tiny):
    """3 audios in the prompt: the answer tokens attend all 3 (the query's windows included), as in the
    uncached forward; answer tokens limited to audio 0 (the reference's cached quirk) score otherwise,
    so the equality would catch a wrong continuation mask."""
    model, tok = tiny
    ids, attn, feats, mask = _batch(model, tok, PROMPTS[:1], seed=5)
    assert int((ids[0] == model.config.media_token_id).sum()) == 3
    conts = _continuations(tok, PROMPTS[:1])
    scores = score_continuations(model, ids, attn, feats, mask, conts, end_ids=(EOC,))[0]
    ref = [_reference(model, ids, attn, feats, mask, 0, c, (EOC,)) for c in conts[0]]
    np.testing.assert_allclose(scores.total, ref, atol=1e-5, rtol=0)
    wrong = [_reference(model, ids, attn, feats, mask, 0, c, (EOC,), audio0_only=True) for c in conts[0]]
    assert np.abs(np.array(wrong) - scores.total).max() > 1e-3
    w = model.config.windows_per_audio
    # changing only the query's (last) audio changes the answer scores
    other = feats.clone()
    other[:, 2 * w :] = torch.randn(other[:, 2 * w :].shape, generator=torch.Generator().manual_seed(9))
    moved = score_continuations(model, ids, attn, other, mask, conts, end_ids=(EOC,))[0]
    assert np.abs(moved.total - scores.total).max() > 1e-4


def test_answer_tokens_are_what_the_full_sample_adds(tiny):
    _, tok = tiny
    prompt = PROMPTS[1]
    (dog,) = answer_token_ids(tok, prompt, [prompt + "dog<|endofchunk|></s>"], 2)
    full = tok(prompt + "dog<|endofchunk|></s>")["input_ids"]
    assert full[-2:] == [EOC, 2] and dog == full[len(tok(prompt)["input_ids"]) : -2] and len(dog) == 2
    with pytest.raises(ConfigError, match="changes the prompt"):
        answer_token_ids(tok, "</s>the task is x. answer: d", ["</s>the task is x. answer: dog"], 0)


def test_scoring_refuses_what_it_cannot_score(tiny):
    model, tok = tiny
    ids, attn, feats, mask = _batch(model, tok, PROMPTS[1:])
    with pytest.raises(ConfigError, match="empty continuation"):
        score_continuations(model, ids, attn, feats, mask, [[[]]])
    with pytest.raises(ConfigError, match="positions"):
        score_continuations(model, ids, attn, feats, mask, [[[5] * 300]], end_ids=(EOC,))
    with pytest.raises(ConfigError, match="unknown score"):
        OptionScores(np.zeros(1), np.ones(1, np.int64)).get("max")
    # an empty continuation with an end token scores the end alone
    (only_end,) = score_continuations(model, ids, attn, feats, mask, [[[]]], end_ids=(EOC,))
    assert only_end.length[0] == 1
    np.testing.assert_allclose(only_end.total, [_reference(model, ids, attn, feats, mask, 0, [], (EOC,))], atol=1e-5)
