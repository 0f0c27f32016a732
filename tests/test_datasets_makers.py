"""Manifest makers on small metadata files written here in each dataset's official layout."""

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from index_builder.manifests import make_manifests
from index_builder.manifests.__main__ import main
from rag_flamingo.config import DatasetConfig, typed
from rag_flamingo.datasets.manifest import read_manifest
from rag_flamingo.datasets.sources import resolve_split
from rag_flamingo.errors import ConfigError, ManifestError

REPO = Path(__file__).resolve().parents[1]


def ds(values) -> DatasetConfig:
    return typed(DatasetConfig, values)


def _csv(path: Path, header: list[str] | None, rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def _touch_wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(800, 0.1, dtype=np.float32), 16000)


def _made(name, metadata, out, **options) -> dict[str, list[dict]]:
    result = make_manifests(name, metadata, out, **options)
    return {split: read_manifest(path) for split, path in result.manifests.items()}


def test_clotho(tmp_path):
    captions = [f"caption {i}" for i in range(1, 6)]
    _csv(
        tmp_path / "clotho_captions_development.csv",
        ["file_name"] + [f"caption_{i}" for i in range(1, 6)],
        [
            ["Distorted AM Radio noise.wav", *captions],
            ["birds, morning (2).wav", "birds sing", "birds chirp, loudly", "", "a bird", "morning birds"],
        ],
    )
    _csv(
        tmp_path / "clotho_captions_evaluation.csv",
        ["file_name"] + [f"caption_{i}" for i in range(1, 6)],
        [["rain.wav", *captions]],
    )
    splits = _made("clotho", tmp_path, tmp_path / "out")
    assert sorted(splits) == ["dev", "eval"]
    first, second = splits["dev"]
    assert first == {
        "id": "Distorted AM Radio noise",
        "path": "development/Distorted AM Radio noise.wav",
        "captions": captions,
        "group": "development/Distorted AM Radio noise.wav",
    }
    assert second["captions"] == ["birds sing", "birds chirp, loudly", "a bird", "morning birds"]
    assert splits["eval"][0]["path"] == "evaluation/rain.wav"
    per_caption = _made("clotho", tmp_path, tmp_path / "out2", rows_per_caption="true")["dev"]
    assert [r["id"] for r in per_caption[5:]] == [
        "birds, morning (2)#1",
        "birds, morning (2)#2",
        "birds, morning (2)#3",
        "birds, morning (2)#4",
    ]
    assert per_caption[6]["captions"] == ["birds chirp, loudly"]
    assert {r["group"] for r in per_caption[5:]} == {"development/birds, morning (2).wav"}


def test_clotho_wrong_columns(tmp_path):
    _csv(tmp_path / "clotho_captions_development.csv", ["file", "caption"], [["a.wav", "x"]])
    with pytest.raises(ManifestError, match="missing column.*file_name.*caption_1"):
        make_manifests("clotho", tmp_path, tmp_path / "out")


def test_audiocaps_groups_rows_of_one_clip(tmp_path):
    header = ["audiocap_id", "youtube_id", "start_time", "caption"]
    _csv(tmp_path / "dataset" / "train.csv", header, [[91139, "r1nicOVtvkQ", 130, "A woman talks, a bird calls"]])
    _csv(
        tmp_path / "dataset" / "test.csv",
        header,
        [
            [103549, "--0w1YA1Hm4", 30, "A vehicle driving as a man speaks"],
            [103548, "--0w1YA1Hm4", 30, "High pitched speaking and a vehicle"],
            [103541, "-AheI8Epim4", 30, "A man speaks then a car passes"],
        ],
    )
    splits = _made("audiocaps", tmp_path, tmp_path / "out")
    assert sorted(splits) == ["test", "train"]
    test = splits["test"]
    assert [r["id"] for r in test] == ["103549", "103548", "103541"]
    assert test[0]["group"] == test[1]["group"] == "--0w1YA1Hm4_30" != test[2]["group"]
    assert test[0]["path"] == "AUDIOCAPS/audio_32000Hz/test/--0w1YA1Hm4_30.flac"
    assert test[1]["captions"] == ["High pitched speaking and a vehicle"]
    splits = _made("audiocaps", tmp_path, tmp_path / "out2", audio_pattern="wav/{youtube_id}.wav")
    assert splits["train"][0]["path"] == "wav/r1nicOVtvkQ.wav"
    with pytest.raises(ManifestError, match="unknown field 'ytid'"):
        make_manifests("audiocaps", tmp_path, tmp_path / "out3", audio_pattern="{ytid}.wav")


def test_audiocaps_check_audio_lists_missing_clips(tmp_path):
    _csv(
        tmp_path / "train.csv",
        ["audiocap_id", "youtube_id", "start_time", "caption"],
        [[1, "aaa", 0, "x"], [2, "bbb", 10, "y"]],
    )
    _touch_wav(tmp_path / "clips" / "aaa_0.wav")
    result = make_manifests(
        "audiocaps", tmp_path, tmp_path / "out", check_audio=True, audio_pattern="clips/{youtube_id}_{start_time}.wav"
    )
    assert result.counts == {"train": 1} and result.missing == {"train": 1}
    assert [r["id"] for r in read_manifest(result.manifests["train"])] == ["1"]
    missing = [json.loads(line) for line in (tmp_path / "out" / "train.missing.jsonl").read_text().splitlines()]
    assert [(m["id"], m["reason"]) for m in missing] == [("2", "audio file not found")]


def _esc50(root: Path) -> None:
    rows = [
        [f"{fold}-100032-A-{target}.wav", fold, target, category, "True" if target == 0 else "False", 100032, "A"]
        for fold in range(1, 6)
        for target, category in [(0, "dog"), (20, "crying_baby")]
    ]
    _csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows)


def test_esc50_folds(tmp_path):
    _esc50(tmp_path / "ESC-50-master")
    splits = _made("esc50", tmp_path, tmp_path / "out")
    assert sorted(splits) == ["fold1", "fold2", "fold3", "fold4", "fold5", "test", "train"]
    assert {r["fold"] for r in splits["train"]} == {1, 2, 3, 4} and {r["fold"] for r in splits["test"]} == {5}
    row = splits["fold1"][1]
    assert row == {
        "id": "1-100032-A-20",
        "path": "ESC-50-master/audio/1-100032-A-20.wav",
        "label": "crying baby",
        "class_id": 20,
        "fold": 1,
        "esc10": False,
        "group": "ESC-50-master/audio/1-100032-A-20.wav",
    }
    splits = _made("esc50", tmp_path / "ESC-50-master", tmp_path / "out2", query_fold="1")
    assert {r["fold"] for r in splits["test"]} == {1} and splits["test"][0]["path"] == "audio/1-100032-A-0.wav"


def test_us8k_folds_and_no_segment_times(tmp_path):
    header = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
    rows = [[f"100032-3-0-{k}.wav", 100032, 0.5 * k, 0.5 * k + 0.3, 1, k, 3, "dog_bark"] for k in range(1, 11)]
    _csv(tmp_path / "UrbanSound8K" / "metadata" / "UrbanSound8K.csv", header, rows)
    splits = _made("us8k", tmp_path / "UrbanSound8K", tmp_path / "out")
    assert len(splits["train"]) == 9 and [r["fold"] for r in splits["test"]] == [10]
    row = splits["fold3"][0]
    assert row["path"] == "audio/fold3/100032-3-0-3.wav" and row["label"] == "dog bark" and row["class_id"] == 3
    assert "start" not in row and "end" not in row


def test_gtzan_default_and_filtered_splits(tmp_path):
    for genre in ("blues", "jazz"):
        for n in (0, 69, 70, 85):
            _touch_wav(tmp_path / "genres_original" / genre / f"{genre}.{n:05d}.wav")
    (tmp_path / "genres_original" / "jazz" / "notes.txt").write_text("ignored")
    splits = _made("gtzan", tmp_path, tmp_path / "out")
    assert [r["id"] for r in splits["train"]] == ["blues.00000", "blues.00069", "jazz.00000", "jazz.00069"]
    assert [r["id"] for r in splits["val"]] == ["blues.00070", "jazz.00070"]
    assert [r["id"] for r in splits["test"]] == ["blues.00085", "jazz.00085"]
    assert splits["test"][0] == {
        "id": "blues.00085",
        "path": "genres_original/blues/blues.00085.wav",
        "label": "blues",
        "track": 85,
        "group": "genres_original/blues/blues.00085.wav",
    }
    assert len(splits["all"]) == 8
    (tmp_path / "train_filtered.txt").write_text("blues/blues.00085.wav\njazz/jazz.00000.wav\n")
    (tmp_path / "valid_filtered.txt").write_text("blues/blues.00000.wav\n")
    (tmp_path / "test_filtered.txt").write_text("jazz/jazz.00069.wav\njazz/jazz.00054.wav\n")
    splits = _made("gtzan", tmp_path, tmp_path / "out")
    assert [r["id"] for r in splits["train"]] == ["blues.00085", "jazz.00000"]
    assert [r["id"] for r in splits["test"]] == ["jazz.00069"]  # jazz.00054 listed but absent: skipped


def test_duplicate_ids_are_refused(tmp_path):
    _touch_wav(tmp_path / "genres" / "blues" / "blues.00001.au")
    _touch_wav(tmp_path / "genres" / "blues" / "blues.00001.wav")
    with pytest.raises(ManifestError, match=r"gtzan/all: id 'blues.00001' is used by genres/blues/blues.00001.au"):
        make_manifests("gtzan", tmp_path, tmp_path / "out")


def test_medley_solos_db(tmp_path):
    _csv(
        tmp_path / "Medley-solos-DB_metadata.csv",
        ["subset", "instrument", "instrument_id", "song_id", "uuid4"],
        [
            ["training", "clarinet", 0, 0, "0e4371ac-1c6a-51ab-fdb7-f8abd5fbf1a3"],
            ["test", "female singer", 3, 198, "0a282672-c22c-59ff-faaa-ff9eb73fc8e6"],
            ["validation", "piano", 4, 160, "9d4c8b1e-9a1e-4f6e-8a5b-1c2d3e4f5a6b"],
        ],
    )
    _touch_wav(tmp_path / "audio" / "Medley-solos-DB_training-0_0e4371ac-1c6a-51ab-fdb7-f8abd5fbf1a3.wav")
    splits = _made("medley_solos_db", tmp_path, tmp_path / "out")
    assert sorted(splits) == ["test", "train", "val"]
    assert splits["train"][0]["path"] == "audio/Medley-solos-DB_training-0_0e4371ac-1c6a-51ab-fdb7-f8abd5fbf1a3.wav"
    test = splits["test"][0]
    assert (test["id"], test["label"], test["class_id"], test["song_id"]) == (
        "0a282672-c22c-59ff-faaa-ff9eb73fc8e6",
        "female singer",
        3,
        198,
    )
    assert test["path"] == "audio/Medley-solos-DB_test-3_0a282672-c22c-59ff-faaa-ff9eb73fc8e6.wav"


def test_nsynth(tmp_path):
    examples = {
        "bass_synthetic_033-022-050": {
            "note": 201171,
            "sample_rate": 16000,
            "pitch": 22,
            "velocity": 50,
            "instrument": 417,
            "instrument_str": "bass_synthetic_033",
            "instrument_family": 0,
            "instrument_family_str": "bass",
            "instrument_source": 2,
            "instrument_source_str": "synthetic",
            "qualities": [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            "qualities_str": ["dark"],
            "note_str": "bass_synthetic_033-022-050",
        },
        "synth_lead_synthetic_000-100-127": {
            "note": 1,
            "sample_rate": 16000,
            "pitch": 100,
            "velocity": 127,
            "instrument": 2,
            "instrument_str": "synth_lead_synthetic_000",
            "instrument_family": 9,
            "instrument_family_str": "synth_lead",
            "instrument_source": 2,
            "instrument_source_str": "synthetic",
            "qualities": [0] * 10,
            "qualities_str": [],
            "note_str": "synth_lead_synthetic_000-100-127",
        },
    }
    (tmp_path / "nsynth-test").mkdir()
    (tmp_path / "nsynth-test" / "examples.json").write_text(json.dumps(examples))
    (tmp_path / "nsynth-valid").mkdir()
    (tmp_path / "nsynth-valid" / "examples.json").write_text(json.dumps({"x": {"pitch": 1}}))
    with pytest.raises(ManifestError, match="note 'x' lacks instrument_family_str"):
        make_manifests("nsynth", tmp_path, tmp_path / "out")
    (tmp_path / "nsynth-valid" / "examples.json").unlink()
    splits = _made("nsynth", tmp_path, tmp_path / "out")
    assert list(splits) == ["test", "test_source", "test_quality"]  # one split pair per AF1 task
    first, second = splits["test"]
    assert first["path"] == "nsynth-test/audio/bass_synthetic_033-022-050.wav"
    assert [r["label"] for r in splits["test_source"]] == ["synthetic", "synthetic"]
    quality = splits["test_quality"]
    assert [r["labels"] for r in quality] == [["dark"], []] and all("label" not in r for r in quality)
    assert [r["id"] for r in quality] == [r["id"] for r in splits["test_source"]] == [first["id"], second["id"]]
    assert (first["label"], first["instrument_source"], first["qualities"], first["pitch"], first["velocity"]) == (
        "bass",
        "synthetic",
        ["dark"],
        22,
        50,
    )
    assert second["label"] == "synth lead" and second["qualities"] == []


def test_fsd50k(tmp_path):
    gt = tmp_path / "FSD50K.ground_truth"
    _csv(
        gt / "vocabulary.csv",
        None,
        [
            [0, "Electric_guitar", "/m/02sgy"],
            [1, "Guitar", "/m/0342h"],
            [2, "Music", "/m/04rlf"],
            [3, "Bark", "/m/05tny_"],
        ],
    )
    _csv(
        gt / "dev.csv",
        ["fname", "labels", "mids", "split"],
        [
            [64760, "Electric_guitar,Guitar,Music", "/m/02sgy,/m/0342h,/m/04rlf", "train"],
            [16399, "Bark", "/m/05tny_", "val"],
        ],
    )
    _csv(gt / "eval.csv", ["fname", "labels", "mids"], [[37199, "Guitar,Music", "/m/0342h,/m/04rlf"]])
    splits = _made("fsd50k", tmp_path, tmp_path / "out")
    assert [r["id"] for r in splits["train"]] == ["64760"] and [r["id"] for r in splits["val"]] == ["16399"]
    assert len(splits["dev"]) == 2
    row = splits["train"][0]
    assert row["path"] == "FSD50K.dev_audio/64760.wav"
    assert row["labels"] == ["Electric guitar", "Guitar", "Music"]
    assert row["mids"] == ["/m/02sgy", "/m/0342h", "/m/04rlf"]
    assert splits["eval"][0]["path"] == "FSD50K.eval_audio/37199.wav"
    _csv(gt / "eval.csv", ["fname", "labels", "mids"], [[1, "Kazoo", "/m/x"]])
    with pytest.raises(ManifestError, match=r"eval.csv: clip 1: label\(s\) \['Kazoo'\] not in vocabulary"):
        make_manifests("fsd50k", tmp_path, tmp_path / "out")


def test_cochlscene(tmp_path):
    for split in ("Train", "Test"):
        for scene in ("Bus", "SubwayStation"):
            _touch_wav(tmp_path / split / scene / f"{scene}_user0009_14897252_005.wav")
    (tmp_path / "Train" / "Bus" / "readme.txt").write_text("x")
    splits = _made("cochlscene", tmp_path, tmp_path / "out")
    assert sorted(splits) == ["test", "train"]
    assert splits["train"][1] == {
        "id": "Train/SubwayStation/SubwayStation_user0009_14897252_005",
        "path": "Train/SubwayStation/SubwayStation_user0009_14897252_005.wav",
        "label": "SubwayStation",
        "group": "Train/SubwayStation/SubwayStation_user0009_14897252_005.wav",
    }


def test_cli_and_resolve_split_end_to_end(tmp_path, capsys, monkeypatch):
    root = tmp_path / "data" / "esc50"
    _esc50(root)
    assert main(["esc50", "--metadata", str(root), "--out", str(root / "manifests")]) == 0
    assert "train: 8 rows" in capsys.readouterr().out
    monkeypatch.setenv("RAG_FLAMINGO_DATA_ROOT", str(tmp_path / "data"))
    manifest, audio_root = resolve_split(ds({"name": "esc50", "root": None, "splits": {"query": "test"}}), "query")
    assert manifest == root / "manifests" / "test.jsonl" and audio_root == root
    assert main(["esc50", "--metadata", str(root), "--out", str(tmp_path / "o"), "--option", "bogus=1"]) == 2
    assert "unknown option(s) bogus" in capsys.readouterr().err
    assert main(["gtzan", "--metadata", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "metadata folder not found" in capsys.readouterr().err


def test_cli_user_errors_are_one_line_naming_the_option_or_file(tmp_path, capsys):
    """query_fold out of range or not a number, a metadata file that is not UTF-8, --out naming a
    file: exit 2, one line ``<prog>: error: ...`` naming what to fix, no traceback, nothing written."""
    root = tmp_path / "esc50"
    _esc50(root)
    header = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
    _csv(tmp_path / "us8k" / "metadata" / "UrbanSound8K.csv", header, [["1-3-0-0.wav", 1, 0, 1, 1, 1, 3, "dog_bark"]])
    (tmp_path / "a_file").write_text("not a folder")
    latin1 = tmp_path / "latin1"
    (latin1 / "meta").mkdir(parents=True)
    (latin1 / "meta" / "esc50.csv").write_bytes(
        b"filename,fold,target,category,esc10,src_file,take\n1-1-A-0.wav,1,0,caf\xe9,True,1,A\n"
    )
    gtzan = tmp_path / "gtzan"
    _touch_wav(gtzan / "genres_original" / "blues" / "blues.00000.wav")
    for name in ("train_filtered.txt", "valid_filtered.txt"):
        (gtzan / name).write_text("blues/blues.00000.wav\n")
    (gtzan / "test_filtered.txt").write_bytes(b"blues/blues.00000.wav \xff\n")
    out = tmp_path / "out"
    cases = [
        (["esc50", "--metadata", str(root), "--option", "query_fold=9"], "esc50: query_fold=9: the folds are 1..5"),
        (["esc50", "--metadata", str(root), "--option", "query_fold=abc"], "esc50: query_fold=abc: not a fold number"),
        (
            ["us8k", "--metadata", str(tmp_path / "us8k"), "--option", "query_fold=0"],
            "us8k: query_fold=0: the folds are 1..10",
        ),
        (["esc50", "--metadata", str(latin1)], f"{latin1 / 'meta' / 'esc50.csv'}: not UTF-8 text (byte 0xe9"),
        (["gtzan", "--metadata", str(gtzan)], f"{gtzan / 'test_filtered.txt'}: not UTF-8 text (byte 0xff"),
        (
            ["esc50", "--metadata", str(root), "--out", str(tmp_path / "a_file")],
            f"--out {tmp_path / 'a_file'}: is a file",
        ),
        (
            ["esc50", "--metadata", str(root), "--out", str(tmp_path / "a_file" / "sub")],
            f"--out {tmp_path / 'a_file' / 'sub'}: {tmp_path / 'a_file'} is a file",
        ),
    ]
    for argv, expected in cases:
        if "--out" not in argv:
            argv = [*argv, "--out", str(out)]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"python -m index_builder.manifests: error: {expected}"), (argv, err)
    assert not out.exists()  # nothing written, no folder made
    assert main(["esc50", "--metadata", str(root), "--out", str(out), "--option", "query_fold= 2"]) == 0
    assert {r["fold"] for r in read_manifest(out / "test.jsonl")} == {2}


def test_cli_runs_as_a_module(tmp_path):
    _esc50(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "index_builder.manifests",
            "esc50",
            "--metadata",
            str(tmp_path),
            "--out",
            str(tmp_path / "m"),
            "--check-audio",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "m" / "train.jsonl").exists()  # no audio on disk: every row left out
    assert len((tmp_path / "m" / "train.missing.jsonl").read_text().splitlines()) == 8


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="no manifest maker for 'kazoo'"):
        make_manifests("kazoo", ".", "out")


def _one_error_line(capsys, prog: str = "python -m index_builder.manifests") -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in captured.err and "usage:" not in captured.err
    return err[0].split(": error: ", 1)[1]


def test_cli_argument_mistakes_are_one_line_with_a_did_you_mean(tmp_path, capsys):
    root = tmp_path / "esc50"
    _esc50(root)
    out = str(tmp_path / "out")
    cases = [
        (
            ["esc51", "--metadata", str(root), "--out", out],
            "argument dataset: invalid choice 'esc51' (did you mean 'esc50'?)",
        ),
        (
            ["esc50", "--metadta", str(root), "--out", out],
            "unrecognized argument --metadta (did you mean '--metadata'?)",
        ),
        (["esc50", "--metadata", str(root), "--out", out, "--bogus"], "unrecognized argument --bogus; the options are"),
        (["esc50", "--out", out], "the following arguments are required: --metadata"),
        (
            ["esc50", "--metadata", str(root), "--out", out, "--option", "quer_fold=1"],
            "esc50: unknown option(s) quer_fold (did you mean 'query_fold'?)",
        ),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        assert _one_error_line(capsys).startswith(expected), argv
    assert not (tmp_path / "out").exists()
    assert main(["esc50", "--meta", str(root), "--out", out]) == 0  # argparse's abbreviations still work
    assert main(["--help"]) == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc: a folder where mkdir always fails")
def test_cli_out_that_cannot_be_created_is_one_line_naming_out(tmp_path, capsys):
    root = tmp_path / "esc50"
    _esc50(root)
    for out in ("/proc/no_such_manifests", "/proc/no_such_manifests/deeper", "/proc"):
        assert main(["esc50", "--metadata", str(root), "--out", out]) == 2, out
        assert _one_error_line(capsys).startswith(f"--out {out}: cannot be created or written"), out


def test_manifest_write_failure_is_one_line_naming_out(tmp_path, capsys, monkeypatch):
    import errno

    import index_builder.manifests as manifests

    root = tmp_path / "esc50"
    _esc50(root)

    def full(rows, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(manifests, "write_manifest", full)
    out = tmp_path / "out"
    assert main(["esc50", "--metadata", str(root), "--out", str(out)]) == 2
    assert _one_error_line(capsys).startswith(f"--out {out}: {out / 'fold1.jsonl'} cannot be written (No space left")


def test_video_audio_argument_and_out_mistakes_are_one_line(tmp_path, capsys):
    from index_builder.manifests.video_audio import PROG
    from index_builder.manifests.video_audio import main as video_audio

    videos = tmp_path / "videos"
    videos.mkdir()
    out = str(tmp_path / "wav")
    for argv, expected in (
        (["--videoz", str(videos), "--out", out], "unrecognized argument --videoz (did you mean '--videos'?)"),
        (["--videos", str(videos)], "the following arguments are required: --out"),
        (["--videos", str(videos), "--out", out, "--sample-rate", "x"], "argument --sample-rate: invalid int value"),
        (["--videos", str(tmp_path / "none"), "--out", out], f"{tmp_path / 'none'}: video folder not found"),
    ):
        assert video_audio(argv) == 2, argv
        assert _one_error_line(capsys, PROG).startswith(expected), argv
    if Path("/proc/self").is_dir() and importlib.util.find_spec("av") is not None:
        assert video_audio(["--videos", str(videos), "--out", "/proc/no_such_wavs"]) == 2
        assert _one_error_line(capsys, PROG).startswith("--out /proc/no_such_wavs: cannot be created")
