"""The AF1 tokenizer and token-level helpers (as AF1 sets it up in
https://github.com/NVIDIA/audio-flamingo/blob/5ea6f6d6dc50b35f24d0362ef0c24680b5199414/foundation/src/factory.py).

OPT's GPT-2 BPE (``facebook/opt-iml-max-1.3b``: bos = eos = ``</s>`` = 2, pad = ``<pad>`` = 1,
``add_bos_token``) plus, in the reference order, ``<audio>`` and ``<|endofchunk|>`` as additional
special tokens and ``<SEP>`` as the sep token (50265, 50266, 50267 for OPT). Prompt strings start
with a literal ``</s>`` and the tokenizer prepends another: every sequence begins ``[2, 2, ...]``.
"""

from __future__ import annotations

import re

import torch

from ..checkpoints import load_pretrained
from ..errors import CheckpointError, ConfigError
from ..tokens import EOC_TOKEN, EOS, MEDIA_TOKEN, SEP_TOKEN
from .config import AF1_LM_ID, AudioFlamingoConfig


def load_af1_tokenizer(name_or_path: str = AF1_LM_ID, cache_dir: str | None = None):
    """AutoTokenizer from a local dir or hub id with AF1's three tokens added (idempotent). A hub
    id is read from the Hugging Face cache, else downloaded (offline: a CheckpointError at once)."""
    from transformers import AutoTokenizer

    tok = load_pretrained(name_or_path, AutoTokenizer.from_pretrained, f"tokenizer {name_or_path}", cache_dir=cache_dir)
    extra = [t for t in (MEDIA_TOKEN, EOC_TOKEN) if t not in tok.get_vocab()]
    if extra:
        tok.add_special_tokens({"additional_special_tokens": [MEDIA_TOKEN, EOC_TOKEN]})
    if tok.pad_token is None:  # not the case for OPT (pad exists), kept for fidelity with the reference
        tok.add_special_tokens({"pad_token": "<PAD>"})
    if tok.sep_token is None:
        tok.add_special_tokens({"sep_token": SEP_TOKEN})
    tok.padding_side = "left"  # decoder-only batched generation
    return tok


def af1_token_ids(tokenizer) -> dict[str, int]:
    """Ids as the reference computes them (``encode(tok)[-1]`` skips the automatic ``</s>``)."""
    return {
        "media_token_id": tokenizer.encode(MEDIA_TOKEN)[-1],
        "eoc_token_id": tokenizer.encode(EOC_TOKEN)[-1],
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def check_tokenizer(tokenizer, config: AudioFlamingoConfig) -> None:
    """Raise if the tokenizer's special ids or size disagree with the model config."""
    ids = af1_token_ids(tokenizer)
    wrong = [f"{k}={v} (model: {getattr(config, k)})" for k, v in ids.items() if v != getattr(config, k)]
    if len(tokenizer) != config.vocab_size:
        wrong.append(f"len(tokenizer)={len(tokenizer)} (model vocab: {config.vocab_size})")
    if wrong:
        raise CheckpointError(
            "tokenizer does not match the model: " + ", ".join(wrong) + ". Fix: build it with "
            "load_af1_tokenizer() from the same base tokenizer the checkpoint was trained with."
        )


def tokenize_prompts(tokenizer, prompts: list[str], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Finished prompt strings -> left-padded ``input_ids``, ``attention_mask`` (B, T)."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(
            prompts, padding="longest", truncation=max_length is not None, max_length=max_length, return_tensors="pt"
        )
    finally:
        tokenizer.padding_side = side
    if max_length is not None and int(enc["attention_mask"].sum(1).max()) >= max_length:
        # left truncation would silently cut the head of the prompt (incl. <audio> tokens)
        long = [i for i, m in enumerate(enc["attention_mask"].sum(1).tolist()) if m >= max_length]
        raise ConfigError(f"prompts {long} reach max_length={max_length} tokens; shorten them (fewer shots)")
    return enc["input_ids"], enc["attention_mask"]


_REMOVE = (EOS, "<pad>", EOC_TOKEN)


def postprocess_output(text: str) -> str:
    """AF1 post-processing: text after the last ``<SEP>``, with ``</s>``, ``<pad>``,
    ``<|endofchunk|>`` removed (no strip, no lowercasing: exactly the reference)."""
    out = text.split(SEP_TOKEN)[-1]
    return re.sub("|".join(re.escape(t) for t in _REMOVE), "", out)
