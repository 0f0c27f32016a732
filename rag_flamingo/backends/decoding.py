"""Our decoding, never the checkpoint's: the transformers backends' explicit generation config.

``model.generate(generation_config=...)`` fills every setting the given config leaves unset from the
checkpoint's ``generation_config.json`` (transformers 5: values left None; 4.x: the same through
``model.generation_config``). A converted checkpoint's config can carry decoding choices of its own:
AF3's sets ``repetition_penalty: 1.05``, which penalises copying a shot's label, the very thing
in-context examples are for. So `explicit_generation`:

- builds one ``GenerationConfig`` from ``model.generation`` (`GenerationSettings`: greedy by
  default) with every logits processor the library knows set to its neutral value
  (``NEUTRAL``: repetition penalty 1.0, no n-gram blocking, no typical/epsilon/eta cutoffs, ...);
- replaces ``model.generation_config`` by one holding only the checkpoint's token ids (BOS, EOS,
  pad, decoder start: which tokens end an answer is the checkpoint's, not a decoding choice), so
  nothing of the checkpoint's decoding can fill a gap;
- returns what was decided: ``effective`` (the config ``generate`` gets, every setting named) and
  ``checkpoint_ignored`` (the checkpoint's decoding settings that do not apply), for run.json.
"""

from __future__ import annotations

from typing import Any

from ..model.generation_settings import GenerationSettings

TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")

# every logits processor / stopping rule of transformers' generate, at its neutral value
NEUTRAL: dict[str, Any] = {
    "min_length": 0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "renormalize_logits": False,
    "remove_invalid_values": False,
    "output_scores": False,
    "return_dict_in_generate": False,
}


def ours(settings: GenerationSettings) -> dict[str, Any]:
    """The settings of ``model.generation`` in ``generate``'s names (sampling knobs only when sampling)."""
    out: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "num_beams": settings.num_beams,
        "do_sample": settings.do_sample,
        "length_penalty": settings.length_penalty,
        "early_stopping": settings.early_stopping,
        "use_cache": settings.use_cache,
        "num_return_sequences": settings.num_return_sequences,
    }
    # greedy/beam: the sampling knobs at the library's defaults, which generate ignores without sampling
    out.update(
        {"top_k": settings.top_k, "top_p": settings.top_p, "temperature": settings.temperature}
        if settings.do_sample
        else {"top_k": 50, "top_p": 1.0, "temperature": 1.0}
    )
    return out


def explicit_generation(model, settings: GenerationSettings, tokenizer) -> tuple[Any, dict]:
    """(the ``GenerationConfig`` to pass to ``generate``, ``{"effective", "checkpoint_ignored"}``);
    ``model.generation_config`` is left holding only the checkpoint's token ids."""
    from transformers import GenerationConfig

    checkpoint = model.generation_config
    tokens = {k: getattr(checkpoint, k, None) for k in TOKEN_IDS}
    if tokens["pad_token_id"] is None:
        pad = tokenizer.pad_token_id
        tokens["pad_token_id"] = pad if pad is not None else tokens["eos_token_id"] or tokenizer.eos_token_id
    if tokens["eos_token_id"] is None:
        tokens["eos_token_id"] = tokenizer.eos_token_id
    kept = {k: v for k, v in tokens.items() if v is not None}
    values = {**NEUTRAL, **ours(settings), **kept}
    config = GenerationConfig(**values)
    declared = checkpoint.to_diff_dict() if hasattr(checkpoint, "to_diff_dict") else checkpoint.to_dict()
    meta = {*TOKEN_IDS, "transformers_version"}

    def matters(k: str, v: Any) -> bool:  # a decoding setting of the checkpoint's that is not ours
        unset = k not in values and v in (None, False)
        return k not in meta and not k.startswith("_") and values.get(k) != v and not unset

    ignored = {k: v for k, v in declared.items() if matters(k, v)}
    model.generation_config = GenerationConfig(**kept)
    return config, {"effective": dict(sorted(values.items())), "checkpoint_ignored": ignored}
