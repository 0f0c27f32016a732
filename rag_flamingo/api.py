"""Answer clips in one call with a `RagFlamingo` engine: retrieve ``k`` shots, prompt, generate.

    from rag_flamingo.api import answer
    result = answer(engine, "dog.wav", "event_classification", k=4, options=engine.store.label_set())
    print(result.output, [shot.id for shot in result.shots])

A thin user of `rag_flamingo.runner` (the same decoding, retrieval hygiene and predictor step as
``evaluate`` and ``rag_classify``): the engine is the runner's one predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .audio import AudioSource
from .engine import RagFlamingo
from .errors import AudioError, ConfigError
from .prediction import Prediction
from .predictors import FlamingoPredictor
from .runner import QueryInput, QueryRunner
from .store.items import recording_key
from .tasks import get_task

Answer = Prediction  # the name this module's answers had before they were one record


def answer_batch(
    engine: RagFlamingo,
    audios: Sequence[AudioSource],
    task: str,
    k: int = 4,
    items: Sequence[dict] | None = None,
    options: Sequence[str] | None = None,
) -> list[Prediction]:
    """One `Prediction` per clip. ``items[i]`` carries the query's fields the task needs (``question``
    for AQA, ``id``, ``start``/``end``); a clip that is in the store never sees itself as a shot."""
    if engine.retrieval_encoder is None:
        raise ConfigError("answering clips needs the engine's retrieval_encoder= (the store's encoder)")
    if k > engine.max_shots:
        raise ConfigError(
            f"k={k} shots do not fit: the model has {engine.audio_slots} audio slots "
            f"(k <= {engine.max_shots}, the query takes one)"
        )
    items = [dict(it) for it in items] if items is not None else [{} for _ in audios]
    inputs = []
    for i, (source, item) in enumerate(zip(audios, items)):
        item.setdefault("id", f"query-{i}")
        file = isinstance(source, (str, Path))
        inputs.append(
            QueryInput(item["id"], source, item, recording_key({"path": str(source)}, Path.cwd()) if file else None)
        )
    runner = QueryRunner(
        engine.retrieval_encoder,
        engine.retriever,
        {"flamingo": FlamingoPredictor(engine)},
        get_task(task),
        options,
        batch_size=len(inputs),
    )
    batch = runner.run_batch(inputs, [("flamingo", k)])
    if batch.rejected:
        bad = batch.rejected[0]
        raise AudioError(bad.path or bad.id, bad.reason)
    return [r.prediction for r in batch.results]  # the engine's record itself (label_scores with decode=rank)


def answer(
    engine: RagFlamingo,
    audio: AudioSource,
    task: str,
    k: int = 4,
    question: str | None = None,
    options: Sequence[str] | None = None,
) -> Prediction:
    """One clip: ``answer(engine, "dog.wav", "classification", k=4, options=store.label_set())``."""
    item = {"question": question} if question else {}
    return answer_batch(engine, [audio], task, k, [item], options)[0]
