"""The preflight (`rag_flamingo.preflight`, ``--check``): every artifact a command line needs, all at
once, with the command that fetches each, before any work and without writing anything."""

from __future__ import annotations

from pathlib import Path

from index_builder.cli import main as build_index
from rag_flamingo.classify import main as rag_classify
from rag_flamingo.evaluate import main as evaluate


def _rows(out: str) -> dict[str, list[str]]:
    """The --check table's rows by artifact."""
    rows = [line.strip("|").split(" | ") for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_a_real_weights_run_lists_every_download_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    argv = ["dataset=esc50", "predictor=knn,flamingo", "shots=0,7", f"cache_root={cache}"]
    assert evaluate(["--check", *argv]) == 2
    out, err = capsys.readouterr()
    rows = _rows(out)
    assert {what: cells[1] for what, cells in rows.items()} == {
        "index store (store=)": "MISSING",
        "dataset esc50 manifest (test)": "MISSING",
        "retrieval encoder aisfx weights": "present",
        "AF1 checkpoint (model.checkpoint)": "MISSING",
        "OPT config + tokenizer (model.lm, model.tokenizer)": "MISSING",
        "AF1 window encoder clapcap weights": "MISSING",
    }
    store = cache / "indices" / "esc50-train-aisfx"
    assert rows["index store (store=)"][2] == f"build_index dataset=esc50 encoder=aisfx features=clapcap store={store}"
    assert rows["AF1 checkpoint (model.checkpoint)"][2] == "hf download nvidia/audio-flamingo foundation.pt"
    assert rows["AF1 window encoder clapcap weights"][2] == "hf download microsoft/msclap clapcap_weights_2023.pth"
    assert "python -m index_builder.manifests esc50 --metadata" in rows["dataset esc50 manifest (test)"][2]
    assert err.strip() == "evaluate: error: 5 artifacts missing; each row above names the command that fetches it"
    # without --check the run stops before any work on one line naming all five
    assert evaluate(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evaluate: error: 5 missing") and "[5] AF1 window encoder" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written: no cache, no outputs


def test_local_files_count_and_a_store_without_the_model_features_says_how_to_add_them(folder_stores, tmp_path, capsys):
    ckpt, opt = tmp_path / "foundation.pt", tmp_path / "opt"
    ckpt.write_bytes(b"x")
    opt.mkdir()
    store = folder_stores / "train_idx"
    argv = [
        f"store={store}",
        f"audio={folder_stores / 'test'}",
        "predictor=flamingo",
        f"model.checkpoint.path={ckpt}",
        f"model.lm={opt}",
        f"model.tokenizer={opt}",
        f"model.audio_encoder.checkpoint={tmp_path / 'missing_clapcap.pth'}",
    ]
    assert rag_classify(["--check", *argv]) == 2
    rows = _rows(capsys.readouterr().out)
    assert (
        rows["index store (store=)"][1] == "present" and rows["AF1 checkpoint (model.checkpoint.path)"][1] == "present"
    )
    assert rows["OPT config + tokenizer (model.lm, model.tokenizer)"][1] == "present"
    assert rows["store's cached clapcap shot features"] == [
        str(store),
        "MISSING",
        f"build_index store={store} mode=features features=clapcap",
    ]
    clapcap = rows["AF1 window encoder clapcap weights (model.audio_encoder.checkpoint)"]
    assert clapcap[1] == "MISSING" and clapcap[2].startswith("hf download microsoft/msclap clapcap_weights_2023.pth")


def test_build_index_checks_the_features_encoder_before_embedding(folder_stores, tmp_path, capsys):
    out = tmp_path / "store"
    argv = ["dataset=folder", f"dataset.root={folder_stores / 'train'}", f"store={out}", "features=clapcap"]
    assert build_index(["--check", *argv]) == 2
    rows = _rows(capsys.readouterr().out)
    assert rows["dataset folder (dataset.root)"][1] == "present"
    assert rows["features encoder clapcap weights"][1:] == [
        "MISSING",
        "hf download microsoft/msclap clapcap_weights_2023.pth",
    ]
    assert build_index(argv) == 2
    assert "features encoder clapcap weights" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was embedded
    assert build_index(["--check", "dataset=folder", f"dataset.root={folder_stores / 'train'}", f"store={out}"]) == 0
    assert not Path(out).exists()


def test_rag_classify_check_names_its_two_required_settings(tmp_path, capsys):
    assert rag_classify(["--check", f"audio={tmp_path}"]) == 2
    rows = _rows(capsys.readouterr().out)
    assert rows["index store (store=)"] == ["store= is required", "MISSING", "store=<the folder build_index wrote>"]


def test_fetch_commands_make_the_row_present_and_rows_follow_the_loaders_rules(
    folder_stores, tmp_path, capsys, monkeypatch
):
    """A local file under another name is fetched and moved (or converted); a legacy hub id gets its
    hf download; relative model paths resolve as the loader resolves them (the repository root);
    model.lm is asked only when the loader reads it; a missing audio= and a damaged store are named."""
    monkeypatch.chdir(tmp_path)  # not the repository root
    ck = tmp_path / "ck"
    argv = [
        "dataset=esc50",
        "predictor=flamingo",
        f"model.checkpoint.path={ck / 'foundation.safetensors'}",
        f"model.audio_encoder.checkpoint={ck / 'my_clapcap.pth'}",
        "encoder=laion_clap_fusion",
    ]
    assert evaluate(["--check", *argv]) == 2
    rows = _rows(capsys.readouterr().out)
    assert rows["AF1 checkpoint (model.checkpoint.path)"][2] == (
        f"hf download nvidia/audio-flamingo foundation.pt --local-dir {ck} && "
        f"python scripts/convert_checkpoint.py {ck / 'foundation.pt'} {ck / 'foundation.safetensors'}"
    )
    clapcap = rows["AF1 window encoder clapcap weights (model.audio_encoder.checkpoint)"][2]
    assert clapcap.endswith(f"&& mv {ck / 'clapcap_weights_2023.pth'} {ck / 'my_clapcap.pth'}")
    tower = rows["retrieval encoder laion_clap_fusion text tower config + tokenizer (encoder.text_model)"]
    assert tower[2] == "hf download roberta-base --include '*.json' --include '*.txt'"
    assert "OPT config (model.lm)" not in rows  # a converted checkpoint carries its config
    # model=tiny from another folder: its fixture paths resolve from the repository root, as the loader does
    assert (
        evaluate(
            ["--check", "dataset=folder", f"dataset.root={folder_stores / 'test'}", "predictor=flamingo", "model=tiny"]
        )
        == 2
    )
    rows = _rows(capsys.readouterr().out)
    assert rows["AF1 checkpoint (model.checkpoint.path)"][1] == rows["OPT tokenizer (model.tokenizer)"][1] == "present"
    assert not any(what.startswith("OPT config") for what in rows)  # model.config is given: no lm read
    # rag_classify: an audio= that is not there; a store with a file missing
    store = tmp_path / "store"
    import shutil

    shutil.copytree(folder_stores / "train_idx", store)
    assert rag_classify(["--check", f"store={store}", f"audio={tmp_path / 'nothing.wav'}"]) == 2
    assert _rows(capsys.readouterr().out)["audio to label (audio=)"][1] == "MISSING"
    (store / "index.faiss").unlink()
    assert rag_classify(["--check", f"store={store}", f"audio={folder_stores / 'test'}"]) == 2
    row = _rows(capsys.readouterr().out)["index store (store=)"]
    assert "index.faiss" in row[0] and row[1:] == ["MISSING", f"build_index store={store} mode=repair"]
