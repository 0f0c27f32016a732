"""``encoder.runtime`` for the CLAP encoders (LAION-CLAP, MS-CLAP, clapcap): the OpenVINO path against
torch fp32, its graph cache, and the refusal of the option by the encoders that run in torch only.

The real model classes with random weights at a reduced HTS-AT size (width 16, depths 2/2/1/1: the
same stages, shifted windows and token grouping as the released sizes; converting the released size
takes ~20 s a network here), saved in the released checkpoint formats. Their batch norms are
calibrated on the test clips (as trained weights have real statistics), so distinct clips embed
apart and a parity check cannot pass on collapsed embeddings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rag_flamingo.encoders.base import build_encoder
from rag_flamingo.encoders.htsat import HTSATConfig
from rag_flamingo.errors import ConfigError
from rag_flamingo.store.records import comparable_fingerprint
from support.openvino_child import in_child, run_child_tests
from support.signals import chirp

SMALL = dict(embed_dim=16, depths=(2, 2, 1, 1), window_size=256)  # window_size: the frontend's n_fft
COS_MIN, MAX_ABS = 0.9999, 1e-4


def test_openvino_clap_tests_run_in_their_own_process():
    run_child_tests(__file__, 3)


def test_encoders_without_the_option_refuse_runtime_in_one_line():
    with pytest.raises(ConfigError) as err:
        build_encoder("hf_clap_fused", runtime="openvino")
    message = str(err.value)
    assert "\n" not in message and "did you mean" not in message
    assert message.startswith("encoder hf_clap_fused runs in torch only: it takes no option 'runtime'")
    for name in ("aisfx", "clapcap", "laion_clap", "laion_clap_fusion", "ms_clap_2022", "ms_clap_2023"):
        assert name in message


def test_the_command_line_refuses_runtime_for_such_an_encoder_in_its_words(tmp_path, capsys):
    """encoder.runtime on an encoder whose config lacks it: the encoder's own refusal, not an unknown
    key with a did-you-mean of another setting."""
    from index_builder.cli import main as build_index

    args = ["dataset=folder", f"dataset.root={tmp_path}", f"store={tmp_path / 's'}", "encoder=hf_clap_fused"]
    assert build_index([*args, "encoder.runtime=openvino"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "encoder hf_clap_fused runs in torch only" in err[0], err
    assert build_index([*args[:-1], "encoder=aisfx", "encoder.runtme=openvino"]) == 2
    assert "encoder aisfx has no option 'runtme' (did you mean 'runtime'?)" in capsys.readouterr().err


def calibrate_(model: torch.nn.Module, run) -> torch.nn.Module:
    """Batch-norm statistics from the test clips: ``run()`` forwards them through ``model`` in train mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # the plain average over the calibration batch
    model.train()
    with torch.no_grad():
        run()
    return model.eval()


def assert_parity(got: np.ndarray, want: np.ndarray) -> None:
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= COS_MIN and np.abs(got - want).max() <= MAX_ABS, (cos.min(), np.abs(got - want).max())
    assert (want @ want.T).min() < 0.99  # distinct clips embed apart: the checks above can fail


def no_conversion(*args, **kwargs):
    raise AssertionError("converted again")


# ----------------------------------------------------------------------------- LAION-CLAP


def save_laion(path: Path, text_dir: Path, fusion: bool, seed: int) -> Path:
    from transformers import RobertaConfig

    from rag_flamingo.encoders.laion_clap import LaionClapConfig, LaionClapModel
    from rag_flamingo.encoders.laion_fusion import fusion_input

    torch.manual_seed(seed)
    model = LaionClapModel(
        LaionClapConfig("HTSAT-test", fusion, long_audio="fusion" if fusion else "mean"),
        RobertaConfig.from_pretrained(text_dir),
    )
    waves = [torch.from_numpy(chirp(s, 48000, seed=i)) for i, s in enumerate((10.0, 23.0))]
    if fusion:
        assert model.fusion_mel is not None
        items = [fusion_input(w, model.fusion_mel) for w in waves]
        mel, longer = torch.stack([m for m, _ in items]), torch.tensor([lg for _, lg in items])

        def run():  # the AFF's batch norms see one pooled row at a time: left at their defaults
            model.audio_branch.patch_embed.fusion_model.eval()
            model.embed_fusion(mel, longer)

        calibrate_(model, run)
    else:
        calibrate_(model, lambda: model.embed_waveforms(torch.stack([w[:480000] for w in waves])))
    torch.save({"state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> Path:
    from oracles.laion import make_hub_standins

    return make_hub_standins(tmp_path_factory.mktemp("hub")) / "roberta-base"


@in_child
@pytest.mark.parametrize("fusion", [False, True])
def test_child_laion_clap_openvino_matches_torch_and_caches_its_graph(tmp_path, monkeypatch, text_dir, fusion):
    from rag_flamingo.encoders import laion_clap, runtime

    monkeypatch.setitem(laion_clap.AMODELS, "HTSAT-test", HTSATConfig(**(laion_clap.LAION_AUDIO | SMALL)))
    (tmp_path / "ckpt").mkdir()
    ckpt = save_laion(tmp_path / "ckpt" / "clap.pt", text_dir, fusion, seed=0)
    waves = [
        chirp(s, 48000, seed=i) for i, s in enumerate((3.0, 23.0 if fusion else 12.5))
    ]  # short; fused or 2 windows

    def build(runtime_name: str):
        return laion_clap.load_laion_clap(
            checkpoint=str(ckpt),
            text_model=str(text_dir),
            amodel="HTSAT-test",
            enable_fusion=fusion,
            device="cpu",
            runtime=runtime_name,
            precision="fp32",
            batch_size=2,
        )

    ref, ov = build("torch"), build("openvino")
    assert_parity(ov.embed(waves), ref.embed(waves))
    assert ov.fingerprint()["runtime"] == "openvino" and ref.fingerprint()["runtime"] == "torch"
    assert comparable_fingerprint(ov.fingerprint()) == comparable_fingerprint(ref.fingerprint())
    graph = ov.model.head.path
    assert graph.parent == ckpt.parent / "clap.pt.graphs" and ov.fingerprint()["checkpoint_sha256"][:16] in graph.name
    if fusion:
        return
    import openvino

    with monkeypatch.context() as m:  # the same checkpoint and runtime: read back, not converted
        m.setattr(openvino, "convert_model", no_conversion)
        again = build("openvino")
    assert again.model.head.path == graph
    first = again.embed(waves)
    np.testing.assert_array_equal(again.embed(waves), first)  # deterministic
    np.testing.assert_array_equal(again.embed(waves[::-1])[::-1], first)  # whatever else is in the call
    np.testing.assert_allclose(first, ov.embed(waves), atol=1e-6)  # the graph read back
    save_laion(ckpt, text_dir, fusion, seed=1)  # another checkpoint at the same path: another graph
    changed = build("openvino")
    assert changed.model.head.path != graph and runtime.graph_dirs(ckpt)[0] == graph.parent
    assert_parity(changed.embed(waves), build("torch").embed(waves))


# ----------------------------------------------------------------------------- MS-CLAP and clapcap


@in_child
def test_child_ms_clap_and_clapcap_openvino_match_torch(tmp_path, monkeypatch):
    from rag_flamingo.encoders.clapcap import ClapcapAudioModel, ClapcapEncoder
    from rag_flamingo.encoders.ms_clap import MSCLAP_2023, MSClapEncoder, MSClapModel

    config = replace(MSCLAP_2023, htsat=HTSATConfig(**SMALL), out_emb=128, d_proj=64)
    calibration = torch.from_numpy(np.stack([chirp(7.0, seed=i) for i in range(2)]))
    waves = [chirp(s, seed=i) for i, s in enumerate((2.0, 9.5))]  # one window; two (MS-CLAP), three (clapcap)

    torch.manual_seed(0)
    ms = MSClapModel(config)
    calibrate_(ms, lambda: ms.audio_encoder(calibration))
    torch.save({"model": ms.state_dict()}, tmp_path / "CLAP_weights_2023.pth")
    options = dict(checkpoint=str(tmp_path / "CLAP_weights_2023.pth"), with_text=False, batch_size=2, device="cpu")
    ref = MSClapEncoder(config, runtime="torch", precision="fp32", **options)
    ov = MSClapEncoder(config, runtime="openvino", precision="fp32", **options)
    assert_parity(ov.embed(waves), ref.embed(waves))
    assert ov.fingerprint()["runtime"] == "openvino"
    assert comparable_fingerprint(ov.fingerprint()) == comparable_fingerprint(ref.fingerprint())

    torch.manual_seed(1)
    cap = ClapcapAudioModel(config)
    calibrate_(cap, lambda: cap(calibration))
    torch.save({"model": cap.state_dict()}, tmp_path / "clapcap_weights_2023.pth")
    options = dict(checkpoint=str(tmp_path / "clapcap_weights_2023.pth"), batch_size=2, device="cpu", config=config)
    ref_cap = ClapcapEncoder(runtime="torch", precision="fp32", **options)
    ov_cap = ClapcapEncoder(runtime="openvino", precision="fp32", **options)
    assert_parity(ov_cap.embed(waves), ref_cap.embed(waves))
    features, mask = ov_cap.window_features(waves)  # AF1's model input: every window, padding ones too
    want, _ = ref_cap.window_features(waves)
    assert torch.nn.functional.cosine_similarity(features, want, dim=-1).min() >= COS_MIN
    assert (features - want).abs().max() <= MAX_ABS
