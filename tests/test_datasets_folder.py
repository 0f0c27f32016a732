"""The folder source: recursive scan, labels from sub-folders, captions from .txt, splits."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rag_flamingo.datasets.folder import scan_folder
from rag_flamingo.errors import ManifestError


def _wav(path: Path, seconds: float = 0.2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(16000 * seconds), dtype=np.float32), 16000)


def test_labels_captions_nested_and_ignored_files(tmp_path):
    _wav(tmp_path / "dog" / "bark_02.wav")
    _wav(tmp_path / "dog" / "bark_01.WAV")
    (tmp_path / "dog" / "bark_01.txt").write_text("a dog barks twice\n\n  a small dog yaps \n")
    _wav(tmp_path / "dog" / "puppies" / "yap.flac")
    _wav(tmp_path / "top.wav")
    (tmp_path / "top.txt").write_text("a quiet room\n")
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "dog" / "cover.jpg").write_bytes(b"\xff\xd8")
    _wav(tmp_path / ".hidden" / "x.wav")
    _wav(tmp_path / "dog" / ".y.wav")
    splits = scan_folder(tmp_path)
    assert list(splits) == ["all"]
    assert splits["all"] == [
        {
            "id": "dog/bark_01",
            "path": "dog/bark_01.WAV",
            "label": "dog",
            "captions": ["a dog barks twice", "a small dog yaps"],
        },
        {"id": "dog/bark_02", "path": "dog/bark_02.wav", "label": "dog"},
        {"id": "dog/puppies/yap", "path": "dog/puppies/yap.flac", "label": "dog"},
        {"id": "top", "path": "top.wav", "captions": ["a quiet room"]},
    ]


def test_split_folders(tmp_path):
    _wav(tmp_path / "train" / "cat" / "a.wav")
    _wav(tmp_path / "train" / "dog" / "b.wav")
    _wav(tmp_path / "test" / "cat" / "c.ogg")
    _wav(tmp_path / "test" / "loose.wav")
    splits = scan_folder(tmp_path)
    assert sorted(splits) == ["all", "test", "train"]
    assert [(r["id"], r.get("label")) for r in splits["train"]] == [("train/cat/a", "cat"), ("train/dog/b", "dog")]
    assert [(r["id"], r.get("label")) for r in splits["test"]] == [("test/cat/c", "cat"), ("test/loose", None)]
    assert len(splits["all"]) == 4


def test_non_split_top_folders_are_labels(tmp_path):
    _wav(tmp_path / "train" / "a.wav")
    _wav(tmp_path / "birds" / "b.wav")
    splits = scan_folder(tmp_path)
    assert list(splits) == ["all"]
    assert [r["label"] for r in splits["all"]] == ["birds", "train"]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ManifestError, match="folder not found"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(ManifestError, match="no audio files"):
        scan_folder(tmp_path)
    _wav(tmp_path / "a.wav")
    _wav(tmp_path / "a.flac")
    with pytest.raises(ManifestError, match=r"a.flac and a.wav both map to id 'a'"):
        scan_folder(tmp_path)
