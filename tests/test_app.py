"""rag_app's tabs without a browser: the config and CLI errors, upload checks, Ask (knn on real aisfx
stores, flamingo with the tiny random-weight AF1), Chat (tiny AF1, the round limit), New labels (a
real append with the index builder) and Results (a real evaluate folder). The page itself is driven
in a real browser by tests/test_app_browser.py."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rag_flamingo import paths
from rag_flamingo.app import ask, chat, labels, results
from rag_flamingo.app.context import AppContext
from rag_flamingo.app.main import check_address, check_folders, load_config
from rag_flamingo.app.main import main as rag_app
from rag_flamingo.app.uploads import check_clip, crop_notes
from rag_flamingo.datasets import demo
from rag_flamingo.datasets.manifest import read_manifest
from rag_flamingo.errors import AudioError, ConfigError, RagFlamingoError
from rag_flamingo.store.index_store import IndexStore
from support.clips import SR, synth, write_class
from support.engine import TinyWindowEncoder, build_store, embed_rows

TINY_MODEL = ["model=tiny", "model.audio_encoder={_target_:support.engine.TinyWindowEncoder}"]


def app_config(*overrides: str) -> dict:
    return load_config(list(overrides))


# ----------------------------------------------------------------------------- config and CLI


def test_no_arguments_opens_the_demo_store_and_cli_errors_are_one_line(tmp_path, capsys):
    cfg = app_config()
    assert cfg.host == "127.0.0.1" and cfg.port == 7860 and cfg.share is False and cfg.model == {}
    ctx = AppContext(cfg)
    assert ctx.primary == paths.default_store(cfg.cache_root, "demo", "train", "aisfx")
    for argv, expected in [
        (["prot=1"], "did you mean 'port'"),
        (["port=abc"], "port"),
        (["model=tinny"], "did you mean 'tiny'"),
        ([f"store={tmp_path / 'none'}"], "build it with build_index"),
        ([f"cache_root={tmp_path}"], "run scripts/demo.sh first"),
    ]:
        assert rag_app(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0] and err[0].startswith("rag_app: error:"), (argv, err)


def _one_item_store(tmp_path):
    return build_store(
        tmp_path / "s",
        [{"id": "a", "path": "a.wav", "label": "a"}],
        np.eye(1, 4, dtype=np.float32),
        {"name": "toy"},
        features=False,
    )


def test_port_and_host_are_checked_before_anything_loads(tmp_path, capsys, monkeypatch):
    """Not Gradio's traceback naming GRADIO_SERVER_PORT: one line naming port= or host=, exit 2,
    before the encoders and models load."""
    store = _one_item_store(tmp_path)
    monkeypatch.setattr(AppContext, "warm_up", lambda self: pytest.fail("loaded before host/port were checked"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        for argv, expected in [
            (["port=99999"], "port=99999: "),  # the range: checked when composed, and again by serve
            (["port=0"], "port=0: "),
            ([f"port={taken}"], f"port={taken}: already in use on 127.0.0.1; stop what serves it or choose another"),
            (["host=no-such-host.invalid"], "host=no-such-host.invalid: not an address or a name this machine"),
            (["host=192.0.2.1"], "host=192.0.2.1: not an address of this machine"),  # TEST-NET-1: never local
        ]:
            assert rag_app([f"store={store.root}", *argv]) == 2, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"rag_app: error: {expected}"), (argv, err)
            assert "GRADIO" not in err[0] and ("65535" in err[0] or argv[0] not in ("port=99999", "port=0"))
    for port in (0, 99999, "abc"):  # serve() called directly: its own check
        with pytest.raises(ConfigError, match=rf"port={port}: .*1\.\.65535"):
            check_address("127.0.0.1", port)


def test_stores_clips_dir_and_results_dir_are_checked_before_anything_loads(tmp_path, capsys, monkeypatch):
    """A ``stores`` entry that is not a store, a ``clips_dir`` that cannot be made or written, a
    ``results_dir`` that is a file: one line naming the setting, exit 2, before the encoders load."""
    store = _one_item_store(tmp_path)
    monkeypatch.setattr(AppContext, "warm_up", lambda self: pytest.fail("loaded before the settings were checked"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    cases = [
        (["stores=[nonexist]"], f"stores=[nonexist]: {Path('nonexist')} does not exist; build it with build_index"),
        (
            [f"stores=[{store.root},{tmp_path / 'empty'}]"],
            f"stores=[{tmp_path / 'empty'}]: {tmp_path / 'empty'} is not",
        ),
        ([f"clips_dir={tmp_path / 'a_file'}"], f"clips_dir={tmp_path / 'a_file'}: is a file, not a folder"),
        ([f"clips_dir={tmp_path / 'a_file' / 'x'}"], f"clips_dir={tmp_path / 'a_file' / 'x'}: is under"),
        ([f"results_dir={tmp_path / 'a_file'}"], f"results_dir={tmp_path / 'a_file'}: is a file, not a folder"),
    ]
    if Path("/proc/self").is_dir():  # Linux: a folder where mkdir always fails, even for root
        cases.append((["clips_dir=/proc/xx"], "clips_dir=/proc/xx: cannot be created or written"))
    for argv, expected in cases:
        assert rag_app([f"store={store.root}", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"rag_app: error: {expected}"), (argv, err)
    # fine: a clips_dir still to be made (the probe leaves nothing behind), a results_dir not there yet
    cfg = app_config(
        f"store={store.root}",
        f"stores=[{store.root}]",
        f"clips_dir={tmp_path / 'new' / 'clips'}",
        f"results_dir={tmp_path / 'no_results_yet'}",
    )
    check_folders(cfg, Path(cfg.cache_root))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "empty", "s"]


# ----------------------------------------------------------------------------- uploads


def test_bad_uploads_are_messages_and_long_clips_say_what_is_used(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n" * 50)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR, np.float32), SR)
    good = tmp_path / "whistle.wav"
    sf.write(good, synth("whistle", 1), SR)
    cases = [
        (None, "upload or record a clip first"),
        (tmp_path / "gone.wav", "upload it again"),
        (empty, "empty"),
        (text, "not an audio file"),
        (silent, "silent"),
    ]
    for path, expected in cases:
        with pytest.raises(AudioError, match=expected):
            check_clip(path, max_mb=50)
    with pytest.raises(AudioError, match="over the 0.01 MB upload limit"):
        check_clip(good, max_mb=0.01)
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(synth("hum", 2), 12), SR)  # > 12 s
    clip = check_clip(long, max_mb=50)
    assert clip.seconds > 12
    notes = crop_notes(clip, [TinyWindowEncoder()])  # uses its first 2 s
    assert len(notes) == 1 and "uses its first 2 s" in notes[0]
    assert crop_notes(check_clip(good, 50), [TinyWindowEncoder()]) == []


# ----------------------------------------------------------------------------- Ask (aisfx stores)


@pytest.fixture(scope="module")
def loo_ctx(folder_stores):
    return AppContext(app_config(f"store={folder_stores / 'loo_idx'}", f"stores=[{folder_stores / 'train_idx'}]"))


def test_ask_answers_with_shots_and_what_produced_it(loo_ctx, folder_stores, tmp_path):
    assert [p.name for p in loo_ctx.store_paths()][:2] == ["loo_idx", "train_idx"]
    parts = loo_ctx.parts(loo_ctx.primary)
    names, unavailable = loo_ctx.predictor_choices(parts)
    assert {"knn", "prototype"} <= set(names)
    assert "no model configured" in unavailable["flamingo"] and "text embeddings" in unavailable["zero_shot"]
    assert ask.task_choices(parts.store) == ["classification", "tagging"]
    query = tmp_path / "query.wav"
    sf.write(query, synth("hum", 991), SR)
    res = ask.ask(loo_ctx, query, loo_ctx.primary, "classification", "knn", 3)
    assert res.output == "hum" and 0 < res.score <= 1
    assert len(res.shots) == 3 and all(s.text == "hum" and Path(s.audio).is_file() for s in res.shots)
    assert all(0 < s.similarity <= 1 for s in res.shots)  # in prompt order (retrieval shuffles them)
    assert parts.store.fingerprint() in res.summary and "knn, 3 shots" in res.summary and res.prompt is None
    proto = ask.ask(loo_ctx, query, loo_ctx.primary, "classification", "prototype", 3)
    assert proto.output == "hum" and proto.shots == [] and "prototype, task" in proto.summary
    # an upload that is a copy of a store clip never answers itself: its copy is left out and counted
    copy = tmp_path / "copy.wav"
    shutil.copy(folder_stores / "loo" / "clicks" / "0.wav", copy)
    res = ask.ask(loo_ctx, copy, loo_ctx.primary, "classification", "knn", 9)
    assert "1 exact copy of this clip" in " ".join(res.notes)
    assert "only 8 usable shots of the 9 asked" in " ".join(res.notes)  # 9 items, the copy left out
    original = (folder_stores / "loo" / "clicks" / "0.wav").resolve()
    assert len(res.shots) == 8 and all(Path(s.audio).resolve() != original for s in res.shots)
    for bad, expected in [("captioning", "carry no captions; choose one of classification, tagging")]:
        with pytest.raises(ConfigError, match=expected):
            ask.ask(loo_ctx, query, loo_ctx.primary, bad, "knn", 3)


# ----------------------------------------------------------------------------- flamingo + Chat (tiny AF1)


@pytest.fixture(scope="module")
def tiny_ctx(tmp_path_factory):
    root = demo.ensure_demo()
    train = read_manifest(root / "train.jsonl")
    enc = TinyWindowEncoder()
    store = build_store(tmp_path_factory.mktemp("store"), train, embed_rows(enc, train, root), enc.fingerprint())
    cfg = app_config(f"store={store.root}", *TINY_MODEL, "model.generation.max_new_tokens=3")
    return AppContext(cfg, encoders={enc.name: enc}), root


def test_ask_with_flamingo_shows_the_exact_prompt(tiny_ctx):
    ctx, root = tiny_ctx
    parts = ctx.parts(ctx.primary)
    names, _ = ctx.predictor_choices(parts)
    assert "flamingo" in names
    clip = root / read_manifest(root / "test.jsonl")[0]["path"]
    res = ask.ask(ctx, clip, ctx.primary, "classification", "flamingo", 2)
    assert res.prompt is not None and res.prompt.count("<audio>") == 3 and "options:" in res.prompt.lower()
    assert len(res.shots) == 2 and all(s.status == "used" for s in res.shots)
    assert isinstance(res.output, str) and "flamingo, 2 shots" in res.summary
    with pytest.raises(ConfigError, match="<= 2"):  # the tiny model has 3 audio slots: 2 shots + the query
        ask.ask(ctx, clip, ctx.primary, "classification", "flamingo", 3)
    with pytest.raises(ConfigError, match="CLAP encoder"):  # the CLAP filter needs a CLAP encoder
        ask.ask(ctx, clip, ctx.primary, "classification", "flamingo", 2, clap_samples=3)


def test_chat_two_rounds_then_the_model_limit(tiny_ctx):
    ctx, root = tiny_ctx
    clip = root / read_manifest(root / "test.jsonl")[0]["path"]
    dialogue = chat.start_chat(ctx, clip)
    streamed = list(chat.say(ctx, dialogue, "What do you hear?"))  # the answer as it grows
    first = streamed[-1]
    assert len(streamed) >= 2 and all(first.startswith(p) for p in streamed[:-1])
    second = list(chat.say(ctx, dialogue, "Anything else?"))[-1]
    assert [u for u, _ in dialogue.session.history] == ["What do you hear?", "Anything else?"]
    assert [a.strip() for _, a in dialogue.session.history] == [first, second] and dialogue.rounds_left == 2
    with pytest.raises(ConfigError, match="type a message"):
        list(chat.say(ctx, dialogue, "  "))
    list(chat.say(ctx, dialogue, "3"))
    list(chat.say(ctx, dialogue, "4"))
    with pytest.raises(ConfigError, match="up to 4 rounds"):
        list(chat.say(ctx, dialogue, "5"))
    with pytest.raises(ConfigError, match="no model configured"):
        chat.start_chat(AppContext(app_config(f"store={ctx.primary}")), clip)


@pytest.mark.parametrize(("kind", "audio_token"), [("qwen2_audio", "<|AUDIO|>"), ("voxtral", "[AUDIO]")])
def test_ask_with_a_transformers_audio_lm(tmp_path, kind, audio_token):
    """rag_app model=<kind> model.checkpoint=<folder>: the Ask tab answers with the tiny Qwen2-Audio or
    Voxtral (generated, and ranked over the options with flamingo.decode=rank); the Chat tab says it is AF1's."""
    from support.audio_lms import save_tiny

    root = demo.ensure_demo()
    train = [{**r, "path": str(root / r["path"])} for r in read_manifest(root / "train.jsonl")]
    enc = TinyWindowEncoder()
    store = build_store(tmp_path / "store", train, embed_rows(enc, train, root), enc.fingerprint(), features=False)
    folder = save_tiny(kind, tmp_path / kind)
    clip = root / read_manifest(root / "test.jsonl")[0]["path"]
    base = [f"store={store.root}", f"model={kind}", f"model.checkpoint={folder}", "model.device=cpu"]
    base.append("model.generation.max_new_tokens=3")
    ctx = AppContext(app_config(*base), encoders={enc.name: enc})
    assert "flamingo" in ctx.predictor_choices(ctx.parts(ctx.primary))[0]
    res = ask.ask(ctx, clip, ctx.primary, "classification", "flamingo", 2)
    assert res.prompt is not None and res.prompt.count(audio_token) == 3 and isinstance(res.output, str)
    ranked = AppContext(app_config(*base, "flamingo.decode=rank"), encoders={enc.name: enc})
    res = ask.ask(ranked, clip, ranked.primary, "classification", "flamingo", 2)
    labels = sorted({r["label"] for r in train})
    assert res.output in labels
    with pytest.raises(ConfigError, match="AF1 chat model"):
        chat.start_chat(ctx, clip)


# ----------------------------------------------------------------------------- New labels


def test_new_label_is_appended_and_then_answers(folder_stores, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(folder_stores / "loo_idx", store)
    ctx = AppContext(app_config(f"store={store}", f"clips_dir={tmp_path / 'clips'}"))
    before = len(ctx.parts(store).store)
    write_class(tmp_path / "up", "noise", 4, seed0=700)
    uploads = sorted((tmp_path / "up").glob("*.wav"))
    bad = tmp_path / "up" / "bad.wav"
    bad.write_text("not audio")
    res = labels.add_clips(ctx, store, " noise bursts ", [*uploads[:3], bad])
    assert res.status == "appended" and res.added == 3 and len(res.skipped) == 1 and "bad.wav" in res.skipped[0]
    reopened = IndexStore.open(store)
    assert len(reopened) == before + 3 and "noise bursts" in reopened.label_set()
    assert ["noise bursts", 3] in labels.label_counts(reopened)
    kept = sorted((tmp_path / "clips" / "store" / "noise bursts").glob("*.wav"))
    assert len(kept) == 3 and len(list((tmp_path / "clips" / "store" / "manifests").glob("*.jsonl"))) == 1
    answer = ask.ask(ctx, uploads[3], store, "classification", "knn", 3)
    assert answer.output == "noise bursts", answer.summary
    again = labels.add_clips(ctx, store, "noise bursts", uploads[:1])  # the same clip: nothing new
    assert again.status == "nothing-new" and again.added == 0
    for label, files, expected in [
        ("", uploads[:1], "type the new label"),
        ("../up", uploads[:1], "no slashes"),
        ("x", [], "upload one or more clips"),
    ]:
        with pytest.raises(ConfigError, match=expected):
            labels.add_clips(ctx, store, label, files)
    with pytest.raises(RagFlamingoError, match="no usable clip"):
        labels.add_clips(ctx, store, "x", [bad])


# ----------------------------------------------------------------------------- Results


def test_results_folder_table_plot_and_playable_predictions(folder_stores, tmp_path):
    from rag_flamingo.evaluate import main as evaluate

    out = tmp_path / "runs" / "loo"
    argv = [
        f"store={folder_stores / 'loo_idx'}",
        "dataset=folder",
        f"dataset.root={folder_stores / 'loo'}",
        "predictor=knn,prototype",
        "shots=1,2",
        f"output_dir={out}",
        "progress=false",
    ]
    assert evaluate(argv) == 0
    assert results.result_folders(tmp_path / "runs") == [out]
    res = results.open_results(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "| knn | 1 | 9 |" in res.table and metrics["run_key"] in res.table and "chance:" in res.table
    assert res.plot == out / "metric_vs_shots.png" and len(res.predictions) == 9 * 3
    labels_, index = res.choices()[0]
    assert labels_.startswith("knn k=1 · ") and index == 0
    detail = results.prediction_detail(res, 0)
    assert detail.query_audio is not None and detail.query_audio.is_file() and detail.notes == []
    assert len(detail.shots) == 1 and Path(detail.shots[0].audio).is_file() and detail.shots[0].text
    with pytest.raises(ConfigError, match="not an evaluate output folder"):
        results.open_results(tmp_path)


def test_the_page_runs_model_and_index_jobs_one_at_a_time(loo_ctx):
    from rag_flamingo.app.ui import MODEL_QUEUE, build_app

    page = build_app(loo_ctx)
    jobs = {f.name: f for f in page.fns.values() if f.name in ("on_ask", "on_add", "on_classify")}
    assert set(jobs) == {"on_ask", "on_add", "on_classify"}  # Chat is off: no model configured
    assert all(f.concurrency_id == MODEL_QUEUE and f.concurrency_limit == 1 for f in jobs.values())
