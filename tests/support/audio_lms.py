"""Tiny random-weight audio-language models of the real transformers classes, saved as their hub
repositories are (``save_pretrained``: config, safetensors weights, tokenizer, feature extractor,
processor and chat template), so tests load them through the backend as a user loads the hub model.

Each has the real special tokens of its model (``<|im_start|>``/``<|im_end|>`` of Qwen, AF3's
``<sound>``, Music Flamingo's ``<|sound_bos|>``/``<|sound_eos|>``, Qwen2-Audio's ``<|AUDIO|>``,
``<|audio_bos|>``, ``<|audio_eos|>``) in a small byte-level BPE vocabulary, 128-bin Whisper features
at 16 kHz, and the chat template of the released processor: AF3's and Music Flamingo's as
transformers' conversion script writes it
(https://github.com/huggingface/transformers/blob/e618a076c75e2e9ed10bdd039dce2892df5b593f/src/transformers/models/audioflamingo3/convert_audioflamingo3_to_hf.py),
Qwen2-Audio's the processor's ``default_chat_template`` (the template of Qwen2-Audio-7B-Instruct).

Voxtral's repository holds no tokenizer.json but Mistral's ``tekken.json`` (a tiktoken-style BPE:
base64 byte tokens by rank, the special tokens by id, the audio settings), which transformers
converts on load without mistral-common. The tiny one has the real layout: 1000 special ids, the
named ones at their ids in Voxtral-Mini-3B-2507 (``<s>`` 1, ``</s>`` 2, ``[INST]`` 3, ``[/INST]`` 4,
``<pad>`` 11, ``[AUDIO]`` 24, ``[BEGIN_AUDIO]`` 25, ``[TRANSCRIBE]`` 34: ``VoxtralProcessor`` fixes
``[AUDIO]`` at 24), tekken's split pattern, its 16 kHz / 12.5 Hz audio settings with 30 s chunks,
then the 256 bytes and merges learnt from the corpus below.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import torch

SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<sound>",
    "<|sound_bos|>",
    "<|sound_eos|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
]
CORPUS = [
    "You are a helpful assistant. Here are similar examples. The task is event classification. ",
    "classify this sound. Answer: OPTIONS: user assistant system Audio 1: 2: 3: 4: 5:",
    "what is the genre of this music? describe the sound in a sentence. please answer this question:",
    "dog bark rain siren whistle hum clicks noise tone chirp beep engine yes no a b c d e",
]

AF3_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "{% for m in messages if m['content'] is not none %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}"
    "{{ m['content'] }}"
    "{% else %}"
    "{% set audio = namespace(found=False) %}"
    "{% set text_buf = namespace(v='') %}"
    "{% for c in m['content'] %}"
    "{% if c.get('type') == 'audio' or 'audio' in c %}"
    "{% set audio.found = True %}"
    "{% elif c.get('type') == 'text' or 'text' in c %}"
    "{% set text_buf.v = text_buf.v + c['text'] %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if audio.found %}{{ '<sound>' }}{% endif %}{{ text_buf.v }}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

KINDS = ("af3", "music_flamingo", "qwen2_audio", "voxtral")

# tekken's pre-tokenizer split (the pattern of every released tekken.json)
TEKKEN_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
    r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# the named special tokens of Voxtral-Mini-3B-2507's tekken.json by id; the other ids below 1000 are fillers
TEKKEN_SPECIAL = {
    0: "<unk>",
    1: "<s>",
    2: "</s>",
    3: "[INST]",
    4: "[/INST]",
    5: "[AVAILABLE_TOOLS]",
    6: "[/AVAILABLE_TOOLS]",
    7: "[TOOL_RESULTS]",
    8: "[/TOOL_RESULTS]",
    9: "[TOOL_CALLS]",
    10: "[IMG]",
    11: "<pad>",
    12: "[IMG_BREAK]",
    13: "[IMG_END]",
    14: "[PREFIX]",
    15: "[MIDDLE]",
    16: "[SUFFIX]",
    17: "[SYSTEM_PROMPT]",
    18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]",
    24: "[AUDIO]",
    25: "[BEGIN_AUDIO]",
    34: "[TRANSCRIBE]",
}
TEKKEN_SPECIAL_IDS = 1000


def tiny_tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 4, vocab_size=400, min_frequency=1, special_tokens=SPECIAL)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL[1:],
    )


def tiny_tekken() -> dict:
    """A tekken.json (Mistral's tokenizer file) with a small vocabulary: the 256 bytes, then the
    merges a byte-level BPE learns from the corpus, ranked in merge order (tiktoken's ranks)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 4, vocab_size=400, min_frequency=1)
    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    tokens = [bytes([b]) for b in range(256)]
    for merge in json.loads(bpe._tokenizer.to_str())["model"]["merges"]:
        left, right = merge if isinstance(merge, list) else merge.split(" ")
        token = bytes(to_byte[c] for c in left + right)
        if token not in tokens:
            tokens.append(token)
    named = max(TEKKEN_SPECIAL) + 1
    return {
        "config": {
            "pattern": TEKKEN_PATTERN,
            "num_vocab_tokens": len(tokens),
            "default_vocab_size": TEKKEN_SPECIAL_IDS + len(tokens),
            "default_num_special_tokens": TEKKEN_SPECIAL_IDS,
            "version": "v7",
        },
        "vocab": [
            {"rank": i, "token_bytes": base64.b64encode(t).decode(), "token_str": t.decode("utf-8", "replace")}
            for i, t in enumerate(tokens)
        ],
        "special_tokens": [
            {"rank": i, "token_str": TEKKEN_SPECIAL.get(i, f"<SPECIAL_{i}>"), "is_control": True} for i in range(named)
        ],
        "audio": {
            "sampling_rate": 16000,
            "frame_rate": 12.5,
            "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
            "chunk_length_s": 30.0,
        },
    }


def build_voxtral(folder: Path, seed: int = 0) -> tuple[Any, Any]:
    """(model, processor) of a tiny Voxtral whose tokenizer is ``folder``/tekken.json (written here),
    loaded as transformers loads Voxtral's (converted from tekken.json, no mistral-common)."""
    import transformers as tf

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tekken.json").write_text(json.dumps(tiny_tekken()))
    tok = tf.TokenizersBackend.from_pretrained(str(folder))
    processor = tf.VoxtralProcessor(tf.WhisperFeatureExtractor(feature_size=128), tok)
    torch.manual_seed(seed)
    config = tf.VoxtralConfig(
        audio_config=dict(
            model_type="voxtral_encoder",
            hidden_size=32,
            intermediate_size=128,  # 4 encoder frames per audio token, as Voxtral's 1280 -> 5120
            num_hidden_layers=2,
            num_attention_heads=2,
        ),
        text_config={**_text_config(len(tok)), "model_type": "llama", "head_dim": 8, "max_position_embeddings": 8192},
        audio_token_id=24,
    )
    model = tf.VoxtralForConditionalGeneration(config)
    model.generation_config.bos_token_id = 1  # Voxtral-Mini-3B-2507's generation_config.json
    model.generation_config.eos_token_id = 2
    model.generation_config.pad_token_id = 11
    return model.eval(), processor


def _text_config(vocab: int) -> dict:
    return dict(
        model_type="qwen2",
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
    )


def _encoder_config() -> dict:
    return dict(
        model_type="audioflamingo3_encoder",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )


def build(kind: str, seed: int = 0) -> tuple[Any, Any]:
    """(model, processor) of ``kind`` with random weights."""
    import transformers as tf

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    features = tf.WhisperFeatureExtractor(feature_size=128, return_attention_mask=True)
    vocab = len(tok)
    model: Any
    processor: Any
    config: Any
    if kind == "af3":
        processor = tf.AudioFlamingo3Processor(features, tok, chat_template=AF3_CHAT_TEMPLATE)
        config = tf.AudioFlamingo3Config(
            audio_config=_encoder_config(),
            text_config=_text_config(vocab),
            audio_token_id=tok.convert_tokens_to_ids("<sound>"),
        )
        model = tf.AudioFlamingo3ForConditionalGeneration(config)
    elif kind == "music_flamingo":
        processor = tf.MusicFlamingoProcessor(features, tok, chat_template=AF3_CHAT_TEMPLATE)
        config = tf.MusicFlamingoConfig(
            audio_config=_encoder_config(),
            text_config=_text_config(vocab),
            audio_token_id=tok.convert_tokens_to_ids("<sound>"),
            audio_bos_token_id=tok.convert_tokens_to_ids("<|sound_bos|>"),
            audio_eos_token_id=tok.convert_tokens_to_ids("<|sound_eos|>"),
        )
        model = tf.MusicFlamingoForConditionalGeneration(config)
    elif kind == "qwen2_audio":
        processor = tf.Qwen2AudioProcessor(features, tok)  # its default chat template
        config = tf.Qwen2AudioConfig(
            audio_config=dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64),
            text_config=_text_config(vocab),
            audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
        )
        model = tf.Qwen2AudioForConditionalGeneration(config)
    else:
        raise ValueError(kind)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval(), processor


def save_tiny(kind: str, out: Path, seed: int = 0) -> Path:
    """A local model directory like the hub repository of ``kind`` (``model.checkpoint=<it>``):
    Voxtral's with tekken.json and the feature extractor's preprocessor_config.json, no tokenizer.json."""
    out = Path(out)
    if kind == "voxtral":
        model, processor = build_voxtral(out, seed)
        model.save_pretrained(out)
        processor.feature_extractor.save_pretrained(out)
        return out
    model, processor = build(kind, seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def audio_lm_store(folder: Path) -> dict:
    """The demo set and a store of its train split (shot audio decoded from the rows' absolute paths)
    plus one row whose file is gone after indexing (a shot that cannot be decoded): what the
    transformers-backend tests start from."""
    import numpy as np

    from rag_flamingo.datasets import demo
    from rag_flamingo.datasets.manifest import read_manifest

    from .engine import TinyWindowEncoder, build_store, embed_rows

    root = demo.ensure_demo()
    train = [{**r, "path": str(root / r["path"])} for r in read_manifest(root / "train.jsonl")]
    test = read_manifest(root / "test.jsonl")
    enc = TinyWindowEncoder()
    embeddings = embed_rows(enc, train, root)
    gone = {**train[0], "id": "train/gone", "path": str(root / "audio" / "gone.wav")}
    store = build_store(
        folder, train + [gone], np.concatenate([embeddings, embeddings[:1]]), enc.fingerprint(), features=False
    )
    return dict(root=root, enc=enc, store=store, test=test)
