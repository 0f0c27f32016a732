"""Item identity across sources: content keys, recording keys and the store fingerprint, on stores
built by build_index from real audio files with the real aisfx encoder."""

from __future__ import annotations

import shutil

import pytest
import soundfile as sf
from test_index_pipeline import FAST, make_folder, manifest_rows, run_cli, tone, write_manifest

from rag_flamingo.errors import AudioError
from rag_flamingo.store.index_store import IndexStore
from rag_flamingo.store.items import content_key, recording_key


def test_content_key_is_the_bytes_and_the_segment(tmp_path):
    sf.write(tmp_path / "a.wav", tone(1.0, 16000, 300), 16000)
    (tmp_path / "copy").mkdir()
    shutil.copy(tmp_path / "a.wav", tmp_path / "copy" / "renamed.wav")
    sf.write(tmp_path / "b.wav", tone(1.0, 16000, 310), 16000)
    key = content_key(tmp_path / "a.wav")
    assert len(key) == 32 and key == content_key(tmp_path / "copy" / "renamed.wav")
    assert key != content_key(tmp_path / "b.wav")
    assert content_key(tmp_path / "a.wav", 0, 0.5) == f"{key}@0.0-0.5"
    assert content_key(tmp_path / "a.wav", 0.5, 1) != content_key(tmp_path / "a.wav", 0, 0.5)
    with pytest.raises(AudioError, match="missing.wav"):
        content_key(tmp_path / "missing.wav")


def test_recording_key_rules(tmp_path):
    train, test = tmp_path / "train", tmp_path / "test"
    item = {"id": "x", "path": "dog/1.wav"}
    assert recording_key(item, train) == str((train / "dog" / "1.wav").resolve())
    assert recording_key(item, train) != recording_key(item, test)
    assert recording_key(dict(item, group="dog/1.wav"), train) == recording_key(item, train)  # stored default
    assert recording_key(dict(item, group="rec7"), train) == f"{train.resolve()}::rec7"
    absolute = {"id": "y", "path": str(train / "sub" / ".." / "dog" / "1.wav")}
    assert recording_key(absolute, test) == recording_key(item, train)  # the same file


def test_same_relative_paths_in_two_folders_are_two_recordings(tmp_path):
    """train/ and test/ both hold sine/sine_0.wav etc.: different recordings (different bytes),
    except one file copied across, which has the same content key."""
    train = make_folder(tmp_path / "train", per_class=2)
    test = tmp_path / "test"
    for path in train.rglob("*.wav"):
        rel = path.relative_to(train)
        (test / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(test / rel, 0.5 * sf.read(path)[0], 16000)  # same name, other audio
    shutil.copy(train / "noise" / "noise_1.wav", test / "noise" / "noise_1.wav")  # a leaked duplicate
    out = tmp_path / "store"
    run_cli(["dataset=folder", f"dataset.root={train}", f"output={out}", *FAST])
    store = IndexStore.open(out)
    rows = {it["path"]: r for r, it in enumerate(store.items)}
    assert store.recording_keys[rows["sine/sine_0.wav"]] == str((train / "sine" / "sine_0.wav").resolve())
    for row_item in manifest_rows(test):
        row = rows[row_item["path"]]
        assert recording_key(row_item, test) != store.recording_keys[row]
        assert recording_key(row_item, train) == store.recording_keys[row]
    for path, row in rows.items():
        assert store.content_keys[row] == content_key(store.audio_path(row)) == store.item(row)["content"]
        same = content_key(test / path) == store.content_keys[row]
        assert same == (path == "noise/noise_1.wav")
    assert store.table.schema.field("content").type == "string"


def test_segments_get_their_own_content_keys(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "long.wav", tone(3.0, 16000, 300, kind="noise"), 16000)
    rows = [
        {"id": "a", "path": "long.wav", "start": 0, "end": 1.5, "label": "x"},
        {"id": "b", "path": "long.wav", "start": 1.5, "end": 3, "label": "x"},
    ]
    out = tmp_path / "store"
    run_cli(
        [
            f"dataset.manifest={write_manifest(tmp_path / 'm.jsonl', rows)}",
            f"dataset.root={audio}",
            f"output={out}",
            *FAST,
        ]
    )
    store = IndexStore.open(out)
    digest = content_key(audio / "long.wav")
    assert store.content_keys == [f"{digest}@0.0-1.5", f"{digest}@1.5-3.0"]
    assert store.recording_keys[0] == store.recording_keys[1]  # one file, one recording (group = path)


def test_fingerprint_is_stable_and_follows_the_content(tmp_path):
    root = make_folder(tmp_path / "audio", per_class=2, classes=("sine", "noise", "clicks", "buzz"))
    rows = manifest_rows(root)
    first = write_manifest(tmp_path / "first.jsonl", [r for r in rows if r["label"] != "buzz"])
    more = write_manifest(tmp_path / "more.jsonl", [r for r in rows if r["label"] == "buzz"])
    out, other = tmp_path / "store", tmp_path / "other"
    common = [f"dataset.root={root}", *FAST]
    run_cli([f"dataset.manifest={first}", f"output={out}", *common])
    fingerprint = IndexStore.open(out).fingerprint()
    assert len(fingerprint) == 16 and IndexStore.open(out).fingerprint() == fingerprint
    run_cli([f"dataset.manifest={first}", f"output={other}", *common])  # the same build elsewhere
    assert IndexStore.open(other).fingerprint() == fingerprint
    run_cli([f"dataset.manifest={more}", f"output={out}", "mode=append", *common])
    appended = IndexStore.open(out).fingerprint()
    assert appended != fingerprint and IndexStore.open(out).fingerprint() == appended
    run_cli([f"dataset.manifest={more}", f"output={tmp_path / 'third'}", *common])  # other data
    assert IndexStore.open(tmp_path / "third").fingerprint() not in (fingerprint, appended)
