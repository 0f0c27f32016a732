"""The Gradio page: four tabs wired to the tab modules (`ask`, `chat`, `labels`, `results`).

Every handler shows a user error as a message in its tab (never a traceback); an unexpected error is
logged with its traceback on the server and shown as one line. Model and index jobs share one queue
slot (``concurrency_id="model"``, limit 1), so one runs at a time while the page stays responsive.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import RagFlamingoError
from . import ask as ask_tab
from . import chat as chat_tab
from . import labels as labels_tab
from . import results as results_tab
from .context import AppContext
from .render import message, player, shots_table

logger = logging.getLogger(__name__)

MODEL_QUEUE = "model"  # the queue slot model and index jobs share (one at a time)
CSS = """
.rag-shots td, .rag-shots th { padding: 4px 8px; vertical-align: middle; }
.rag-shots audio { height: 32px; width: 220px; }
"""


def failure(fn: Callable, exc: Exception, outputs: int, status: int) -> tuple:
    """The outputs of a handler that failed: its message in output ``status``, the others unchanged. A user
    error is its one line; anything else is a bug: the server log gets the traceback, the page one line."""
    if isinstance(exc, RagFlamingoError):
        text = message(str(exc))
    else:
        logger.exception("rag_app: %s failed", fn.__name__)
        text = message(f"internal error ({type(exc).__name__}: {exc}); the server log has the details")
    out: list[Any] = [gr.update() for _ in range(outputs)]
    out[status] = text
    return tuple(out)


def guarded(outputs: int, status: int) -> Callable:
    """A handler whose user errors become a message in output ``status`` (the others unchanged)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args):
            try:
                return fn(*args)
            except Exception as exc:
                out = failure(fn, exc, outputs, status)
            return out if outputs > 1 else out[0]

        return run

    return wrap


def guarded_stream(outputs: int, status: int) -> Callable:
    """`guarded` for a handler that yields its outputs as they grow (the Chat tab's streamed answer)."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args):
            try:
                yield from fn(*args)
            except Exception as exc:
                yield failure(fn, exc, outputs, status)

        return run

    return wrap


def build_app(ctx: AppContext) -> gr.Blocks:
    seconds = float(ctx.cfg.player_seconds)
    stores = [(p.name, str(p)) for p in ctx.store_paths()]
    first = str(ctx.primary)
    with gr.Blocks(title="rag-flamingo", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(
            f"## rag-flamingo\nRetrieval-augmented few-shot answers from an index store (opened: `{ctx.primary.name}`)."
        )
        with gr.Tab("Ask", id="ask"):
            _ask_tab(ctx, stores, first, seconds)
        with gr.Tab("Chat", id="chat"):
            _chat_tab(ctx)
        with gr.Tab("New labels", id="labels"):
            _labels_tab(ctx, stores, first, seconds)
        with gr.Tab("Results", id="results"):
            _results_tab(ctx, seconds)
    demo.queue(default_concurrency_limit=4)
    return demo


# ----------------------------------------------------------------------------- Ask


def _store_view(ctx: AppContext, store: str):
    """(task choices, predictor choices, a note on the store, a note on the predictors it cannot use)."""
    parts = ctx.parts(store)
    names, unavailable = ctx.predictor_choices(parts)
    labels = parts.store.label_set()
    note = f"`{parts.store.root.name}`: {len(parts.store)} items, encoder {parts.store.info.encoder.get('name')}"
    if labels:
        shown = ", ".join(labels[:20]) + (f", ... ({len(labels)} labels)" if len(labels) > 20 else "")
        note += f"; options (the store's labels): {shown}"
    missing = "\n\n".join(f"**{name}**: {why}" for name, why in sorted(unavailable.items())) or "none"
    return ask_tab.task_choices(parts.store), names, note, missing


def _ask_tab(ctx: AppContext, stores, first: str, seconds: float) -> None:
    tasks, names, note, missing = _store_view(ctx, first)
    default = ctx.cfg.predictor if ctx.cfg.predictor in names else (names or [None])[0]
    with gr.Row():
        with gr.Column(scale=1):
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip", elem_id="ask-audio")
            store = gr.Dropdown(stores, value=first, label="Store", elem_id="ask-store")
            store_note = gr.Markdown(note, elem_id="ask-store-note")
            with gr.Accordion("Predictors not available for this store", open=False):
                missing_note = gr.Markdown(missing, elem_id="ask-missing")
            task = gr.Dropdown(tasks, value=tasks[0] if tasks else None, label="Task", elem_id="ask-task")
            question = gr.Textbox(label="Question (aqa)", visible=False, elem_id="ask-question")
            predictor = gr.Dropdown(names, value=default, label="Predictor", elem_id="ask-predictor")
            k = gr.Slider(1, 16, value=ctx.cfg.k, step=1, label="k (shots)", elem_id="ask-k")
            clap = gr.Slider(
                1,
                8,
                value=1,
                step=1,
                label="CLAP filter: sample N answers, keep the best CLAP match (flamingo)",
                visible=default == "flamingo",
                elem_id="ask-clap",
            )
            button = gr.Button("Ask", variant="primary", elem_id="ask-button")
        with gr.Column(scale=2):
            status = gr.Markdown(elem_id="ask-status")
            answer = gr.Markdown(elem_id="ask-answer")
            shots = gr.HTML(elem_id="ask-shots")
            prompt = gr.Textbox(label="Prompt (exact)", lines=8, visible=False, elem_id="ask-prompt")

    @guarded(outputs=5, status=4)
    def on_store(path):
        tasks, names, note, missing = _store_view(ctx, path)
        return (
            gr.update(choices=tasks, value=tasks[0] if tasks else None),
            gr.update(choices=names, value=names[0] if names else None),
            note,
            missing,
            "",
        )

    store.change(on_store, [store], [task, predictor, store_note, missing_note, status])
    predictor.change(lambda name: gr.update(visible=name == "flamingo"), [predictor], [clap])
    task.change(lambda t: gr.update(visible=t in ask_tab.QUESTION_TASKS), [task], [question])

    @guarded(outputs=4, status=0)
    def on_ask(clip, path, task_name, name, shots_k, samples, text):
        if not name:
            return message("no predictor can answer against this store (see 'Predictors not available')"), "", "", ""
        res = ask_tab.ask(ctx, clip, path, task_name, name, int(shots_k), int(samples), text)
        notes = "\n\n".join(f"*{n}*" for n in res.notes)
        if res.samples:
            notes += "\n\nCLAP-filtered samples: " + "; ".join(f"{t!r} ({s:.3f})" for t, s in res.samples)
        table = shots_table(res.shots, seconds)
        return notes, res.summary, table, gr.update(value=res.prompt or "", visible=res.prompt is not None)

    button.click(
        on_ask,
        [audio, store, task, predictor, k, clap, question],
        [status, answer, shots, prompt],
        concurrency_id=MODEL_QUEUE,
        concurrency_limit=1,
    )


# ----------------------------------------------------------------------------- Chat


def _chat_tab(ctx: AppContext) -> None:
    if not ctx.is_af1:
        gr.Markdown(
            "Chat needs the AF1 chat model: start `rag_app model=chat` "
            "(`model.checkpoint.path=/path/to/chat.pt` for a local file).",
            elem_id="chat-status",
        )
        return
    state = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Clip", elem_id="chat-audio")
            clear = gr.Button("Clear", elem_id="chat-clear")
        with gr.Column(scale=2):
            log = gr.Chatbot(label="Dialogue", elem_id="chat-log", height=360)
            text = gr.Textbox(label="Message", placeholder="What do you hear?", elem_id="chat-msg")
            send = gr.Button("Send", variant="primary", elem_id="chat-send")
            status = gr.Markdown(elem_id="chat-status")

    @guarded_stream(outputs=4, status=3)
    def on_send(clip, msg, history, current):
        history = list(history or [])
        if current is None or str(current.clip) != str(clip):
            current, history = chat_tab.start_chat(ctx, clip), []
        asked = [*history, {"role": "user", "content": msg}]
        for reply in chat_tab.say(ctx, current, msg):  # the answer as it grows
            yield [*asked, {"role": "assistant", "content": reply}], "", current, "writing..."
        left = current.rounds_left
        note = " ".join(current.notes) + f" {left} round{'s' if left != 1 else ''} left."
        yield [*asked, {"role": "assistant", "content": reply}], "", current, note.strip()

    send.click(
        on_send, [audio, text, log, state], [log, text, state, status], concurrency_id=MODEL_QUEUE, concurrency_limit=1
    )
    text.submit(
        on_send, [audio, text, log, state], [log, text, state, status], concurrency_id=MODEL_QUEUE, concurrency_limit=1
    )
    clear.click(lambda: ([], "", None, ""), None, [log, text, state, status])


# ----------------------------------------------------------------------------- New labels


def _labels_tab(ctx: AppContext, stores, first: str, seconds: float) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            store = gr.Dropdown(stores, value=first, label="Store to append to", elem_id="labels-store")
            name = gr.Textbox(label="New label", placeholder="e.g. door knock", elem_id="labels-name")
            files = gr.File(file_count="multiple", file_types=["audio"], label="Clips", elem_id="labels-files")
            add = gr.Button("Add to the store", variant="primary", elem_id="labels-add")
            status = gr.Markdown(elem_id="labels-status")
            counts = gr.Dataframe(
                labels_tab.label_counts(ctx.parts(first).store),
                headers=["label", "items"],
                label="Items per label",
                interactive=False,
                elem_id="labels-counts",
            )
        with gr.Column(scale=1):
            query = gr.Audio(
                sources=["upload", "microphone"], type="filepath", label="Clip to classify", elem_id="labels-query"
            )
            predictor = gr.Radio(["knn", "prototype"], value="knn", label="Predictor", elem_id="labels-predictor")
            k = gr.Slider(1, 16, value=ctx.cfg.k, step=1, label="k (shots)")
            classify = gr.Button("Classify", elem_id="labels-classify")
            answer = gr.Markdown(elem_id="labels-answer")
            shots = gr.HTML(elem_id="labels-shots")

    @guarded(outputs=2, status=0)
    def on_add(path, label, uploads):
        res = labels_tab.add_clips(ctx, path, label, [getattr(f, "name", f) for f in uploads or []])
        lines = [
            f"{res.status}: {res.added} clip{'s' if res.added != 1 else ''} of '{label.strip()}' added "
            f"to `{Path(path).name}`"
        ]
        lines += [f"skipped {s}" for s in res.skipped]
        lines.append(f"```\n{res.summary}\n```")
        return "\n\n".join(lines), labels_tab.label_counts(ctx.parts(path).store)

    @guarded(outputs=3, status=0)
    def on_store(path):
        return "", labels_tab.label_counts(ctx.parts(path).store), ""

    @guarded(outputs=2, status=0)
    def on_classify(clip, path, name, shots_k):
        task = "classification"
        res = ask_tab.ask(ctx, clip, path, task, name, int(shots_k))
        notes = "".join(f"\n\n*{n}*" for n in res.notes)
        return res.summary + notes, shots_table(res.shots, seconds)

    add.click(on_add, [store, name, files], [status, counts], concurrency_id=MODEL_QUEUE, concurrency_limit=1)
    store.change(on_store, [store], [status, counts, shots])
    classify.click(
        on_classify, [query, store, predictor, k], [answer, shots], concurrency_id=MODEL_QUEUE, concurrency_limit=1
    )


# ----------------------------------------------------------------------------- Results


def _results_tab(ctx: AppContext, seconds: float) -> None:
    folders = [(p.name, str(p)) for p in results_tab.result_folders(ctx.cfg.results_dir)]
    stores: dict[Path, Any] = {}
    with gr.Row():
        folder = gr.Dropdown(
            folders,
            value=folders[0][1] if folders else None,
            allow_custom_value=True,
            label="evaluate output folder",
            elem_id="results-folder",
            scale=4,
        )
        open_button = gr.Button("Open", elem_id="results-open", scale=1)
    status = gr.Markdown(elem_id="results-status")
    table = gr.Markdown(elem_id="results-table")
    plot = gr.Image(label="metric vs shots", type="pil", interactive=False, elem_id="results-plot")
    pick = gr.Dropdown([], label="Prediction", elem_id="results-pick")
    detail = gr.Markdown(elem_id="results-detail")
    query = gr.HTML(elem_id="results-query")
    shots = gr.HTML(elem_id="results-shots")
    opened = gr.State(None)

    @guarded(outputs=5, status=0)
    def on_open(path):
        from PIL import Image

        res = results_tab.open_results(path)
        image = Image.open(res.plot).copy() if res.plot else None
        return "", res.table, image, gr.update(choices=res.choices(), value=None), res

    @guarded(outputs=4, status=0)
    def on_pick(res, index):
        if res is None or index is None:
            return "", "", "", ""
        d = results_tab.prediction_detail(res, int(index), stores)
        notes = "\n\n".join(f"*{n}*" for n in d.notes)
        return (
            notes,
            d.summary,
            "<p><strong>Query</strong></p>" + player(d.query_audio, seconds),
            shots_table(d.shots, seconds, "Shots"),
        )

    open_button.click(on_open, [folder], [status, table, plot, pick, opened])
    pick.change(on_pick, [opened, pick], [status, detail, query, shots])
