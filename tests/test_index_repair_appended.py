"""A store made by a build and appends is repairable: ``build_index store=X mode=repair`` (or
rerunning a command that made it) re-embeds only the damaged shards, each from its own source's plan
and audio, and rebuilds items, index, rejected rows and store.json from the shards. Real audio files,
the real aisfx encoder, real FAISS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_index_pipeline import FAST, make_folder, run_cli, store_bytes, tone
from test_store_integrity import flip_byte, truncate

from index_builder.cli import main
from rag_flamingo.errors import StoreError
from rag_flamingo.store.index_store import IndexStore
from rag_flamingo.store.layout import INDEX_FILE, INFO_FILE, ITEMS_FILE, REJECTED_FILE


def all_bytes(root: Path) -> dict[str, bytes]:
    """store_bytes plus the plans (the files a repair must give back as they were)."""
    return {**store_bytes(root), **{f"plans/{p.name}": p.read_bytes() for p in sorted((root / "plans").glob("*"))}}


def snapshot(root: Path) -> dict:
    store = IndexStore.open(root, verify=True)
    sources = store.info.build.sources
    emb = store.embeddings()
    scores, rows = store.search(emb, 5)
    return {
        "bytes": all_bytes(root),
        "items": store.items,
        "vectors": emb,
        "hits": rows,
        "sources": [(s.audio_root, s.first_shard, s.end_shard, s.first_row, s.end_row) for s in sources],
        "fingerprint": store.fingerprint(),
    }


@pytest.fixture(scope="module")
def layered(tmp_path_factory):
    """The README's workflow: a folder built, then a label added to it and appended (one of its
    files overwritten meanwhile: a changed row), then another folder appended. Shards: 0-1 the
    build, 2-3 the first append, 4-5 the second."""
    tmp = tmp_path_factory.mktemp("layered")
    clips = make_folder(tmp / "clips", per_class=2, classes=("sine", "noise"))
    more = make_folder(tmp / "more", per_class=4, classes=("buzz",))
    out = tmp / "store"
    build = ["dataset=folder", f"dataset.root={clips}", "shard_size=3", *FAST]
    run_cli([*build, f"store={out}"])
    make_folder(clips, per_class=2, classes=("clicks",))
    (clips / "clicks" / "broken.wav").write_bytes(b"not audio")  # rejected, in the appended shard
    sf.write(clips / "sine" / "sine_0.wav", tone(1.4, 16000, 2100), 16000)  # changed under its name
    append1 = [*build, "mode=append"]
    run_cli([*append1, f"store={out}"])
    append2 = ["dataset=folder", f"dataset.root={more}", "shard_size=3", "mode=append", *FAST]
    run_cli([*append2, f"store={out}"])
    commands = {"build": build, "append1": append1, "append2": append2}
    return tmp, out, commands, snapshot(out)


def test_the_layered_store(layered):
    _, out, _, want = layered
    info = json.loads((out / INFO_FILE).read_text())
    assert [(s["first_shard"], s["end_shard"]) for s in info["build"]["sources"]] == [(0, 2), (2, 4), (4, 6)]
    assert len(want["items"]) == 4 + 2 + 4 and info["build"]["rejected"] == 1  # sine_0 replaced, broken.wav rejected
    assert sorted(want["bytes"]) == sorted(
        [INDEX_FILE, ITEMS_FILE, REJECTED_FILE, "shards/000002.rejected.jsonl"]
        + [f"shards/{n:06d}.{ext}" for n in range(6) for ext in ("npy", "parquet")]
        + ["plans/000000.jsonl", "plans/000002.jsonl", "plans/000004.jsonl"]
    )


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def delete_shard(n: int):
    def damage(root: Path) -> None:
        for path in (root / "shards").glob(f"{n:06d}.*"):
            path.unlink()

    return damage


def on(rel: str, how):
    return lambda root: how(root / rel)


def corrupt_json(path: Path) -> None:
    path.write_text(path.read_text()[:40])


FINAL_FILES = (INFO_FILE, INDEX_FILE, ITEMS_FILE, REJECTED_FILE)
DAMAGES = {
    # the build's part
    "build shard deleted": delete_shard(0),  # the shard that dropped the changed row
    "build shard npy flipped": on("shards/000001.npy", flip_byte),
    # the first append's part
    "append1 shard deleted": delete_shard(2),
    "append1 shard npy flipped": on("shards/000002.npy", flip_byte),
    "append1 shard items truncated": on("shards/000002.parquet", truncate),
    "append1 shard rejected deleted": on("shards/000002.rejected.jsonl", Path.unlink),
    "append1 done marker deleted": on("shards/000002.done", Path.unlink),
    "append1 plan corrupted": on("plans/000002.jsonl", flip_byte),
    # the second append's part
    "append2 shard deleted": delete_shard(5),
    "append2 shard npy truncated": on("shards/000004.npy", truncate),
    "append2 plan deleted": on("plans/000004.jsonl", Path.unlink),
    # the files made from the shards
    "index deleted": on(INDEX_FILE, Path.unlink),
    "index corrupted": on(INDEX_FILE, flip_byte),
    "items truncated": on(ITEMS_FILE, truncate),
    "items emptied": on(ITEMS_FILE, lambda p: p.write_bytes(b"")),
    "rejected deleted": on(REJECTED_FILE, Path.unlink),
    "store.json corrupted": on(INFO_FILE, corrupt_json),
    "store.json deleted": on(INFO_FILE, Path.unlink),
    "store.json corrupted and an append shard deleted": lambda r: (corrupt_json(r / INFO_FILE), delete_shard(4)(r)),
    "every final file deleted": lambda r: [(r / n).unlink() for n in FINAL_FILES],
}


def assert_same_store(root: Path, want: dict) -> None:
    got = snapshot(root)
    assert got["items"] == want["items"] and got["sources"] == want["sources"]
    np.testing.assert_allclose(got["vectors"], want["vectors"], atol=1e-5)
    assert (got["hits"] == want["hits"]).all()
    assert got["bytes"].keys() == want["bytes"].keys()
    assert got["bytes"] == want["bytes"], [k for k in got["bytes"] if got["bytes"][k] != want["bytes"][k]]
    assert got["fingerprint"] == want["fingerprint"]


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_repair_gives_back_the_undamaged_store(layered, tmp_path, capsys, damage):
    _, original, _, want = layered
    out = copy_store(original, tmp_path / "store")
    DAMAGES[damage](out)
    if damage != "append1 done marker deleted":  # the store reads without it; its next run sees it
        with pytest.raises(StoreError):
            IndexStore.open(out, verify=True)
    capsys.readouterr()
    run_cli([f"store={out}", "mode=repair", *FAST])
    printed = capsys.readouterr().out
    assert "build_index: repaired" in printed
    if "shard" not in damage and "marker" not in damage:
        assert "embedded 0 clips" in printed  # made from the shards, nothing re-embedded
    assert_same_store(out, want)


def test_repair_without_the_encoder_settings_is_refused_only_when_a_shard_is_embedded(layered, tmp_path, capsys):
    _, original, _, want = layered
    out = copy_store(original, tmp_path / "store")
    (out / INDEX_FILE).unlink()
    assert main([f"store={out}", "mode=repair", "progress=false"]) == 0  # no shard to embed: no encoder
    assert_same_store(out, want)
    delete_shard(2)(out)
    capsys.readouterr()
    assert main([f"store={out}", "mode=repair", "progress=false"]) == 2  # max_seconds differs from FAST's
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "built with encoder 'aisfx'" in err and "(encoder.max_seconds=1.5)" in err


@pytest.mark.parametrize("command, shard", [("append1", 3), ("append2", 5), ("append2", 0)])
def test_rerunning_an_append_command_repairs_the_store(layered, tmp_path, capsys, command, shard):
    _, original, commands, want = layered
    out = copy_store(original, tmp_path / "store")
    delete_shard(shard)(out)
    (out / ITEMS_FILE).unlink()
    capsys.readouterr()
    run_cli([*commands[command], f"store={out}"])
    printed = capsys.readouterr().out
    assert "build_index: repaired" in printed and f"shard {shard} re-embedded" in printed
    assert " 0 new, " in printed and "0 changed re-embedded" in printed  # its rows are all stored
    assert_same_store(out, want)


def test_rerunning_the_build_command_of_a_grown_folder_says_how_to_repair(layered, tmp_path, capsys):
    _, original, commands, want = layered
    out = copy_store(original, tmp_path / "store")
    (out / ITEMS_FILE).unlink()
    capsys.readouterr()
    assert main([*commands["build"], f"store={out}"]) == 2  # the folder has grown since it was built
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"build_index store={out} mode=repair" in err and "mode=append" in err
    run_cli([f"store={out}", "mode=repair", *FAST])
    assert_same_store(out, want)


def test_a_shard_whose_audio_is_gone_is_a_clear_error(layered, tmp_path, capsys):
    tmp, original, _, want = layered
    out = copy_store(original, tmp_path / "store")
    delete_shard(4)(out)
    flip_byte(out / "shards" / "000005.npy")
    damaged = (out / "shards" / "000005.npy").read_bytes()
    more = tmp / "more"
    moved = more.rename(tmp / "more.away")
    try:
        capsys.readouterr()
        assert main([f"store={out}", "mode=repair", *FAST]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "shard 4 must be embedded again" in err
        assert str(more / "buzz") in err and "put the audio back under" in err and "folder" in err
        assert (out / "shards" / "000005.npy").read_bytes() == damaged  # refused before touching a shard
    finally:
        moved.rename(more)
    run_cli([f"store={out}", "mode=repair", *FAST])
    assert_same_store(out, want)


def test_a_plan_lost_with_its_only_copy_is_a_clear_error(layered, tmp_path, capsys):
    _, original, _, _ = layered
    out = copy_store(original, tmp_path / "store")
    (out / "plans" / "000002.jsonl").unlink()
    delete_shard(2)(out)
    capsys.readouterr()
    assert main([f"store={out}", "mode=repair", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "shard 2" in err and "plans/000002.jsonl is missing" in err
    assert "build it again" in err


def test_a_store_from_before_plans_is_adopted(layered, tmp_path, capsys):
    """A store written before plans/ existed (no plans, markers without plan copies): its plans are
    made from store.json and its shards, then it is repaired and appended to like any other."""
    tmp, original, commands, want = layered
    out = copy_store(original, tmp_path / "store")
    shutil.rmtree(out / "plans")
    for done in (out / "shards").glob("*.done"):
        marker = json.loads(done.read_text())
        done.write_text(json.dumps({k: marker[k] for k in ("count", "key", "files")}, sort_keys=True))
    info = json.loads((out / INFO_FILE).read_text())
    info["files"] = {k: v for k, v in info["files"].items() if not k.startswith("plans/")}
    (out / INFO_FILE).write_text(json.dumps(info))
    IndexStore.open(out, verify=True)  # an old store opens as before
    (out / INDEX_FILE).unlink()
    capsys.readouterr()
    run_cli([f"store={out}", "mode=repair", *FAST])
    assert "embedded 0 clips" in capsys.readouterr().out
    got = snapshot(out)
    assert got["items"] == want["items"] and (got["hits"] == want["hits"]).all()
    assert {k: v for k, v in got["bytes"].items() if not k.startswith("plans/")} == {
        k: v for k, v in want["bytes"].items() if not k.startswith("plans/")
    }
    assert sorted(p.name for p in (out / "plans").iterdir()) == ["000000.jsonl", "000002.jsonl", "000004.jsonl"]
    delete_shard(5)(out)  # its adopted plan re-embeds it
    run_cli([*commands["append2"], f"store={out}"])
    assert "shard 5 re-embedded" in capsys.readouterr().out
    assert snapshot(out)["items"] == want["items"]
