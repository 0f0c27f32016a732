"""The README recipe "new labels without fine-tuning", from a fresh folder of clips (aisfx, real files).

build_index dataset=folder dataset.root=clips/ store=my_index
rag_classify store=my_index audio=new/ predictor=knn|prototype out=labels.jsonl
(add a class folder) build_index dataset=folder dataset.root=clips/ store=my_index mode=append
"""

from __future__ import annotations

import json

import pytest

from index_builder.cli import main as build_index
from rag_flamingo.classify import main as rag_classify
from rag_flamingo.store.index_store import IndexStore
from support.clips import write_class


def classify(index, audio, out, *extra) -> dict[str, dict]:
    assert rag_classify([f"store={index}", f"audio={audio}", f"out={out}", *extra]) == 0
    return {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.read_text().splitlines())}


@pytest.mark.slow
def test_new_labels_from_a_folder_of_clips(tmp_path, capsys):
    clips, new, index = tmp_path / "clips", tmp_path / "new", tmp_path / "my_index"
    for n, kind in enumerate(("whistle", "hum", "clicks")):
        write_class(clips / kind, kind, 4, seed0=100 * n)
        write_class(new, kind, 2, seed0=100 * n + 50)  # unseen clips of the same classes
    (new / "broken.wav").write_bytes(b"not audio at all")
    base = ["dataset=folder", f"dataset.root={clips}", f"store={index}", "progress=false", "num_workers=0"]
    build_index(base)
    assert IndexStore.open(index).label_set() == ["clicks", "hum", "whistle"]

    for predictor in ("knn", "prototype"):
        got = classify(index, new, tmp_path / f"{predictor}.jsonl", f"predictor={predictor}", "k=3")
        assert got["broken.wav"]["label"] is None and got["broken.wav"]["error"]  # reported, not fatal
        labelled = {name: r for name, r in got.items() if name != "broken.wav"}
        correct = sum(r["label"] == name.split("_")[0] for name, r in labelled.items())
        assert len(labelled) == 6 and correct >= 5, labelled
    printed = capsys.readouterr()
    assert "whistle_0.wav\twhistle\t" in printed.out and "broken.wav\tERROR" in printed.err

    # a new class later: add its folder and append; the option set grows, nothing is re-embedded
    write_class(clips / "noise", "noise", 4, seed0=900)
    write_class(tmp_path / "new_noise", "noise", 2, seed0=950)
    build_index(base + ["mode=append"])
    store = IndexStore.open(index)
    assert store.label_set() == ["clicks", "hum", "noise", "whistle"] and len(store) == 16
    got = classify(index, tmp_path / "new_noise", tmp_path / "noise.jsonl", "predictor=knn", "k=3")
    assert [r["label"] for r in got.values()] == ["noise", "noise"]
    assert all(len(r["shots"]) == 3 for r in got.values())
