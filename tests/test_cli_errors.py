"""Every user error of every CLI: exit code 2, one line on stderr naming the problem, no traceback.
Unknown or misspelt options are refused (with a "did you mean"), never ignored."""

from __future__ import annotations

import json

import pytest

from index_builder.cli import main as build_index
from rag_flamingo.classify import main as rag_classify
from rag_flamingo.evaluate import main as evaluate
from support.clips import evaluate_folder_queries


def bad_lines(folder_stores, tmp_path):
    store, clips = folder_stores / "train_idx", folder_stores / "test"
    missing = tmp_path / "no_such_store"
    a_file = tmp_path / "a_file"
    a_file.write_text("not a store")
    return {
        build_index: [
            (["stroe=x"], "did you mean 'store'"),
            (["index=/data/my_index"], "store=/data/my_index"),
            (["dataset=esc5"], "did you mean 'esc50'"),
            (["mode=bogus", f"store={tmp_path / 's'}"], "mode=bogus: must be one of build, append"),
            (
                ["+encoder.chekpoint=x", f"store={tmp_path / 's'}"],
                "encoder aisfx has no option 'chekpoint' (did you mean",
            ),
            (["num_workers=-1"], "num_workers=-1: must be >= 0"),
            (["num_workers=100000"], "num_workers=100000: must be >= 0 and <= 256"),
            ([f"store={tmp_path / 'cu'}", "device=cuda:99"], "device=cuda:99: torch sees no such CUDA device"),
            (
                ["dataset=folder", f"dataset.root={clips}", f"store={tmp_path / 'mb'}", "encoder.max_blocks=0"],
                "encoder option max_blocks=0: must be >= 1",
            ),
            (
                ["dataset=folder", f"dataset.root={clips}", f"store={tmp_path / 'ms'}", "encoder.max_seconds=nan"],
                "encoder option max_seconds=nan: must be a finite number > 0",
            ),
            (["dataset=folder", f"dataset.root={clips}", f"store={clips}"], "holds other files, not a store"),
            (["progress=2"], "progress=2: must be true or false"),
            ([f"output={tmp_path / 'o2'}", f"store={tmp_path / 'o3'}"], "output= and store= name the same setting"),
            (["--info", "bogus"], "--info bogus: use one of all, config, defaults, searchpath"),
            ([f"store={a_file}"], "is a file, not a store folder"),
            (
                [
                    "dataset=folder",
                    f"dataset.root={clips}",
                    "index=ivf_pq",
                    f"store={tmp_path / 'pq'}",
                    "num_workers=0",
                    "progress=false",
                ],
                "index=ivf_pq trains 16 PQ centroids per sub-quantiser and needs at least 16 items, the store has 3",
            ),
            (["shard_size=abc"], "shard_size"),
            (["dataset=folder"], "dataset.root is not set"),
            (["dataset=folder", f"dataset.root={tmp_path / 'nowhere'}"], "folder not found"),
            (["dataset"], "not key=value"),
            ([f"store={a_file}/sub"], "is under"),  # a store folder that cannot be made
            (["~index"], "removing a setting is not supported; set it to null instead (index=null)"),
        ],
        evaluate: [
            (["predictr=knn"], "did you mean 'predictor'"),
            (["shots=abc", f"store={store}"], "shots=abc: must be a whole number"),
            (
                [f"store={store}", "dataset=folder", f"dataset.root={clips}", "predictor=knn", "shots=0"],
                "predictor knn needs shots >= 1",
            ),
            ([f"store={store}", "dataset=folder", f"dataset.root={clips}", "predictor=bogus"], "unknown predictor"),
            ([f"store={missing}", "dataset=folder", f"dataset.root={clips}"], "no_such_store"),
            (["index=/data/my_index"], "store=/data/my_index"),
            ([f"store={a_file}"], "is a file, not a store folder"),
            (["limit=-1"], "limit=-1: must be >= 1"),
            (["suite.dry_run=true"], "suite.dry_run needs a suite"),
            (["suite.runs.shots=1"], "suite.runs is a list"),
            ([f"store={store}", f"output_dir={a_file}"], f"output_dir={a_file}: is a file, not a folder"),
            (["suite=demo", f"suite.output_dir={a_file}/x"], "suite.output_dir="),
            (["retrieval.modee=knn"], "did you mean 'retrieval.mode'"),
            (["device=tpu"], "device=tpu: must look like auto, cpu, cuda, cuda:N or mps"),
            (["model.generation.num_beams=0"], "model.generation.num_beams=0: must be >= 1"),
            (["model.num_slots=0"], "model.num_slots=0: must be >= 1"),
            (["dataset=demo", "index_split=bar"], "index_split=bar: dataset 'demo' has no split 'bar'"),
            (["--check", "suite=af1"], "a suite's plan lists what each run needs"),
            (
                [f"store={store}", "dataset=folder", f"dataset.root={clips},{store}", f"output_dir={tmp_path / 'o'}"],
                "a comma list runs 2 evaluations, and one output_dir=",
            ),
            (["retrieval=knnn"], "did you mean 'knn'"),
            (["task=clasification"], "did you mean 'classification'"),
            (["+foo=1"], "unknown option 'foo'"),
            (["retrieval.overfetch=-1", f"store={store}", "dataset=folder", f"dataset.root={clips}"], "overfetch"),
        ],
        rag_classify: [
            (["predictr=prototype", f"store={store}", f"audio={clips}"], "did you mean 'predictor'"),
            ([f"store={store}"], "audio= is required"),
            ([f"audio={clips}"], "store= is required"),
            ([f"store={store}", f"audio={clips}", "k=0"], "k=0"),
            (
                [f"store={store}", f"audio={clips}", "k=abc"],
                "k=abc: k: Value 'abc' of type 'str' could not be converted to Integer",
            ),
            (
                [f"store={store}", f"audio={clips}", "encoder=laion_clap"],
                "built with encoder 'aisfx', not 'laion_clap'",
            ),
            ([f"index={store}", f"audio={clips}"], "store="),
            ([f"store={missing}", f"audio={clips}"], "no_such_store"),
            ([f"store={store}", f"audio={tmp_path / 'nothing.wav'}"], "no such file"),
            ([f"store={store}", f"audio={clips}", "task=captioning"], "not captioning"),
            (
                [f"store={store}", f"audio={clips}", "encoder.max_seconds=0"],
                "encoder has no settings until one is chosen (encoder=<name> encoder.max_seconds=...)",
            ),
            ([f"store={clips}", f"audio={clips}"], "holds other files, not a store"),
            ([f"store={store}", f"audio={clips}", "predictor=knn,prototype"], "rag_classify takes one value here"),
        ],
    }


def test_bad_command_lines_are_one_line_errors(folder_stores, tmp_path, capsys):
    for main, cases in bad_lines(folder_stores, tmp_path).items():
        for argv, expected in cases:
            code = main(argv)
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2, (main.__module__, argv, err)
            assert len(err) == 1 and expected in err[0], (argv, err)
            assert "Traceback" not in err[0]


def test_rag_classify_paths_with_tabs_and_newlines_stay_one_tsv_row(folder_stores, tmp_path, capsys):
    odd = tmp_path / "odd"
    odd.mkdir()
    name = "a\tb\nc.wav"
    (odd / name).write_bytes((folder_stores / "test" / "hum" / "0.wav").read_bytes())
    assert (
        rag_classify([f"store={folder_stores / 'train_idx'}", f"audio={odd}", "k=1", f"out={tmp_path / 'o.jsonl'}"])
        == 0
    )
    (line,) = capsys.readouterr().out.splitlines()
    path, label, score = line.split("\t")
    assert path.endswith("a\\tb\\nc.wav") and label == "hum" and float(score) > 0
    rec = json.loads((tmp_path / "o.jsonl").read_text())
    assert rec["path"].endswith(name) and rec["store"] == str(folder_stores / "train_idx")


def test_rag_classify_out_is_checked_before_any_work_and_written_whole(folder_stores, tmp_path, capsys, monkeypatch):
    store, clips = folder_stores / "train_idx", folder_stores / "test"
    folder = tmp_path / "a_folder"
    folder.mkdir()
    (tmp_path / "a_file").write_text("not a folder")
    import rag_flamingo.classify as classify_module

    def no_work(*args, **kwargs):
        raise AssertionError("the store was opened before out= was checked")

    with monkeypatch.context() as m:
        m.setattr(classify_module, "open_store", no_work)
        for out, expected in (
            (folder, f"out={folder}: is a folder; give a file to write, e.g. out={folder / 'labels.jsonl'}"),
            (tmp_path / "a_file" / "labels.jsonl", f"out={tmp_path / 'a_file' / 'labels.jsonl'}: cannot be written"),
        ):
            assert rag_classify([f"store={store}", f"audio={clips}", f"out={out}"]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"rag_classify: error: {expected}"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder"]  # no out.tmp left behind
    assert list(folder.iterdir()) == []
    out = tmp_path / "labels.jsonl"
    out.write_text("an earlier run's labels\n")
    assert rag_classify([f"store={store}", f"audio={clips}", "k=1", f"out={out}"]) == 0
    labels = {
        json.loads(line)["path"].split("/")[-2]: json.loads(line)["label"] for line in out.read_text().splitlines()
    }
    assert labels == {"clicks": "clicks", "hum": "hum", "whistle": "whistle"}
    assert not (tmp_path / "labels.jsonl.tmp").exists()


def test_shots_beyond_the_store_warn_once_and_the_table_says_how_many_were_used(
    folder_stores, tmp_path, capsys, caplog
):
    extra = ["predictor=knn", "shots=[1,5]", f"output_dir={tmp_path / 'e'}", "batch_size=1"]
    assert evaluate_folder_queries(folder_stores, *extra) == 0
    assert sum("fewer than 5 shots" in r.getMessage() for r in caplog.records) == 1  # 3 batches, one warning
    table = capsys.readouterr().out
    assert "| knn | 5 | 3 |" in table and table.split("| knn | 5 | 3 |")[1].split("\n")[0].rstrip().endswith("| 3 |")


@pytest.mark.parametrize("manifest_path", ["../../outside.wav", "a/../../b.wav"])
def test_manifest_paths_leaving_the_root_are_refused(tmp_path, manifest_path):
    from rag_flamingo.datasets.manifest import read_manifest
    from rag_flamingo.errors import ManifestError

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "x", "path": manifest_path}) + "\n")
    with pytest.raises(ManifestError, match="leaves the dataset root"):
        read_manifest(manifest)
    assert read_manifest(manifest, allow_outside_root=True)[0]["path"] == manifest_path


def test_readme_manifest_placeholder_and_folder_splits(tmp_path):
    from rag_flamingo.components import store_path
    from rag_flamingo.datasets.sources import split_name
    from rag_flamingo.evaluate import load_config

    cfg = load_config(["dataset=folder", f"dataset.manifest={tmp_path}/{{split}}.jsonl", "dataset.root=/audio"])
    assert cfg.dataset.manifest == f"{tmp_path}/{{split}}.jsonl"
    # a per-split manifest of your own: build_index indexes train, evaluate queries test (not all.jsonl)
    assert split_name(cfg.dataset, "index") == "train" and split_name(cfg.dataset, "query") == "test"
    # one manifest, however its path is spelt (absolute, relative, through a symlink): one default store
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    spelt = [
        load_config(["dataset=folder", f"dataset.manifest={where}/{{split}}.jsonl", "dataset.root=/audio"])
        for where in (tmp_path, tmp_path / "link", tmp_path / "clips" / "..")
    ]
    assert len({store_path(c) for c in spelt}) == 1
    single = load_config(["dataset=folder", f"dataset.manifest={tmp_path}/mine.jsonl"])
    assert split_name(single.dataset, "index") == split_name(single.dataset, "query") == "all"
    for split in ("train", "test"):
        (tmp_path / "clips" / split / "dog").mkdir(parents=True)
        (tmp_path / "clips" / split / "dog" / "1.wav").write_bytes(b"")
    cfg = load_config(["dataset=folder", f"dataset.root={tmp_path / 'clips'}"])
    assert split_name(cfg.dataset, "index") == "train" and split_name(cfg.dataset, "query") == "test"
    name = store_path(cfg).name
    assert name.startswith("folder-clips-") and name.endswith("-train-aisfx")
    # a second folder of the same name elsewhere gets its own default store; the same folder the same one
    (tmp_path / "other" / "clips").mkdir(parents=True)
    other = load_config(["dataset=folder", f"dataset.root={tmp_path / 'other' / 'clips'}"])
    again = load_config(["dataset=folder", f"dataset.root={tmp_path / 'other' / '..' / 'clips'}"])
    assert store_path(other).name.startswith("folder-clips-") and store_path(other) != store_path(cfg)
    assert store_path(again) == store_path(cfg)


def test_hydras_own_flags_work_as_in_hydra(capsys):
    for main in (build_index, evaluate, rag_classify):
        assert main(["--cfg", "job", "--resolve"]) == 0
        job = capsys.readouterr().out
        assert "cache_root:" in job and "hydra:" not in job and "${" not in job  # printed resolved
        assert main(["--cfg", "job"]) == 0
        assert "cache_root: ${oc.env:RAG_FLAMINGO_CACHE_ROOT" in capsys.readouterr().out  # as written, as in Hydra
        assert main(["--cfg", "hydra"]) == 0
        hydra = capsys.readouterr().out
        assert hydra.startswith("hydra:") and "cache_root:" not in hydra
        assert main(["-c", "all"]) == 0
        both = capsys.readouterr().out
        assert "cache_root:" in both and "hydra:" in both
        assert main(["--info"]) == 0
        info = capsys.readouterr().out
        assert "Config search path:" in info and "encoder: aisfx," in info and "Defaults list:" in info
    assert evaluate(["--cfg", "job", "predictor=knn,prototype", "shots=1,4", "-m"]) == 0  # lists of one run
    listed = capsys.readouterr().out
    assert "- knn\n- prototype" in listed and "shots:\n- 1\n- 4" in listed and "# evaluate" not in listed
    assert build_index(["--cfg", "job", "index=flat,hnsw"]) == 0  # a sweep: one config per run
    swept = capsys.readouterr().out
    assert swept.count("# build_index") == 2 and "type: flat" in swept and "type: hnsw" in swept
    assert evaluate(["--resolve"]) == 2
    assert "--resolve goes with --cfg" in capsys.readouterr().err
    assert build_index(["--cfg", "--check"]) == 2
    assert "--cfg and --check each print a report of their own" in capsys.readouterr().err


def test_an_encoder_request_matches_the_stores_described_setting():
    """store.json records some settings with their description (LAION-CLAP's long_audio 'mean: mean
    of ...'); the same setting requested by name (encoder=laion_clap: long_audio=mean) matches it, and
    another one is still refused in one line naming both."""
    from types import SimpleNamespace

    from rag_flamingo.components import check_encoder_request
    from rag_flamingo.errors import StoreError

    built = {"name": "laion_clap", "long_audio": "mean: mean of normalised embeddings of 10 s windows"}
    store = SimpleNamespace(root="s", info=SimpleNamespace(encoder=built))
    check_encoder_request(store, {"name": "laion_clap", "long_audio": "mean", "runtime": "openvino"})
    with pytest.raises(StoreError, match="long_audio='head'"):
        check_encoder_request(store, {"name": "laion_clap", "long_audio": "head"})
    described = {"name": "ms_clap_2023", "long_audio": "mean of L2-normalised consecutive windows"}
    check_encoder_request(SimpleNamespace(root="s", info=SimpleNamespace(encoder=described)), {"long_audio": "mean"})
