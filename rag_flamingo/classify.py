"""``rag_classify``: label new audio against the labels of an index store, without fine-tuning.

Usage (``key=value`` arguments; the config is ``rag_flamingo/conf/rag_classify.yaml``, every setting
in ``rag_flamingo/config.py``: ClassifyConfig)::

    rag_classify store=my_index audio=clip.wav                      # knn over 4 shots
    rag_classify store=my_index audio=dir/ predictor=fusion k=16 out=labels.jsonl   # recommended, new labels
    rag_classify store=my_index audio=dir/ predictor=fusion k=8 adapt=standardize \\
        predictors.fusion.weight=0.7 predictors.fusion.temperature=0.1      # a batch labelled together
    rag_classify store=my_index audio=dir/ predictor=flamingo k=7              # model=foundation (hub)
    rag_classify store=my_index audio=dir/ predictor=flamingo model.checkpoint.path=/ckpt/foundation.pt

``store``: a store directory (``build_index ... store=my_index``) or a name under
``${cache_root}/indices``. The option set is the store's labels (``store.label_set()``), so a
folder of a few labelled clips per new class (``build_index dataset=folder dataset.root=clips/
store=my_index``, grown later with ``mode=append``) defines the classes. ``audio`` (required): a
file or a folder (searched recursively). Prints ``path<TAB>label<TAB>score`` per file (tabs,
newlines and backslashes in a path are written as ``\\t``, ``\\n``, ``\\\\``); ``out=`` also writes
JSON lines (path, label, score, shots, store): checked writable before any work, filled batch by
batch in ``<out>.tmp`` (what an interrupted run keeps) and renamed to ``out`` at the end (an ``out``
that is a symlink is followed: its target gets the labels and the link stays; a device, FIFO or
socket is refused). Unusable files are reported, never fatal. A file that is in the store (or an
exact copy of one) never votes for itself; with no evidence left the label is empty (no answer).
The encoder is the one the store was built with (``encoder.name`` from its store.json).
``adapt=source|center|standardize|propagate`` re-expresses the store and the clips in a common space
first (`rag_flamingo.shift`; the last three are transductive: all clips of the run labelled together).
Which predictor to use for new labels: README, "New labels without fine-tuning".
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import shift
from .audio import AUDIO_EXTENSIONS
from .cli import compose_config, export_roots, handle_flags, run_main
from .components import build_predictors, open_store, query_parts, task_name
from .config import ClassifyConfig
from .errors import AudioError, ConfigError
from .jsonl import append_jsonl
from .predictors import check_adapt
from .preflight import require
from .runner import QueryInput, QueryRunner, plan_combos, shot_records
from .store.items import recording_key
from .tasks import TaskFamily, get_task

logger = logging.getLogger(__name__)

CONFIG_NAME = "rag_classify"


def load_config(argv: list[str]) -> ClassifyConfig:
    """``rag_flamingo/conf/rag_classify.yaml`` composed with the ``key=value`` arguments."""
    return compose_config(CONFIG_NAME, argv)


def audio_files(path: str | Path) -> list[Path]:
    from .datasets.folder import list_audio_files

    path = Path(path).expanduser()
    if path.is_dir():
        found = [path / p for p in list_audio_files(path)]
        if not found:
            raise ConfigError(f"audio={path}: no audio files in this folder ({', '.join(AUDIO_EXTENSIONS)})")
        return found
    if not path.exists():
        raise ConfigError(f"audio={path}: no such file or folder")
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        logger.warning("%s: unusual extension; trying to decode it anyway", path)
    return [path]


def check_out(value) -> Path:
    """The ``out=`` file, checked before any work: not a folder, not a device, FIFO or socket (the
    labels are renamed over ``out`` at the end, which would replace it), its folder creatable, and
    its ``.tmp`` sibling (where the records go until the end) writable; ConfigError naming ``out=``.
    A symlink is followed: the returned path is its target, so the labels are written there
    (atomically, through the target's ``.tmp`` sibling) and the link stays a link."""
    given = Path(str(value)).expanduser()
    if given.is_dir():
        raise ConfigError(f"out={value}: is a folder; give a file to write, e.g. out={given / 'labels.jsonl'}")
    path = Path(os.path.realpath(given))
    tmp = temp_out(path)
    for candidate, what in ((path, ""), (tmp, f" (its temporary file {tmp})")):
        try:
            mode = candidate.lstat().st_mode
        except (FileNotFoundError, NotADirectoryError):  # not there yet (a folder it needs is checked below)
            continue
        except OSError as exc:
            raise ConfigError(f"out={value}: cannot be checked ({exc.strerror or exc}); give a regular file") from None
        refusal = out_refusal(mode)
        if refusal:
            raise ConfigError(
                f"out={value}{what}: {refusal}, not a regular file; the labels would replace it, so give "
                f"a regular file to write, e.g. out=labels.jsonl (or omit out= and redirect stdout)"
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = tmp.exists()
        with open(tmp, "a", encoding="utf-8"):
            pass
        if not existed:
            tmp.unlink()
    except OSError as exc:
        raise ConfigError(
            f"out={value}: cannot be written ({exc.strerror or exc}); give a file in a writable folder"
        ) from None
    return path


def out_refusal(mode: int) -> str | None:
    """Why an existing path of this ``st_mode`` (from ``lstat``) cannot be ``out=``, or None for a
    regular file."""
    kinds = (
        (stat.S_ISREG, None),
        (stat.S_ISDIR, "is a folder"),
        (stat.S_ISCHR, "is a character device"),
        (stat.S_ISBLK, "is a block device"),
        (stat.S_ISFIFO, "is a FIFO (named pipe)"),
        (stat.S_ISSOCK, "is a socket"),
        (stat.S_ISLNK, "is a symlink"),
    )
    for test, refusal in kinds:
        if test(mode):
            return refusal
    return "is not a regular file"


def temp_out(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def tsv_field(text: str) -> str:
    """A path or label as one TSV field: backslash, tab, newline and carriage return escaped."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def classify(cfg: ClassifyConfig, encoder=None, engine=None, stream=None) -> list[dict]:
    """Label every file of ``cfg.audio``; returns the records (also printed / written to ``out``)."""
    stream = stream or sys.stdout
    task = get_task(task_name(cfg))
    if task.family not in (TaskFamily.CLASSIFICATION, TaskFamily.TAGGING):
        raise ConfigError(f"rag_classify labels audio (task=classification or tagging), not {task.name}")
    if not cfg.store:
        raise ConfigError("store= is required: the index store to classify against (build_index ... store=my_index)")
    if not cfg.audio:
        raise ConfigError("audio= is required: a file or a folder of audio to label (e.g. audio=clips/)")
    out_path = check_out(cfg.out) if cfg.out else None
    files = audio_files(cfg.audio)
    batch_size = shift.query_batch(cfg.adapt, cfg.batch_size, len(files))
    store = open_store(cfg)
    labels = store.label_set()
    if not labels:
        raise ConfigError(
            f"{store.root}: the store has no labels; index labelled clips (one sub-folder per "
            f"label with dataset=folder, or 'label' in the manifest)"
        )
    if len(labels) == 1:
        logger.warning(
            "%s holds one label (%r): every clip gets it; index clips of the other labels too", store.root, labels[0]
        )
    parts = query_parts(cfg, store, encoder)
    predictors = build_predictors(cfg, [cfg.predictor], parts, engine)
    combos = plan_combos(predictors, [cfg.k])
    runner = QueryRunner(parts.encoder, parts.retriever, predictors, task, labels, batch_size=batch_size)
    inputs = [QueryInput(str(p), p, {"id": str(p)}, recording_key({"path": str(p)}, Path.cwd())) for p in files]
    if out_path:
        temp_out(out_path).write_text("", encoding="utf-8")  # started over: the records of this run only
    provenance = {
        "store": str(store.root),
        "store_fingerprint": store.fingerprint(),
        "predictor": cfg.predictor,
        **({"settings": asdict(options)} if (options := getattr(cfg.predictors, cfg.predictor, None)) else {}),
        "k": combos[0][1],
        "adapt": cfg.adapt,  # a transductive mode: each label depends on the other clips of the run
    }
    try:
        records = _label(runner, inputs, combos, provenance, out_path, stream)
    except BaseException:
        if out_path and temp_out(out_path).is_file() and not temp_out(out_path).stat().st_size:
            temp_out(out_path).unlink()  # nothing labelled: no empty leftover
        raise
    if out_path:
        try:
            os.replace(temp_out(out_path), out_path)
        except OSError as exc:
            raise ConfigError(
                f"out={cfg.out}: cannot be replaced ({exc.strerror or exc}); the labels are in {temp_out(out_path)}"
            ) from None
    return records


def _label(runner: QueryRunner, inputs, combos, provenance: dict, out_path: Path | None, stream) -> list[dict]:
    """Label ``inputs`` batch by batch: print each file's line (an unusable one on stderr) and append
    the records to ``out``'s temporary file."""
    records: list[dict[str, Any]] = []
    for batch in runner.batches(inputs, combos):
        new: list[dict[str, Any]] = [
            {"path": r.path or r.id, "label": None, "score": None, "error": r.reason} for r in batch.rejected
        ]
        new += [
            {
                "path": r.query.id,
                "label": r.prediction.output,
                "score": r.prediction.score,
                "shots": shot_records(r, with_labels=True),
                **provenance,
            }
            for r in batch.results
        ]
        for rec in new:
            if rec.get("error"):
                print(f"{tsv_field(rec['path'])}\tERROR\t{tsv_field(rec['error'])}", file=sys.stderr)
            else:
                score = "" if rec["score"] is None else f"{rec['score']:.4f}"
                print(f"{tsv_field(rec['path'])}\t{tsv_field(rec['label'])}\t{score}", file=stream, flush=True)
        if out_path:
            append_jsonl(temp_out(out_path), new)
        records += new
    return records


def _run(argv: list[str]) -> None:
    if handle_flags(CONFIG_NAME, argv):
        return
    cfg = load_config(argv)
    export_roots(cfg)  # cache_root= for everything downstream (the encoders' graph cache)
    check_adapt(cfg.adapt, [cfg.predictor])  # before the model weights are looked for
    require(CONFIG_NAME, cfg)
    records = classify(cfg)
    if records and all(r.get("error") for r in records):  # a batch skips bad clips; none left is a failure
        raise AudioError(str(cfg.audio), f"none of the {len(records)} clips could be labelled (reasons above)")


def main(argv: list[str] | None = None) -> int:
    return run_main("rag_classify", __doc__, _run, argv, log_level="WARNING")


if __name__ == "__main__":
    sys.exit(main())
