"""Decoding: equivalence with transformers' OPT generation when the gates are closed, batching with
left padding and different numbers of audios, cached == uncached, samplers, chat, raw audio."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import OPTConfig, OPTForCausalLM

from rag_flamingo.errors import ConfigError
from rag_flamingo.model import (
    AudioFlamingo,
    AudioFlamingoConfig,
    ChatSession,
    GenerationSettings,
    chat_prompt,
    encode_prompt_audios,
    generate,
    load_af1_tokenizer,
    load_audio_flamingo,
    pack_window_features,
    postprocess_output,
    tokenize_prompts,
)

FIX = Path(__file__).parent / "fixtures" / "af1_tiny"
CASES = {c["name"]: c for c in json.loads((FIX / "cases.json").read_text())["cases"]}


# ------------------------------------------------------------------ closed gates == plain OPT
@pytest.fixture(scope="module")
def opt_pair():
    """A random tiny HF OPTForCausalLM and our model holding the same LM weights, gates at 0."""
    torch.manual_seed(0)
    af_cfg = AudioFlamingoConfig(
        opt=dict(
            vocab_size=97,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=64,
            max_position_embeddings=64,
            word_embed_proj_dim=32,
            do_layer_norm_before=True,
            activation_function="relu",
            enable_bias=True,
            dropout=0.0,
            pad_token_id=1,
            bos_token_id=2,
            eos_token_id=2,
        ),
        audio_embed_dim=16,
        windows_per_audio=2,
        at_n_head=2,
        at_n_layers=1,
        at_d_inner=32,
        max_num_media=8,
        media_token_id=95,
        eoc_token_id=96,
        sep_token_id=94,
    )
    hf_cfg = OPTConfig(**af_cfg.opt)
    hf_cfg._attn_implementation = "sdpa"
    hf = OPTForCausalLM(hf_cfg).eval()
    ours = AudioFlamingo(af_cfg).eval()
    src = hf.model.decoder.state_dict()
    dst = {k: v for k, v in ours.state_dict().items()}
    for k in list(dst):
        if k.startswith("decoder."):
            hf_key = k.removeprefix("decoder.").replace(".decoder_layer.", ".")
            if hf_key in src:
                dst[k] = src[hf_key]
    ours.load_state_dict(dst)
    for layer in ours.decoder.layers:
        assert float(layer.gated_cross_attn_layer.attn_gate.detach()) == 0.0
    return hf, ours


def _batch(vocab=97, pad=1):
    g = torch.Generator().manual_seed(1)
    a = torch.randint(3, 90, (1, 9), generator=g)
    b = torch.randint(3, 90, (1, 5), generator=g)
    ids = torch.full((2, 9), pad)
    mask = torch.zeros(2, 9, dtype=torch.long)
    ids[0], mask[0] = a[0], 1
    ids[1, 4:], mask[1, 4:] = b[0], 1
    return ids, mask


def _audio(n=2, length=4, d=16):
    return torch.randn(n, length, d, generator=torch.Generator().manual_seed(2)), torch.ones(n, length)


def test_closed_gates_equal_hf_opt_logits(opt_pair):
    hf, ours = opt_pair
    ids, mask = _batch()
    x, xm = _audio()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits
        got = ours(ids, x, xm, attention_mask=mask).logits
    real = mask.bool()
    assert (got[real] - ref[real]).abs().max() < 1e-5


def _eos_from_greedy(hf, ids, mask):
    out = hf.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=1
    )
    return int(out[0, ids.shape[1] + 2])  # a token row 0 produces at step 2: a real, early stop


def test_greedy_and_beam_equal_hf(opt_pair):
    hf, ours = opt_pair
    ids, mask = _batch()
    x, xm = _audio()
    eos = _eos_from_greedy(hf, ids, mask)
    common = dict(max_new_tokens=8, eos_token_id=eos, pad_token_id=1)
    ref = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, **common)
    got = generate(ours, ids, mask, x, xm, **common)
    assert got.sequences.tolist() == ref.tolist()
    row = got.new_tokens[0].tolist()
    first = row.index(eos)
    assert first <= 2 and set(row[first + 1 :]) <= {1}  # stopped at eos, then padding

    ref = hf.generate(
        input_ids=ids,
        attention_mask=mask,
        num_beams=3,
        num_return_sequences=2,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
        **common,
    )
    got = generate(ours, ids, mask, x, xm, num_beams=3, num_return_sequences=2, **common)
    assert got.sequences.tolist() == ref.sequences.tolist()
    assert torch.allclose(got.sequences_scores, ref.sequences_scores, atol=1e-5)
    uncached = generate(ours, ids, mask, x, xm, num_beams=3, num_return_sequences=2, use_cache=False, **common)
    assert uncached.sequences.tolist() == got.sequences.tolist()


def test_sampling_equals_hf_with_same_seed(opt_pair):
    hf, ours = opt_pair
    ids, mask = _batch()
    x, xm = _audio()
    kw = dict(max_new_tokens=8, do_sample=True, top_k=20, top_p=0.9, temperature=0.7, eos_token_id=None, pad_token_id=1)
    torch.manual_seed(123)
    ref = hf.generate(input_ids=ids, attention_mask=mask, **kw)
    torch.manual_seed(123)
    got = generate(ours, ids, mask, x, xm, seed=None, **kw)  # seed None: torch's global generator, as HF
    assert got.sequences.tolist() == ref.tolist()
    # top_k=1 sampling is greedy
    greedy = generate(ours, ids, mask, x, xm, max_new_tokens=8, eos_token_id=None)
    k1 = generate(ours, ids, mask, x, xm, max_new_tokens=8, eos_token_id=None, do_sample=True, top_k=1, seed=5)
    assert torch.equal(greedy.sequences, k1.sequences)
    with pytest.raises(ConfigError, match="temperature"):
        generate(ours, ids, mask, x, xm, max_new_tokens=2, do_sample=True, temperature=0.0)
    with pytest.raises(ConfigError, match="beam sampling"):
        generate(ours, ids, mask, x, xm, max_new_tokens=2, do_sample=True, num_beams=2)
    with pytest.raises(ConfigError, match="positions"):
        generate(ours, ids, mask, x, xm, max_new_tokens=60)  # 9 + 60 > 64 positions


# ------------------------------------------------------------------ the real tiny AF1 (open gates)
@pytest.fixture(scope="module")
def tiny():
    tok = load_af1_tokenizer(str(FIX / "tokenizer"))
    model = load_audio_flamingo(FIX / "checkpoint.pt", FIX / "config.json", tok)
    return model, tok, load_file(str(FIX / "cases.safetensors"))


def test_batched_prompts_with_different_audio_counts(tiny):
    """3-audio ICL prompt and 1-audio prompt in one left-padded batch == each alone."""
    model, tok, arr = tiny
    names = ["icl_caption_3audio", "caption_single"]
    feats = torch.cat([arr[f"{n}/audio_x"][0].view(-1, 4, 32) for n in names])  # (4 audios, W, D)
    masks = torch.cat([arr[f"{n}/audio_x_mask"][0].view(-1, 4) for n in names])
    pad_window = arr["inference_api_aqa_padded/audio_x"][0, -1]  # the fixtures' silence feature
    x, xm = pack_window_features([[0, 1, 2], [3]], feats, masks, pad_window, num_slots=3)
    ids, attn = tokenize_prompts(tok, [CASES[n]["prompt_text"] for n in names])
    assert attn[1, 0] == 0 and attn[0].all()  # left padding
    batched = generate(model, ids, attn, x, xm, max_new_tokens=8, eos_token_id=None)
    beams = generate(model, ids, attn, x, xm, max_new_tokens=6, num_beams=3, eos_token_id=None)
    with torch.no_grad():
        logits = model(ids, x, xm, attention_mask=attn).logits
    for b, n in enumerate(names):
        one_ids = torch.tensor([CASES[n]["input_ids"]])
        alone = generate(
            model, one_ids, None, x[b : b + 1], xm[b : b + 1], max_new_tokens=8, eos_token_id=None, use_cache=False
        )
        assert batched.new_tokens[b].tolist() == alone.new_tokens[0].tolist()
        alone_beam = generate(
            model,
            one_ids,
            None,
            x[b : b + 1],
            xm[b : b + 1],
            max_new_tokens=6,
            num_beams=3,
            eos_token_id=None,
            use_cache=False,
        )
        assert beams.new_tokens[b].tolist() == alone_beam.new_tokens[0].tolist()
        with torch.no_grad():
            one = model(one_ids, x[b : b + 1], xm[b : b + 1]).logits[0]
        assert (logits[b, -one.shape[0] :] - one).abs().max() < 1e-4
    with pytest.raises(ConfigError, match=r"rows \[0\] hold \[3\] <audio> tokens but only \[1\]"):
        generate(model, ids, attn, x[:, :4], xm[:, :4], max_new_tokens=1)
    # the 3-audio row keeps seeing all three audios while decoding
    assert [int(m[0].sum()) for m in batched.xattn_masks] == [12] * 8
    assert [int(m[1].sum()) for m in batched.xattn_masks] == [4] * 8


def test_generated_audio_token_opens_next_block(tiny):
    """A generated <audio> counts as media for the following tokens (cached == uncached)."""
    model, _, arr = tiny
    n = "inference_api_aqa_padded"  # the model emits <audio> (600) at step 3
    ids = arr[f"{n}/input_ids"]
    x = arr[f"{n}/audio_x"]
    xm = torch.ones_like(arr[f"{n}/audio_x_mask"])  # make slot 2 visible so the block change shows
    cached = generate(model, ids, None, x, xm, max_new_tokens=8, eos_token_id=None)
    uncached = generate(model, ids, None, x, xm, max_new_tokens=8, eos_token_id=None, use_cache=False)
    assert cached.new_tokens.tolist() == uncached.new_tokens.tolist()
    step = cached.new_tokens[0].tolist().index(600)
    seen = [int(m[0].sum()) for m in cached.xattn_masks]
    assert seen[: step + 1] == [4] * (step + 1) and seen[step + 1 :] == [8] * (7 - step)
    assert [int(m[0].sum()) for m in uncached.xattn_masks] == seen
    quirk = generate(model, ids, None, x, xm, max_new_tokens=8, eos_token_id=None, reference_cache_quirk=True)
    assert all(int(m[0].sum()) == 4 for m in quirk.xattn_masks)


# ------------------------------------------------------------------ raw audio
class TinyWindowEncoder(nn.Module):
    """A real (small) window encoder: frames audio into W windows, projects each with a Linear."""

    sample_rate = 800

    def __init__(self, dim=32, windows=4, window_len=400, hop=200):
        super().__init__()
        torch.manual_seed(3)
        self.proj = nn.Linear(window_len, dim)
        self.windows, self.window_len, self.hop = windows, window_len, hop
        self.encoded = 0  # waveforms run through the encoder

    @torch.no_grad()
    def window_features(self, waveforms):
        self.encoded += len(waveforms)
        feats = torch.zeros(len(waveforms), self.windows, self.proj.out_features)
        mask = torch.zeros(len(waveforms), self.windows)
        for i, w in enumerate(waveforms):
            w = torch.as_tensor(w, dtype=torch.float32)
            n = 1 if len(w) <= self.window_len else min(self.windows, 1 + -(-(len(w) - self.window_len) // self.hop))
            clips = torch.zeros(self.windows, self.window_len)
            for j in range(n):
                seg = w[j * self.hop : j * self.hop + self.window_len]
                clips[j, : len(seg)] = seg
            feats[i] = torch.tanh(self.proj(clips))
            mask[i, :n] = 1
        return feats, mask


def test_raw_audio_encoded_once_and_packed(tiny):
    model, tok, _ = tiny
    enc = TinyWindowEncoder()
    rng = np.random.default_rng(0)
    audios = [
        [rng.standard_normal(700).astype(np.float32) for _ in range(3)],
        [rng.standard_normal(300).astype(np.float32)],
    ]
    prompts = [CASES["icl_caption_3audio"]["prompt_text"], CASES["caption_single"]["prompt_text"]]
    ids, attn = tokenize_prompts(tok, prompts)
    out = generate(model, ids, attn, audios=audios, audio_encoder=enc, num_slots=3, num_beams=3, max_new_tokens=4)
    assert enc.encoded == 4 + 1  # each audio once (not per beam), plus one silent clip for padding
    x, xm = encode_prompt_audios(enc, audios, num_slots=3)
    assert x.shape == (2, 12, 32) and xm[0].tolist() == [1, 1, 1, 0] * 3 and xm[1].tolist() == [1, 0, 0, 0] + [0] * 8
    silent = enc.window_features([np.zeros(800, np.float32)])[0][0, 0]
    assert torch.allclose(x[1, 4:], silent.expand(8, 32))  # empty slots carry the silence feature
    ref = generate(model, ids, attn, x, xm, num_beams=3, max_new_tokens=4)
    assert torch.equal(out.sequences, ref.sequences)


@pytest.mark.slow
def test_clapcap_integration(tmp_path):
    """Raw 44.1 kHz audio -> the real clapcap encoder (random weights, released file format) ->
    a small AF1 with 1024-d audio input; equals feeding the packed features by hand."""
    clapcap = pytest.importorskip("rag_flamingo.encoders.clapcap")
    torch.manual_seed(0)
    ckpt = tmp_path / "clapcap_weights_2023.pth"
    torch.save({"model": clapcap.ClapcapAudioModel().state_dict()}, ckpt)
    enc = clapcap.ClapcapEncoder(checkpoint=str(ckpt), device="cpu", precision="fp32")
    cfg = AudioFlamingoConfig.from_json(FIX / "config.json")
    cfg.audio_embed_dim, cfg.windows_per_audio, cfg.max_num_media = 1024, 16, 32
    cfg.at_n_layers, cfg.at_d_inner = 1, 64
    model = AudioFlamingo(cfg).eval()
    with torch.no_grad():
        for layer in model.decoder.layers:
            layer.gated_cross_attn_layer.attn_gate.fill_(1.0)
    tok = load_af1_tokenizer(str(FIX / "tokenizer"))
    rng = np.random.default_rng(0)
    short, long = (rng.uniform(-0.5, 0.5, int(s * 44100)).astype(np.float32) for s in (2.0, 8.0))
    prompt = (
        "</s>Here are similar examples. <audio>describe the sound.\nanswer:<SEP>rain.<|endofchunk|>"
        "<audio>describe the sound.\nanswer:<SEP>"
    )
    ids, attn = tokenize_prompts(tok, [prompt])
    out = generate(model, ids, attn, audios=[[short, long]], audio_encoder=enc, num_slots=2, max_new_tokens=3)
    feats, masks = enc.window_features([short, long])
    assert masks.sum(1).tolist() == [1.0, 2.0]
    x, xm = pack_window_features([[0, 1]], feats, masks, enc.zero_window_feature(), num_slots=2)
    ref = generate(model, ids, attn, x, xm, max_new_tokens=3)
    assert torch.equal(out.sequences, ref.sequences)
    with torch.no_grad():
        a = model(ids, x, xm, attention_mask=attn).logits
        xm_wrong = xm.clone()
        xm_wrong[0, 16:] = 0  # hide the second audio: the logits after its <audio> must change
        b = model(ids, x, xm_wrong, attention_mask=attn).logits
    second = int((ids[0] == cfg.media_token_id).nonzero()[1])
    assert torch.allclose(a[0, :second], b[0, :second]) and not torch.allclose(a[0, second:], b[0, second:])


# ------------------------------------------------------------------ chat + post-processing
def test_chat_template_matches_reference_and_feeds_back_answers(tiny):
    model, tok, arr = tiny
    assert chat_prompt([("What do you hear in this audio?", None)]) == CASES["chat_dialog_1round"]["prompt_text"]
    two = chat_prompt([("q1", "a1"), ("q2", None)])
    assert (
        two
        == "</s>the task is dialog.<audio>user: q1 \nassistant: <SEP>a1<|endofchunk|></s>\nuser: q2 \nassistant: <SEP>"
    )
    n = "chat_dialog_1round"
    session = ChatSession(
        model,
        tok,
        arr[f"{n}/audio_x"],
        arr[f"{n}/audio_x_mask"],
        settings=GenerationSettings(max_new_tokens=8, num_beams=1),
    )
    first = session.ask("What do you hear in this audio?")
    assert first == CASES[n]["generation"]["nocache"]["af1_postprocessed_output"]  # no </s> in 8 steps
    second = session.ask("Anything else?")
    assert session.history == [("What do you hear in this audio?", first), ("Anything else?", second)]
    session.ask("3")
    session.ask("4")
    with pytest.raises(ConfigError):
        session.ask("5")


def test_streamer_gets_generates_tokens_in_order(tiny):
    """transformers' streamers see the new tokens as generate makes them: the same ids in the same
    order (greedy and sampling), and ChatSession.ask_stream ends on ask's answer."""
    from transformers.generation.streamers import BaseStreamer

    class Recorder(BaseStreamer):
        def __init__(self):
            self.puts: list[list[int]] = []

        def put(self, value):
            self.puts.append(value.reshape(-1).tolist())

        def end(self):
            pass

    model, tok, arr = tiny
    n = "icl_caption_3audio"
    ids, x, xm = arr[f"{n}/input_ids"], arr[f"{n}/audio_x"], arr[f"{n}/audio_x_mask"]
    for extra in ({}, {"do_sample": True, "seed": 3}):
        rec = Recorder()
        out = generate(model, ids, None, x, xm, max_new_tokens=8, eos_token_id=None, streamer=rec, **extra)
        assert rec.puts[0] == ids[0].tolist()  # the prompt first, then one token per step
        assert sum(rec.puts[1:], []) == out.new_tokens[0].tolist()
    settings = GenerationSettings(max_new_tokens=8)
    m = "chat_dialog_1round"
    streamed = list(ChatSession(model, tok, arr[f"{m}/audio_x"], arr[f"{m}/audio_x_mask"], settings).ask_stream("hi"))
    whole = ChatSession(model, tok, arr[f"{m}/audio_x"], arr[f"{m}/audio_x_mask"], settings).ask("hi")
    assert streamed[-1] == whole and all(whole.startswith(p) for p in streamed[:-1]) and len(streamed) > 2
    beams = GenerationSettings(max_new_tokens=8, num_beams=3)  # one sequence streams; beams are refused first
    with pytest.raises(ConfigError, match="num_beams=3 keeps several"):
        next(ChatSession(model, tok, arr[f"{m}/audio_x"], arr[f"{m}/audio_x_mask"], beams).ask_stream("hi"))


def test_model_generate_takes_audio_features_directly(tiny):
    """transformers' own ``model.generate(audio_features=..., audio_mask=...)`` (the README's Python API)
    decodes as our wrapper does, greedy and beam search."""
    model, _, arr = tiny
    n = "icl_caption_3audio"
    ids, x, xm = arr[f"{n}/input_ids"], arr[f"{n}/audio_x"], arr[f"{n}/audio_x_mask"]
    for beams in (1, 2):
        direct = model.generate(
            input_ids=ids, audio_features=x, audio_mask=xm, max_new_tokens=6, num_beams=beams, eos_token_id=[]
        )
        ours = generate(model, ids, None, x, xm, max_new_tokens=6, num_beams=beams, eos_token_id=None)
        assert torch.equal(direct, ours.sequences)


def test_postprocess_output():
    assert postprocess_output("</s></s>x<audio>q<SEP>a<SEP> dog barks<|endofchunk|></s><pad>") == " dog barks"
    assert postprocess_output("no sep</s>") == "no sep"


# ------------------------------------------------------------------ no deprecated transformers arguments
def test_decoding_emits_no_deprecation_warning(tiny, caplog, recwarn):
    """transformers deprecates OPTDecoderLayer's ``past_key_values`` (warning on every call): the
    model passes the KV cache under the current argument name."""
    model, _, arr = tiny
    n = "caption_single"
    caplog.set_level("WARNING")
    warnings.simplefilter("always")
    generate(model, arr[f"{n}/input_ids"], None, arr[f"{n}/audio_x"], arr[f"{n}/audio_x_mask"], max_new_tokens=3)
    said = [str(w.message) for w in recwarn] + [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "deprecat" in m.lower() or "past_key_values" in m], said
