"""``rag_classify out=``: the labels are renamed over ``out`` at the end, so an ``out`` that is not a
regular file (a device such as /dev/full, a FIFO, a socket) is refused before any work, one line
naming ``out=``; a symlink is followed (its target gets the labels, the link stays a link)."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest

import rag_flamingo.classify as classify_module
from rag_flamingo.classify import check_out, out_refusal
from rag_flamingo.classify import main as rag_classify
from rag_flamingo.errors import ConfigError


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (stat.S_IFCHR, "is a character device"),
        (stat.S_IFBLK, "is a block device"),
        (stat.S_IFIFO, "is a FIFO (named pipe)"),
        (stat.S_IFSOCK, "is a socket"),
        (stat.S_IFDIR, "is a folder"),
        (stat.S_IFLNK, "is a symlink"),
    ],
)
def test_out_refusal_names_every_kind_that_is_not_a_regular_file(kind, expected):
    assert out_refusal(kind | 0o666) == expected  # the decision on a mode alone: no device is touched
    assert out_refusal(stat.S_IFREG | 0o644) is None


def test_a_fifo_or_socket_out_is_refused_before_any_work(folder_stores, tmp_path, capsys, monkeypatch):
    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))

    def no_work(*args, **kwargs):
        raise AssertionError("the store was opened before out= was checked")

    monkeypatch.setattr(classify_module, "open_store", no_work)
    store, clips = folder_stores / "train_idx", folder_stores / "test"
    try:
        for out, what in ((fifo, "is a FIFO (named pipe)"), (sock_path, "is a socket")):
            assert rag_classify([f"store={store}", f"audio={clips}", f"out={out}"]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"rag_classify: error: out={out}: {what}"), err
            assert "Traceback" not in err[0]
    finally:
        sock.close()
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and stat.S_ISSOCK(sock_path.lstat().st_mode)
    assert not (tmp_path / "labels.fifo.tmp").exists()


def test_a_symlink_to_a_fifo_is_refused_and_a_non_regular_tmp_too(tmp_path):
    fifo = tmp_path / "p"
    os.mkfifo(fifo)
    link = tmp_path / "link.jsonl"
    link.symlink_to(fifo)
    with pytest.raises(ConfigError, match=r"is a FIFO"):
        check_out(link)
    assert link.is_symlink()
    os.mkfifo(tmp_path / "o.jsonl.tmp")  # the .tmp the records would go to: opening it would block
    with pytest.raises(ConfigError, match=r"its temporary file .*o\.jsonl\.tmp\): is a FIFO"):
        check_out(tmp_path / "o.jsonl")


def test_a_symlink_out_is_followed_and_stays_a_link(tmp_path):
    target_dir = tmp_path / "real"
    target_dir.mkdir()
    target = target_dir / "labels.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert check_out(link) == target.resolve()
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(target_dir / "new.jsonl")
    assert check_out(dangling) == (target_dir / "new.jsonl").resolve()


def test_rag_classify_writes_through_a_symlink_out(folder_stores, tmp_path):
    store, clips = folder_stores / "train_idx", folder_stores / "test"
    target_dir = tmp_path / "real"
    target_dir.mkdir()
    target = target_dir / "labels.jsonl"
    target.write_text("an earlier run's labels\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert rag_classify([f"store={store}", f"audio={clips}", "k=1", f"out={link}"]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    labels = {json.loads(line)["label"] for line in target.read_text().splitlines()}
    assert labels == {"clicks", "hum", "whistle"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "real"]
    assert sorted(p.name for p in target_dir.iterdir()) == ["labels.jsonl"]


def test_records_name_the_predictor_settings_and_a_lost_batch_leaves_no_tmp(folder_stores, tmp_path, caplog):
    """The records say which predictor settings labelled them (fusion's weight); a transductive batch
    left with one readable clip gives it no answer (warned) and reports the unreadable one, without
    an empty temporary file left behind on a refusal."""
    store, clips = folder_stores / "train_idx", folder_stores / "test"
    out = tmp_path / "labels.jsonl"
    args = [f"store={store}", f"audio={clips}", "predictor=fusion", "k=2", f"out={out}"]
    assert rag_classify([*args, "predictors.fusion.weight=0.25"]) == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert first["settings"]["weight"] == 0.25 and first["settings"]["base"] == "lda"
    pair = tmp_path / "pair"
    pair.mkdir()
    (pair / "good.wav").write_bytes((clips / "hum" / "0.wav").read_bytes())
    (pair / "broken.wav").write_text("not audio")
    with caplog.at_level("WARNING"):
        assert rag_classify([f"store={store}", f"audio={pair}", "adapt=center", f"out={out}"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in recs if "broken" in r["path"]] == [None] and "error" in recs[0] | recs[1]
    assert "needs at least 2 readable ones" in caplog.text
    one = tmp_path / "one.jsonl"
    assert rag_classify([f"store={store}", f"audio={pair / 'good.wav'}", "adapt=center", f"out={one}"]) == 2
    assert not one.exists() and not (tmp_path / "one.jsonl.tmp").exists()


def test_a_store_of_one_label_warns(folder_stores, tmp_path, caplog):
    """Every clip gets a one-label store's label: rag_classify says so."""
    from index_builder.cli import main as build_index

    hums = tmp_path / "clips" / "hum"
    hums.mkdir(parents=True)
    for name in ("0.wav",):
        (hums / name).write_bytes((folder_stores / "loo" / "hum" / name).read_bytes())
    one = tmp_path / "one"
    assert build_index(["dataset=folder", f"dataset.root={tmp_path / 'clips'}", "encoder=aisfx", f"store={one}"]) == 0
    with caplog.at_level("WARNING"):
        assert rag_classify([f"store={one}", f"audio={folder_stores / 'test'}", "k=1"]) == 0
    assert "holds one label ('hum'): every clip gets it" in caplog.text
