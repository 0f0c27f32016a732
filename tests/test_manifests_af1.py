"""The five Audio Flamingo evaluation sets added for `evaluate suite=af1`: manifest makers on small
metadata trees written here in each dataset's official layout, the prompts their rows produce, and
the MUSIC-AVQA audio extraction on real (tiny) videos written with PyAV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from index_builder.manifests import DATASETS, make_manifests
from index_builder.manifests.__main__ import main
from index_builder.manifests.music_avqa import fill_slots
from rag_flamingo.datasets.manifest import read_manifest
from rag_flamingo.errors import ManifestError
from rag_flamingo.prompts import build_prompt
from rag_flamingo.retrieval import Shot


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _wav(path: Path, seconds: float = 0.05, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(int(seconds * rate), 0.1, np.float32), rate)


def _made(name, metadata, out, **options) -> dict[str, list[dict]]:
    result = make_manifests(name, metadata, out, **options)
    return {split: read_manifest(path) for split, path in result.manifests.items()}


def _shot(item: dict, row: int = 0) -> Shot:
    return Shot(row=row, id=item["id"], score=0.9, item=item)


def test_the_five_are_registered():
    assert {"clotho_aqa", "music_avqa", "nonspeech7k", "crema_d", "ravdess"} <= set(DATASETS)


# ----------------------------------------------------------------------------- Clotho-AQA


def _clotho_aqa(root: Path) -> None:
    header = ["file_name", "QuestionText", "answer", "confidence"]
    _csv(
        root / "clotho_aqa_train.csv",
        header,
        [
            ["rain on roof.wav", "Is it raining?", "yes", "yes"],
            ["rain on roof.wav", "Is it raining?", "Yes.", "yes"],
            ["rain on roof.wav", "Is it raining?", "no", "maybe"],
            ["rain on roof.wav", "What is falling?", "water", "yes"],
            ["rain on roof.wav", "What is falling?", "rain", "yes"],
            ["rain on roof.wav", "What is falling?", "drops", "no"],
            ["dog.wav", "Is a dog barking?", "yes", "yes"],
            ["dog.wav", "Is a dog barking?", "yes", "yes"],
            ["dog.wav", "Is a dog barking?", "yes", "yes"],
        ],
    )
    _csv(
        root / "clotho_aqa_test.csv",
        header,
        [["bird.wav", "Are birds singing?", "no", "yes"]] * 3
        + [["bird.wav", "How many birds sing?", "Two", "yes"]] * 3
        + [["bird.wav", "What is singing?", "birds", "yes"]] * 3
        + [["bird.wav", "How many calls?", c, "yes"] for c in ("3", "3", "4")],
    )


def test_clotho_aqa_rows_answers_and_groups(tmp_path):
    _clotho_aqa(tmp_path)
    splits = _made("clotho_aqa", tmp_path, tmp_path / "out")
    assert sorted(splits) == [
        *["test", "test_non_binary", "test_numerical", "test_unanimous"],
        *["train", "train_unanimous"],  # train has no non-binary or numerical question: not written
    ]
    rain_yes, rain_what, dog = splits["train"]
    assert rain_yes == {
        "id": "rain on roof#1",
        "path": "audio_files/rain on roof.wav",
        "group": "audio_files/rain on roof.wav",
        "question": "Is it raining?",
        "answer": "yes",  # 2 of 3 ("Yes." normalised)
        "answers": ["yes", "yes", "no"],
        "unanimous": False,
        "binary": True,
        "numerical": False,
    }
    assert rain_what["id"] == "rain on roof#2" and rain_what["answer"] == "water"  # 3-way tie: the first
    assert rain_what["group"] == rain_yes["group"]  # one recording: never its own shot
    assert [r["id"] for r in splits["train_unanimous"]] == [dog["id"]]
    assert splits["test"][0]["answer"] == "no"
    # test: 4 questions; "how many calls" (3, 3, 4) is not unanimous, so in no subset
    ids = {r["question"]: r["id"] for r in splits["test"]}
    assert [r["answer"] for r in splits["test"]] == ["no", "two", "birds", "3"]
    assert [r["id"] for r in splits["test_unanimous"]] == [ids[q] for q in list(ids)[:3]]
    assert [r["id"] for r in splits["test_non_binary"]] == [ids["How many birds sing?"], ids["What is singing?"]]
    assert [r["id"] for r in splits["test_numerical"]] == [ids["How many birds sing?"]]
    assert splits["test"][3]["numerical"] and not splits["test"][3]["unanimous"]


def test_clotho_aqa_prompts_follow_the_reference(tmp_path):
    _clotho_aqa(tmp_path)
    rows = _made("clotho_aqa", tmp_path, tmp_path / "out")["train"]
    binary, open_question = rows[0], rows[1]
    prompt = build_prompt("aqa", binary, [], options=["yes", "no"])
    assert prompt.text == (
        "</s>the task is audio question answering.<audio>please answer this question: is it raining?"
        "\noptions:\nyes.\nno.\nanswer:<SEP>"
    )
    icl = build_prompt("aqa", binary, [_shot(rows[2])], options=["yes", "no"])
    assert icl.text == (
        "</s>Here are similar examples. The task is audio question answering. "
        "<audio>please answer this question: is a dog barking?\noptions:\nyes.\nno.\nanswer:<SEP>yes<|endofchunk|>"
        "<audio>please answer this question: is it raining?\noptions:\nyes.\nno.\nanswer:<SEP>"
    )
    assert build_prompt("aqa", open_question, [], options=None).text.endswith(
        "please answer this question: what is falling?\nanswer:<SEP>"
    )


def test_clotho_aqa_wrong_columns(tmp_path):
    _csv(tmp_path / "clotho_aqa_test.csv", ["file", "question", "answer"], [["a.wav", "q?", "yes"]])
    with pytest.raises(ManifestError, match="missing column.*file_name"):
        make_manifests("clotho_aqa", tmp_path, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="Zenodo record 6473207"):
        make_manifests("clotho_aqa", tmp_path / "empty", tmp_path / "o2")


# ----------------------------------------------------------------------------- MUSIC-AVQA


def _avqa_record(qid, video, qtype, question, values, answer, deleted=0):
    return {
        "video_id": video,
        "question_id": qid,
        "type": json.dumps(qtype),
        "question_content": question,
        "templ_values": json.dumps(values),
        "question_deleted": deleted,
        "anser": answer,
    }


def _music_avqa(root: Path) -> None:
    (root / "json").mkdir(parents=True)
    train = [
        _avqa_record(
            1, "00000001", ["Audio", "Counting"], "How many instruments are sounding in the video?", [], "two"
        ),
        _avqa_record(2, "00000001", ["Visual", "Location"], "Where is the <Object>?", ["violin"], "left"),
        _avqa_record(
            3,
            "00000002",
            ["Audio-Visual", "Temporal"],
            "Is the <Object> louder than the <Object>?",
            ["piano", "cello"],
            "no",
        ),
        _avqa_record(4, "00000002", ["Audio", "Comparative"], "Is the <Object> playing?", ["piano"], "Yes", deleted=1),
        _avqa_record(5, "00000002", ["Audio", "Comparative"], "Is the <Object> louder?", ["piano"], "Yes"),
    ]
    (root / "json" / "avqa-train.json").write_text(json.dumps(train))
    (root / "json" / "avqa-test.json").write_text(json.dumps(train[:1]))


def test_music_avqa_rows(tmp_path):
    _music_avqa(tmp_path)
    splits = _made("music_avqa", tmp_path, tmp_path / "out")
    assert [r["id"] for r in splits["train"]] == ["q1", "q5"]  # audio-only, deleted left out
    count, louder = splits["train"]
    assert count == {
        "id": "q1",
        "path": "audio/00000001.wav",
        "group": "audio/00000001.wav",
        "question": "How many instruments are sounding in the video?",
        "answer": "two",
        "question_type": "Audio/Counting",
        "video_id": "00000001",
    }
    assert louder["question"] == "Is the piano louder?" and louder["answer"] == "yes"
    every = _made("music_avqa", tmp_path, tmp_path / "all", question_types="all")["train"]
    assert [r["id"] for r in every] == ["q1", "q2", "q3", "q5"]
    assert every[2]["question"] == "Is the piano louder than the cello?"
    av_too = _made("music_avqa", tmp_path, tmp_path / "av", question_types="Audio,Audio-Visual")["train"]
    assert [r["id"] for r in av_too] == ["q1", "q3", "q5"]
    assert build_prompt("aqa", louder, [], options=["yes", "no"]).text == (
        "</s>the task is audio question answering.<audio>please answer this question: is the piano louder?"
        "\noptions:\nyes.\nno.\nanswer:<SEP>"
    )


def test_music_avqa_bad_template_names_the_record(tmp_path):
    (tmp_path / "avqa-val.json").write_text(
        json.dumps([_avqa_record(9, "v", ["Audio", "Counting"], "Is the <Object> on?", [], "yes")])
    )
    with pytest.raises(ManifestError, match="record 0 .question 9.: 1 slot.s. but 0 value"):
        make_manifests("music_avqa", tmp_path, tmp_path / "out")
    assert fill_slots("<A> and <B>", ["x", "y"]) == "x and y"


def _write_video(path: Path, with_audio: bool = True, seconds: float = 0.5, rate: int = 16000) -> None:
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
        audio = container.add_stream("aac", rate=rate) if with_audio else None
        if audio is not None:
            audio.layout = "stereo"
        for i in range(int(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 20, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            t = np.arange(int(seconds * rate)) / rate
            tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            samples = np.stack([tone, tone])  # planar stereo
            block = 1024
            for start in range(0, samples.shape[1], block):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples[:, start : start + block]), format="fltp", layout="stereo"
                )
                chunk.sample_rate = rate
                for packet in audio.encode(chunk):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)


def test_video_audio_extraction_lists_bad_videos_and_resumes(tmp_path):
    pytest.importorskip("av")
    from index_builder.manifests.video_audio import FAILED_FILE, extract_audio
    from index_builder.manifests.video_audio import main as extract_main

    videos = tmp_path / "MUSIC-AVQA-videos-Real"
    videos.mkdir()
    _write_video(videos / "00000001.mp4")
    _write_video(videos / "00000002.mp4", with_audio=False)
    (videos / "00000003.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "audio"
    result = extract_audio(videos, out)
    assert [p.name for p in result.written] == ["00000001.wav"]
    assert sorted(f["id"] for f in result.failed) == ["00000002", "00000003"]
    failed = read_manifest(out / FAILED_FILE, required=("reason",))
    assert {f["id"]: f["reason"] for f in failed}["00000002"] == "no audio stream"
    wave, rate = sf.read(out / "00000001.wav")
    assert rate == 16000 and wave.ndim == 1 and 0.4 * rate <= len(wave) <= 0.7 * rate
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * rate / len(wave) - 440) < 10  # the tone survived the codec
    # a rerun keeps what is there; the manifest maker then drops the questions without audio
    again = extract_audio(videos, out)
    assert not again.written and [p.name for p in again.kept] == ["00000001.wav"]
    assert extract_main(["--videos", str(tmp_path / "none"), "--out", str(out)]) == 2
    _music_avqa(tmp_path)
    result = make_manifests("music_avqa", tmp_path, tmp_path / "manifests", check_audio=True)
    assert result.counts["train"] == 1 and result.missing["train"] == 1  # q5's video has no audio


# ----------------------------------------------------------------------------- NonSpeech7k


def test_nonspeech7k(tmp_path):
    _csv(tmp_path / "metadata of train set.csv", ["Filename", "Classname", "Class ID"], [["a1.wav", "Cough", 1]])
    _csv(tmp_path / "metadata of test set.csv", ["File name", "Class name"], [["b.wav", "yawn"], ["c.wav", "laugh"]])
    splits = _made("nonspeech7k", tmp_path, tmp_path / "out")
    assert splits["train"] == [{"id": "train/a1", "path": "train/a1.wav", "label": "cough", "group": "train/a1.wav"}]
    assert [r["label"] for r in splits["test"]] == ["yawn", "laugh"]
    assert build_prompt("event_classification", splits["test"][0], [], options=["yawn", "laugh", "cough"]).text == (
        "</s>the task is event classification.<audio>classify this sound.\noptions:\n - cough.\n - laugh.\n - yawn."
        "\nanswer:<SEP>"
    )
    _csv(tmp_path / "x" / "metadata of test set.csv", ["name", "kind"], [["b.wav", "yawn"]])
    with pytest.raises(ManifestError, match="no file-name column"):
        make_manifests("nonspeech7k", tmp_path / "x", tmp_path / "o")


# ----------------------------------------------------------------------------- CREMA-D, RAVDESS


def test_crema_d_speaker_disjoint_split(tmp_path):
    for name in ["1001_DFA_ANG_XX", "1001_IEO_HAP_HI", "1005_DFA_FEA_LO", "1010_TIE_NEU_XX", "1091_MTI_DIS_MD"]:
        _wav(tmp_path / "AudioWAV" / f"{name}.wav")
    _csv(
        tmp_path / "VideoDemographics.csv",
        ["ActorID", "Age", "Sex", "Race", "Ethnicity"],
        [[1001, 51, "Male", "x", "y"]],
    )
    splits = _made("crema_d", tmp_path, tmp_path / "out")
    assert {r["actor"] for r in splits["test"]} == {1005, 1010}
    assert {r["actor"] for r in splits["train"]} == {1001, 1091}
    assert len(splits["all"]) == 5
    first = splits["train"][0]
    assert first == {
        "id": "1001_DFA_ANG_XX",
        "path": "AudioWAV/1001_DFA_ANG_XX.wav",
        "label": "anger",
        "actor": 1001,
        "sentence": "DFA",
        "level": "unspecified",
        "sex": "male",
        "group": "AudioWAV/1001_DFA_ANG_XX.wav",  # read_manifest's default: the file
    }
    chosen = _made("crema_d", tmp_path, tmp_path / "o2", test_actors="1001")
    assert {r["actor"] for r in chosen["test"]} == {1001}
    # the emotion task answers with the reference's names (anger -> angry) and offers them as options
    prompt = build_prompt("emotion_classification", first, [_shot(splits["train"][1])], options=["anger", "happy"])
    assert prompt.text == (
        "</s>Here are similar examples. The task is emotion classification. "
        "<audio>what is the emotion of this speech?\nanswer:<SEP>happy<|endofchunk|>"
        "<audio>what is the emotion of this speech?\noptions:\n - angry.\n - happy.\nanswer:<SEP>"
    )
    _wav(tmp_path / "bad" / "AudioWAV" / "1001_DFA_XYZ_XX.wav")
    with pytest.raises(ManifestError, match="expected <actor>_<sentence>"):
        make_manifests("crema_d", tmp_path / "bad", tmp_path / "o3")


def test_ravdess_speech_and_song(tmp_path):
    names = {
        "Audio_Speech_Actors_01-24/Actor_01": ["03-01-05-02-01-01-01", "03-01-07-01-02-02-01"],
        "Audio_Speech_Actors_01-24/Actor_05": ["03-01-08-01-01-01-05"],
        "Audio_Song_Actors_01-24/Actor_10": ["03-02-03-02-02-01-10"],
        "Audio_Song_Actors_01-24/Actor_12": ["03-02-01-01-01-01-12", "01-02-01-01-01-01-12"],
    }
    for folder, stems in names.items():
        for stem in stems:
            _wav(tmp_path / folder / f"{stem}.wav")
    splits = _made("ravdess", tmp_path, tmp_path / "out")
    assert len(splits["all"]) == 5  # the video-modality file (01-...) is not audio-only
    assert {r["actor"] for r in splits["test"]} == {5, 10} and {r["actor"] for r in splits["train"]} == {1, 12}
    angry = next(r for r in splits["all"] if r["id"] == "03-01-05-02-01-01-01")
    assert angry == {
        "id": "03-01-05-02-01-01-01",
        "path": "Audio_Speech_Actors_01-24/Actor_01/03-01-05-02-01-01-01.wav",
        "label": "angry",
        "channel": "speech",
        "intensity": "strong",
        "statement": 1,
        "repetition": 1,
        "actor": 1,
        "sex": "male",
        "group": "Audio_Speech_Actors_01-24/Actor_01/03-01-05-02-01-01-01.wav",
    }
    song = _made("ravdess", tmp_path, tmp_path / "song", channels="song")
    assert {r["channel"] for r in song["all"]} == {"song"} and len(song["all"]) == 2
    disgust = next(r for r in splits["all"] if r["label"] == "disgust")
    assert build_prompt("emotion_classification", disgust, [], options=None).text.endswith(
        "what is the emotion of this speech?\nanswer:<SEP>"
    )
    with pytest.raises(ManifestError, match="channels='speech,choir'"):
        make_manifests("ravdess", tmp_path, tmp_path / "o", channels="speech,choir")


def test_cli_names_the_new_datasets(tmp_path, capsys):
    _clotho_aqa(tmp_path)
    assert main(["clotho_aqa", "--metadata", str(tmp_path), "--out", str(tmp_path / "m")]) == 0
    assert "train: 3 rows" in capsys.readouterr().out
