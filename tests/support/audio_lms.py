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
"""

from __future__ import annotations

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

KINDS = ("af3", "music_flamingo", "qwen2_audio")


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
    """A local model directory like the hub repository of ``kind`` (``model.checkpoint=<it>``)."""
    model, processor = build(kind, seed)
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
