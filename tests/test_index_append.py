"""build_index mode=append: a manifest row is already stored only when its recording (source audio
root + path/group) and id are stored with the same content hash and fields; a changed row replaces its
stored version; a new row whose id another recording holds is namespaced. Real audio files, the real
aisfx encoder, real FAISS."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
from test_index_pipeline import FAST, make_folder, manifest_rows, run_cli, store_bytes, tone, write_manifest

from index_builder.cli import main
from rag_flamingo.store.index_store import IndexStore
from rag_flamingo.store.items import content_key, recording_key


def by_id(store: IndexStore) -> dict[str, int]:
    return {it["id"]: row for row, it in enumerate(store.items)}


def assert_index_is_the_shards(store: IndexStore) -> None:
    emb = store.embeddings()
    assert (store.index.reconstruct_n(0, len(store)) == emb).all()  # index rows == item rows == shard rows


def test_same_names_in_another_folder_are_new_recordings(tmp_path, capsys):
    """``sine/sine_0.wav`` of another folder (another source root) is another recording: it is indexed,
    under a namespaced id because the store's ``sine/sine_0`` is another recording's id."""
    first = make_folder(tmp_path / "first", per_class=2)
    other = tmp_path / "other"
    for n, path in enumerate(sorted(first.rglob("*.wav"))):  # the same names, other audio
        rel = path.relative_to(first)
        (other / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(other / rel, tone(1.1, 16000, 900 + 170 * n, "sine"), 16000)
    out = tmp_path / "store"
    run_cli(["dataset=folder", f"dataset.root={first}", f"store={out}", *FAST])
    capsys.readouterr()
    run_cli(["dataset=folder", f"dataset.root={other}", f"store={out}", "mode=append", *FAST])
    printed = capsys.readouterr().out
    assert "build_index: appended" in printed and "embedded 6 clips" in printed
    assert "6 new, 0 unchanged skipped, 0 changed re-embedded" in printed
    assert "6 ids held by other recordings in the store were namespaced: clicks/clicks_0 -> other:clicks/clicks_0" in (
        printed
    )
    store = IndexStore.open(out)
    rows = by_id(store)
    assert len(store) == 12 and len(rows) == 12  # ids unique: nothing overwritten, nothing dropped
    for row in manifest_rows(other):
        mine = rows[f"other:{row['id']}"]
        assert store.item(mine)["path"] == row["path"] and store.audio_path(mine) == other / row["path"]
        assert store.recording_keys[mine] == recording_key(row, other) != store.recording_keys[rows[row["id"]]]
        assert store.content_keys[mine] == content_key(other / row["path"])
    assert_index_is_the_shards(store)
    _, hits = store.search(store.embeddings()[[rows["other:sine/sine_1"]]], 1)
    assert hits[0, 0] == rows["other:sine/sine_1"]
    # the same append again: every row is found under its namespaced id, nothing is new
    before = store_bytes(out)
    run_cli(["dataset=folder", f"dataset.root={other}", f"store={out}", "mode=append", *FAST])
    printed = capsys.readouterr().out
    assert "build_index: nothing-new" in printed and "0 new, 6 unchanged skipped, 0 changed" in printed
    assert store_bytes(out) == before


def test_an_id_taken_twice_is_a_clear_error_before_any_work(tmp_path, capsys):
    first = make_folder(tmp_path / "first", per_class=1)
    a = make_folder(tmp_path / "a" / "clips", per_class=1, classes=("sine",))
    b = tmp_path / "b" / "clips"  # another folder with the same name: the namespaced id is taken too
    (b / "sine").mkdir(parents=True)
    sf.write(b / "sine" / "sine_0.wav", tone(1.2, 16000, 1234), 16000)
    out = tmp_path / "store"
    run_cli(["dataset=folder", f"dataset.root={first}", f"store={out}", *FAST])
    run_cli(["dataset=folder", f"dataset.root={a}", f"store={out}", "mode=append", *FAST])
    before = store_bytes(out)
    capsys.readouterr()
    assert main(["dataset=folder", f"dataset.root={b}", f"store={out}", "mode=append", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'sine/sine_0'" in err and "'clips:sine/sine_0' is taken" in err
    assert "sine/sine_0.wav" in err and "dataset.manifest=" in err
    assert store_bytes(out) == before and len(IndexStore.open(out)) == 4


def test_changed_rows_replace_their_stored_versions(tmp_path, capsys):
    """Audio overwritten under a stored path, a label corrected in the manifest, a file that was
    unreadable and is now fixed: each is re-embedded and replaces what the store held; the store
    equals a fresh build of the new manifest (same items, same vectors) and no old vector stays."""
    root = make_folder(tmp_path / "audio", per_class=3)
    (root / "noise" / "broken.wav").write_bytes(b"not audio")
    rows = manifest_rows(root)
    first = write_manifest(tmp_path / "first.jsonl", rows)
    out, fresh = tmp_path / "store", tmp_path / "fresh"
    common = [f"dataset.root={root}", "shard_size=4", *FAST]
    run_cli([f"dataset.manifest={first}", f"store={out}", *common])
    old = IndexStore.open(out)
    old_vector = old.embeddings()[by_id(old)["sine/sine_1"]].copy()
    assert "noise/broken" not in by_id(old)
    sf.write(root / "sine" / "sine_1.wav", tone(1.3, 16000, 1500, "sine"), 16000)  # new audio, same name
    shutil.copy(root / "noise" / "noise_0.wav", root / "noise" / "broken.wav")  # fixed
    sf.write(root / "clicks" / "clicks_9.wav", tone(1.0, 16000, 300, "clicks", seed=9), 16000)  # a new file
    second_rows = [dict(r, label="tick") if r["id"] == "clicks/clicks_2" else r for r in manifest_rows(root)]
    second = write_manifest(tmp_path / "second.jsonl", second_rows)
    capsys.readouterr()
    run_cli([f"dataset.manifest={second}", f"store={out}", "mode=append", *common])
    printed = capsys.readouterr().out
    assert "build_index: appended" in printed and "embedded 4 clips" in printed
    assert "1 new, 7 unchanged skipped, 3 changed re-embedded (replacing their stored versions)" in printed
    run_cli([f"dataset.manifest={second}", f"store={fresh}", *common])
    a, b = IndexStore.open(out), IndexStore.open(fresh)
    rows_a, rows_b = by_id(a), by_id(b)
    assert len(a) == len(b) == 11 and rows_a.keys() == rows_b.keys()
    assert a.info.build.rejected == 0 and (out / "rejected.jsonl").read_text() == ""
    for rid, row in rows_a.items():
        assert a.item(row) == b.item(rows_b[rid])
        np.testing.assert_allclose(a.embeddings()[row], b.embeddings()[rows_b[rid]], atol=1e-5)
    assert a.item(rows_a["clicks/clicks_2"])["label"] == "tick"
    assert a.content_keys[rows_a["sine/sine_1"]] == content_key(root / "sine" / "sine_1.wav")
    assert not (np.abs(a.embeddings() - old_vector).max(axis=1) < 1e-6).any()  # the old vector is gone
    assert_index_is_the_shards(a)
    assert [(s.first_row, s.end_row) for s in a.info.build.sources] == [(0, 7), (7, 11)]
    # unchanged now: the same append again is nothing new
    run_cli([f"dataset.manifest={second}", f"store={out}", "mode=append", *common])
    assert "0 new, 11 unchanged skipped, 0 changed re-embedded" in capsys.readouterr().out


def test_an_interrupted_append_is_finished_by_rerunning_it(tmp_path, capsys, monkeypatch):
    import rag_flamingo.indexing.embedder as embedder

    root = make_folder(tmp_path / "audio", per_class=2, classes=("sine", "noise"))
    common = ["dataset=folder", f"dataset.root={root}", "shard_size=2", *FAST]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_cli([*common, f"store={whole}"])
    run_cli([*common, f"store={killed}"])
    make_folder(root, per_class=3, classes=("clicks",))
    sf.write(root / "noise" / "noise_1.wav", tone(1.2, 16000, 640, "noise", seed=5), 16000)  # changed
    run_cli([*common, f"store={whole}", "mode=append"])
    uninterrupted = capsys.readouterr().out

    real, calls = embedder.write_shard, []

    def dies_after_one_shard(*args, **kwargs):
        calls.append(args[1])
        if len(calls) > 1:
            raise KeyboardInterrupt  # a kill while embedding the append's second shard
        return real(*args, **kwargs)

    monkeypatch.setattr(embedder, "write_shard", dies_after_one_shard)
    with pytest.raises(KeyboardInterrupt):
        main([*common, f"store={killed}", "mode=append"])
    monkeypatch.setattr(embedder, "write_shard", real)
    assert calls == [2, 3] and (killed / "plans" / "000002.jsonl").is_file()
    capsys.readouterr()
    run_cli([*common, f"store={killed}", "mode=append"])
    printed = capsys.readouterr().out
    assert "build_index: appended" in printed and "embedded 2 clips" in printed  # the shard not done yet
    assert "3 new, 3 unchanged skipped, 1 changed re-embedded" in printed
    assert "3 new, 3 unchanged skipped, 1 changed re-embedded" in uninterrupted
    assert all_same(IndexStore.open(killed), IndexStore.open(whole))
    assert store_bytes(killed) == store_bytes(whole)


def all_same(a: IndexStore, b: IndexStore) -> bool:
    np.testing.assert_allclose(a.embeddings(), b.embeddings(), atol=1e-6)
    return a.items == b.items and a.info.build.sources == b.info.build.sources
