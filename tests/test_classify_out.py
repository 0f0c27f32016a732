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
