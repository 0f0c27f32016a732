"""Raw audio -> the (B, L, D) window-feature layout the model consumes.

Layout (AF1's foundation/data/data.py): audio ``i`` of a prompt (shots first, query last) owns windows
``[i*W, (i+1)*W)`` with its real windows first; unused windows of an audio and unused audio slots
are padding. Padding windows carry the encoder's feature of a silent window (the reference pads
with zero clips that go through CLAP) and have mask 0: the audio transformer still sees them
(unmasked self-attention, as in the reference), the cross-attention does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class WindowFeatureEncoder(Protocol):
    """What the model needs from an audio encoder (e.g. `rag_flamingo.encoders.clapcap`)."""

    sample_rate: int

    def window_features(self, waveforms: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """N mono waveforms -> features (N, W, D) float, mask (N, W) (1 = real window)."""
        ...


@runtime_checkable
class HasZeroWindowFeature(Protocol):
    """An encoder that knows its silent-window feature without running (clapcap)."""

    def zero_window_feature(self) -> torch.Tensor:
        """(D,) or (W, D): the feature of a silent window."""
        ...


def silence_features(encoder: WindowFeatureEncoder) -> torch.Tensor:
    """(D,) or (W, D) padding feature: the encoder's ``zero_window_feature()`` when it has one
    (clapcap), else the features of one second of silence (every window = encoder(zero clip))."""
    if isinstance(encoder, HasZeroWindowFeature):
        return encoder.zero_window_feature()
    feats, _ = encoder.window_features([np.zeros(encoder.sample_rate, dtype=np.float32)])
    return feats[0]


def pack_window_features(
    per_prompt: Sequence[Sequence[int]],
    features: torch.Tensor,
    masks: torch.Tensor,
    pad_window: torch.Tensor,
    num_slots: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack per-audio windows into (B, num_slots*W, D) features and (B, num_slots*W) mask.

    ``per_prompt[b]`` lists the indices (into ``features``/``masks``, (N, W, D)/(N, W)) of prompt
    b's audios in prompt order. ``pad_window`` (D,) or (W, D) fills unused slots. ``num_slots``
    defaults to the largest number of audios in the batch; the reference pads every sample to
    ``max_num_fewshot`` slots (8 for the foundation model), which changes the audio transformer's
    outputs, so pass it to match.
    """
    n, w, d = features.shape
    most = max((len(idx) for idx in per_prompt), default=0)
    slots = most if num_slots is None else num_slots
    if most > slots:
        raise ValueError(f"a prompt has {most} audios but only {slots} audio slots are available")
    pad = pad_window.to(features.dtype).expand(w, d)  # (D,) broadcast or (W, D) as is
    out = pad.repeat(len(per_prompt), slots, 1)
    out_mask = torch.zeros(len(per_prompt), slots * w, dtype=torch.float32)
    for b, idx in enumerate(per_prompt):
        for slot, i in enumerate(idx):
            out[b, slot * w : (slot + 1) * w] = features[i]
            out_mask[b, slot * w : (slot + 1) * w] = masks[i].float()
    return out, out_mask


def encode_prompt_audios(
    encoder: WindowFeatureEncoder,
    audios: Sequence[Sequence[np.ndarray]],
    num_slots: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode every audio of every prompt exactly once (one ``window_features`` call) and pack."""
    flat = [wav for prompt in audios for wav in prompt]
    per_prompt, start = [], 0
    for prompt in audios:
        per_prompt.append(list(range(start, start + len(prompt))))
        start += len(prompt)
    feats, masks = encoder.window_features(flat)
    return pack_window_features(per_prompt, feats, masks, silence_features(encoder), num_slots)
