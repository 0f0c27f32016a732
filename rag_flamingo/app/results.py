"""The Results tab: an ``evaluate`` output folder as the CLI left it (metrics.json, run.json,
predictions.jsonl, metric_vs_shots.png), read only. The table and chance line are
`rag_flamingo.report`'s; a prediction is shown with its query and shots, playable (audio found
through run.json: the query manifest and audio root, the store and its fingerprint).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..datasets.manifest import read_manifest
from ..errors import ConfigError, RagFlamingoError
from ..jsonl import read_jsonl
from ..report import chance_text, markdown_table
from ..store.index_store import IndexStore
from .render import ShotRow, item_text, shots_text

MAX_LISTED = 2000  # predictions offered in the picker (a folder may hold many more)


def result_folders(results_dir: str | Path) -> list[Path]:
    """The evaluate folders (with a metrics.json) under ``results_dir``, newest first."""
    root = Path(results_dir).expanduser()
    if not root.is_dir():
        return []
    found = [p.parent for p in root.glob("*/metrics.json")]
    return sorted(found, key=lambda p: (p / "metrics.json").stat().st_mtime, reverse=True)


@dataclass
class Results:
    folder: Path
    table: str  # markdown: the metrics table, chance, and what produced it
    plot: Path | None
    predictions: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # run.json's

    def choices(self) -> list[tuple[str, int]]:
        """(what the picker shows, index into predictions)."""
        out = []
        for i, r in enumerate(self.predictions[:MAX_LISTED]):
            shots = "" if r.get("shots") is None else f" k={r['shots']}"
            ok = "" if r.get("target") is None else (" ✓" if r.get("output") == r.get("target") else " ✗")
            out.append((f"{r['predictor']}{shots} · {r['id']} → {r.get('output')}{ok}", i))
        return out


def open_results(folder: str | Path) -> Results:
    folder = Path(folder).expanduser()
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        raise ConfigError(f"{folder}: not an evaluate output folder (no metrics.json)")
    try:
        metrics = json.loads(metrics_file.read_text())
        settings = json.loads((folder / "run.json").read_text()).get("settings", {})
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{folder}: unreadable metrics.json or run.json ({exc})") from exc
    lines = [
        f"**{metrics.get('dataset')} / {metrics.get('task')} ({metrics.get('query_split')})**: "
        f"{metrics.get('queries')} queries, {metrics.get('rejected')} rejected; store "
        f"`{Path(str(metrics.get('store'))).name}` "
        f"(encoder {metrics.get('encoder')}); run key `{metrics.get('run_key')}`",
        "",
        markdown_table(metrics.get("results") or []),
    ]
    chance = chance_text(metrics.get("chance"))
    if chance:
        lines += ["", chance]
    plot = folder / "metric_vs_shots.png"
    return Results(
        folder, "\n".join(lines), plot if plot.is_file() else None, read_jsonl(folder / "predictions.jsonl"), settings
    )


@dataclass
class Detail:
    summary: str  # markdown
    query_audio: Path | None
    shots: list[ShotRow]
    notes: list[str]


def prediction_detail(results: Results, index: int, stores: dict[Path, IndexStore] | None = None) -> Detail:
    """One prediction with its query audio and shots (``stores``: opened stores to reuse, by path)."""
    if not 0 <= int(index) < len(results.predictions):
        raise ConfigError("pick a prediction first")
    r = results.predictions[int(index)]
    notes: list[str] = []
    queries = results.settings.get("queries") or {}
    query_audio = None
    try:
        rows = {row["id"]: row for row in read_manifest(queries["manifest"], allow_outside_root=True)}
        path = Path(rows[r["id"]]["path"])
        query_audio = path if path.is_absolute() else Path(queries["audio_root"]) / path
    except (KeyError, OSError, RagFlamingoError) as exc:
        notes.append(f"The query's audio cannot be found ({exc}).")
    store = None
    store_info = results.settings.get("store") or {}
    try:
        root = Path(store_info["path"])
        if stores is not None and root.resolve() in stores:
            store = stores[root.resolve()]
        else:
            store = IndexStore.open(root)
            if stores is not None:
                stores[root.resolve()] = store
        if store.fingerprint() != store_info.get("fingerprint"):
            notes.append("The store changed since this run (another fingerprint): shots are shown as it is now.")
    except (KeyError, RagFlamingoError) as exc:
        notes.append(f"The store of this run cannot be opened ({exc}); shots are listed without audio.")
    by_id = {it["id"]: row for row, it in enumerate(store.items)} if store else {}
    shots = []
    for s in r.get("shot_ids") or []:
        row = by_id.get(s["id"])
        item = store.item(row) if store is not None and row is not None else {}
        text = str(s.get("label") or item_text(item))
        audio = store.audio_path(row) if store is not None and row is not None else None
        shots.append(ShotRow(s["id"], text, s.get("score"), audio))
    score = "" if r.get("score") is None else f" (score {r['score']:.4f})"
    summary = (
        f"**{r.get('output')}**{score}; target **{r.get('target')}**\n\n"
        f"{r['predictor']}{shots_text(r.get('shots'))}, query `{r['id']}`"
    )
    if r.get("prompt"):
        summary += f"\n\nprompt:\n\n```\n{r['prompt']}\n```"
    return Detail(summary, query_audio, shots, notes)
