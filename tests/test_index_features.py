"""The feature cache writer: rows aligned with the shards, undecodable items masked, empty shards kept.

The real clapcap class with random weights saved in the released format; real wav files on disk.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from rag_flamingo.audio import load_audio
from rag_flamingo.encoders.clapcap import ClapcapAudioModel, ClapcapEncoder
from rag_flamingo.indexing.features import write_feature_shards
from rag_flamingo.store.features import FeatureCache, features_path
from rag_flamingo.store.items import item_record
from rag_flamingo.store.shards import write_shard


@pytest.mark.slow
def test_feature_shards_mask_undecodable_items_and_keep_empty_shards(tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "clapcap_weights_2023.pth"
    torch.save({"model": ClapcapAudioModel().state_dict()}, ckpt)
    encoder = ClapcapEncoder(checkpoint=str(ckpt), device="cpu")
    audio = tmp_path / "audio"
    audio.mkdir()
    t = np.arange(44100) / 44100
    sf.write(audio / "a.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44100)
    root = tmp_path / "store"
    # shard 0: a decodable item, then one whose file went away after the build; shard 1: all rejected
    items = [{"id": "a", "path": "a.wav"}, {"id": "gone", "path": "gone.wav"}]
    write_shard(root, 0, np.zeros((2, 4), np.float32), [item_record(it) for it in items])
    write_shard(root, 1, np.zeros((0, 4), np.float32), [], rejected=[{"id": "bad", "reason": "silent"}])

    described = write_feature_shards(
        root, "clapcap", encoder, {0: audio, 1: audio}, batch_size=4, num_workers=0, progress=False
    )
    assert (described.windows, described.dim, described.dtype) == (16, 1024, "float32")
    assert described.fingerprint == encoder.fingerprint()
    cache = FeatureCache(root, "clapcap")
    assert cache.count == 2
    feats, mask = cache.get([0, 1])
    want_f, want_m = encoder.window_features([load_audio(audio / "a.wav", 44100, max_seconds=33.25)])
    np.testing.assert_array_equal(mask[0], want_m.numpy()[0])
    np.testing.assert_allclose(feats[0], want_f.numpy()[0], atol=1e-5)
    assert not mask[1].any() and not feats[1].any()  # the missing file: all windows masked out
    from safetensors.numpy import load_file

    assert load_file(features_path(root, "clapcap", 1))["features"].shape == (0, 16, 1024)
    # a rerun has nothing to write and describes the cache from the files
    assert write_feature_shards(root, "clapcap", encoder, {0: audio, 1: audio}, 4, 0, progress=False) == described
