"""The Ask tab: one clip against a store, through the query loop `evaluate` and `rag_classify` use
(`rag_flamingo.runner.QueryRunner`: decode, embed, retrieve without the clip's own recording or an
exact copy of it, predict). The answer carries what produced it: store, predictor, shots, encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AudioError, ConfigError
from ..labels import item_labels
from ..runner import QueryInput, QueryRunner, label_options, plan_combos
from ..store.index_store import IndexStore
from ..store.items import recording_key
from ..tasks import TaskFamily, get_task
from .context import AppContext
from .render import ShotRow, item_text, shots_text
from .uploads import check_clip, crop_notes

# the tasks the tab offers, by what the store's items carry
LABEL_TASKS = ("classification", "tagging")
CAPTION_TASKS = ("captioning",)
QUESTION_TASKS = ("aqa",)  # flamingo only: the answer to a question about the clip
FAMILY_NEEDS = {
    TaskFamily.CLASSIFICATION: "labels",
    TaskFamily.TAGGING: "labels",
    TaskFamily.CAPTIONING: "captions",
    TaskFamily.AQA: "questions",
}


def task_choices(store: IndexStore) -> list[str]:
    """Tasks the store's items can answer: labels -> classification, tagging; captions -> captioning;
    question/answer pairs -> aqa."""
    items = store.items
    out: list[str] = []
    if any(item_labels(it) for it in items):
        out += LABEL_TASKS
    if any(it.get("captions") for it in items):
        out += CAPTION_TASKS
    if any(it.get("question") for it in items):
        out += QUESTION_TASKS
    return out


@dataclass
class AskResult:
    output: str  # the answer text
    score: float | None
    summary: str  # markdown: the answer, its score, and what produced it
    shots: list[ShotRow] = field(default_factory=list)  # retrieved, with which the prompt dropped
    prompt: str | None = None  # flamingo: the exact prompt
    notes: list[str] = field(default_factory=list)  # crops, excluded copies, short stores
    samples: list[tuple[str, float]] = field(default_factory=list)  # CLAP filter: (text, score)


def ask(
    ctx: AppContext,
    clip_path: str | Path | None,
    store_path: str | Path,
    task: str,
    predictor: str,
    k: int,
    clap_samples: int = 1,
    question: str | None = None,
) -> AskResult:
    """Answer one uploaded clip; a user error raises a RagFlamingoError with the message to show."""
    clip = check_clip(clip_path, ctx.cfg.max_upload_mb)
    parts = ctx.parts(store_path)
    spec = get_task(task)
    offered = task_choices(parts.store)
    if spec.family not in {get_task(t).family for t in offered}:
        raise ConfigError(
            f"{parts.store.root.name} cannot answer task {spec.name}: its items carry no "
            f"{FAMILY_NEEDS.get(spec.family, spec.family)}; choose one of {', '.join(offered) or '(none)'}"
        )
    if spec.family == TaskFamily.AQA and not (question or "").strip():
        raise ConfigError("task aqa needs a question about the clip")
    item = {"id": clip.path.name, **({"question": question.strip()} if question and question.strip() else {})}
    with ctx.lock:
        pred = ctx.predictor(parts, predictor, clap_samples)
        combos = plan_combos({predictor: pred}, [int(k)])
        runner = QueryRunner(
            parts.encoder, parts.retriever, {predictor: pred}, spec, label_options(spec, parts.store), 1
        )
        query = QueryInput(clip.path.name, clip.path, item, recording_key({"path": clip.path.name}, clip.path.parent))
        batch = runner.run_batch([query], combos)
    if batch.rejected:
        raise AudioError(clip.path.name, batch.rejected[0].reason)
    result = batch.results[0]
    p = result.prediction
    used = {s.row for s in p.shots}
    shots = [
        ShotRow(
            s.id,
            item_text(s.item),
            float(s.score),
            parts.store.audio_path(s.row),
            "used" if s.row in used or not p.prompt else "dropped (prompt budget)",
        )
        for s in result.query.shots
    ]
    notes = crop_notes(clip, runner.encoders)
    if result.copies:
        notes.append(
            f"The store holds {result.copies} exact cop{'y' if result.copies == 1 else 'ies'} of this clip, "
            "left out of the shots (a clip never answers itself)."
        )
    if combos[0][1] is not None and len(result.query.shots) < combos[0][1]:
        notes.append(f"The store had only {len(result.query.shots)} usable shots of the {combos[0][1]} asked.")
    if p.dropped:
        notes.append(f"The prompt budget dropped {p.dropped} of the retrieved shots (the least similar).")
    score = "" if p.score is None else f" (score {p.score:.4f})"
    summary = (
        f"**{p.output or '(empty answer)'}**{score}\n\n"
        f"{predictor}{shots_text(combos[0][1])}, task {spec.name}, store `{parts.store.root.name}` "
        f"({len(parts.store)} items, fingerprint {parts.store.fingerprint()}), encoder "
        f"{parts.store.info.encoder.get('name')}"
    )
    return AskResult(p.output, p.score, summary, shots, p.prompt, notes, list(p.samples))
