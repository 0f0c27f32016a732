"""Preflight: every artifact a command line needs, present or missing, with the one command that makes
each present, found in a few seconds without loading a model, touching the network or writing a file.

``build_index``, ``evaluate``, ``rag_classify`` and ``rag_app`` take ``--check``: the composed
config's artifacts as a table, exit 0 when all are there, 2 when one is missing. Without ``--check``
each command runs the same preflight before any heavy work (`require`), so a run that lacks three
downloads names all three at once instead of failing on the first after minutes of embedding.

What is looked at (each only when the command line uses it):
- the index store (``store.json``) and, for ``predictor=flamingo`` on AF1, its cached shot features;
- the dataset's manifest for the split the command reads (official datasets: the manifest maker's
  command; a folder: the folder; the demo is generated on first use);
- encoder weights: a local ``checkpoint``, a hub ``hub_repo``/``filename`` in the Hugging Face cache,
  a transformers hub id (``model``), a text tower (``text_model``); aisfx's weights ship in its wheel;
- Audio Flamingo: the checkpoint (``model.checkpoint``), the OPT config and tokenizer (``model.lm``,
  ``model.tokenizer``), its window encoder (``model.audio_encoder``); a transformers audio-LM's hub
  repo or folder (``model.checkpoint``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import paths
from .config import AppConfig, BuildIndexConfig, ClassifyConfig, DatasetConfig, EvaluateConfig
from .errors import RagFlamingoError

CHECK_FLAG = "--check"


class MissingArtifacts(RagFlamingoError):
    """A command needs files that are not there (each named with the command that fetches it)."""


@dataclass(frozen=True)
class Artifact:
    what: str  # "AF1 checkpoint (model.checkpoint)"
    where: str  # a path, hf://repo/file, or a hub repo id
    present: bool
    fetch: str = ""  # the one command that makes it present ("" when present)

    def line(self) -> str:
        return f"{self.what}: {self.where}" + ("" if self.present else f" -- fetch: {self.fetch}")


# ----------------------------------------------------------------------------- files and hub caches


def _hub_file(repo: str, filename: str, revision: str | None = None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename, revision=revision), str)


def _hub_snapshot(repo_or_dir: str, include: Iterable[str]) -> bool:
    """A local folder, or the files of a hub repo matching ``include`` in the cache (no request)."""
    if Path(repo_or_dir).expanduser().is_dir():
        return True
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_or_dir, allow_patterns=list(include), local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or not a repo id at all
        return False
    return any(folder.iterdir())


def _snapshot(what: str, repo_or_dir: str, include: Iterable[str], setting: str) -> Artifact:
    """A hub repo's files (or a local folder) as an artifact; a path that is not a folder is named as one."""
    include = list(include)
    path_like = repo_or_dir.startswith(("/", "./", "../", "~")) or Path(repo_or_dir).expanduser().exists()
    if not path_like:  # a hub id: namespaced (facebook/opt-iml-max-1.3b) or a legacy one (roberta-base, gpt2)
        fetch = _download(repo_or_dir, include=[] if include == ["*"] else include)
    else:
        fetch = f"no such folder: point {setting} at a folder holding the files, or at a hub id"
    return Artifact(what, repo_or_dir, _hub_snapshot(repo_or_dir, include), fetch)


def _download_to(repo: str, filename: str, path: Path, convert: bool = False) -> str:
    """The command that puts the released ``filename`` at ``path`` (another name: moved, or converted
    with scripts/convert_checkpoint.py when ``convert`` and ``path`` is a .safetensors file)."""
    fetched = path.parent / filename
    command = f"{_download(repo, filename)} --local-dir {path.parent}"
    if fetched == path:
        return command
    if convert and path.suffix == ".safetensors":
        return f"{command} && python scripts/convert_checkpoint.py {fetched} {path}"
    return f"{command} && mv {fetched} {path}"


def _download(repo: str, filename: str | None = None, include: Iterable[str] = ()) -> str:
    return " ".join(["hf download", repo, *([filename] if filename else []), *(f"--include '{p}'" for p in include)])


def weights(what: str, options: Mapping[str, Any], setting: str) -> list[Artifact]:
    """The files an encoder's (or window encoder's) options name: a local ``checkpoint`` (else the hub
    ``hub_repo``/``filename``), a transformers ``model`` hub id, a ``text_model`` text tower."""
    from .checkpoints import TOKENIZER_FILES

    out: list[Artifact] = []
    name = str(options.get("name") or options.get("_target_") or "encoder")
    checkpoint, repo, filename = options.get("checkpoint"), options.get("hub_repo"), options.get("filename")
    if checkpoint:
        path = Path(str(paths.config_path(str(checkpoint))))
        fetch = (
            _download_to(repo, filename, path)
            if repo and filename
            else f"put the file there, or fix {setting}.checkpoint"
        )
        out.append(Artifact(f"{what} {name} weights ({setting}.checkpoint)", str(path), path.is_file(), fetch))
    elif repo and filename:
        present = _hub_file(str(repo), str(filename))
        out.append(Artifact(f"{what} {name} weights", f"hf://{repo}/{filename}", present, _download(repo, filename)))
    elif name == "aisfx":
        from .encoders.aisfx import CHECKPOINT_IN_WHEEL

        present = importlib.util.find_spec("aisfx") is not None
        where = f"aisfx wheel ({CHECKPOINT_IN_WHEEL})"
        out.append(Artifact(f"{what} aisfx weights", where, present, "pip install --no-deps aisfx==0.1.2"))
    if options.get("model") and isinstance(options.get("model"), str):  # transformers ClapModel
        hub = str(options["model"])
        out.append(_snapshot(f"{what} {name} model ({setting}.model)", hub, ["*"], f"{setting}.model"))
    text = options.get("text_model")
    if text and options.get("with_text", True):
        tower = f"{what} {name} text tower config + tokenizer ({setting}.text_model)"
        out.append(_snapshot(tower, str(text), TOKENIZER_FILES, f"{setting}.text_model"))
    return out


# ----------------------------------------------------------------------------- the parts of a command


def dataset_artifacts(dataset: DatasetConfig, split: str) -> list[Artifact]:
    """The manifest (and audio root) a split of a dataset config is read from."""
    from .datasets.sources import dataset_root, manifest_maker, source_of, split_name
    from .errors import ConfigError

    name = str(dataset.name or "")
    try:
        split = split_name(dataset, split)
    except ConfigError as exc:
        return [Artifact(f"dataset {name} split {split}", str(exc), False, "fix the dataset settings")]
    manifest = dataset.manifest
    if manifest and not isinstance(manifest, Mapping):
        path = Path(str(manifest).replace("{split}", split)).expanduser()
        fix = "write it, or fix dataset.manifest"
        return [Artifact(f"dataset {name} manifest ({split})", str(path), path.is_file(), fix)]
    source = source_of(dataset)
    if source == "demo":
        return [Artifact("dataset demo", "generated on first use (numpy only)", True)]
    if source == "folder":
        root = dataset.root
        if not root:
            return [Artifact("dataset folder", "dataset.root is not set", False, "dataset.root=/path/to/audio")]
        present = Path(str(root)).expanduser().is_dir()
        fix = "folder not found: point dataset.root at a folder of audio files"
        return [Artifact("dataset folder (dataset.root)", str(root), present, fix)]
    official = dataset_root(dataset)
    path = official / "manifests" / f"{split}.jsonl"
    return [Artifact(f"dataset {name} manifest ({split})", str(path), path.is_file(), manifest_maker(name, official))]


def model_artifacts(model: Mapping[str, Any]) -> list[Artifact]:
    """Audio Flamingo's files (``model.backend=af1``), or a transformers audio-LM's repo or folder."""
    from .backends import backend_name
    from .checkpoints import TOKENIZER_FILES
    from .encoders.base import option_defaults
    from .model.factory import DEFAULT_TOKENIZER

    if backend_name(model) == "transformers":
        hub = str(model.get("checkpoint") or "")
        return [_snapshot(f"model {model.get('name')} (model.checkpoint)", hub, ["*"], "model.checkpoint")]
    out: list[Artifact] = []
    ck = model.get("checkpoint") or {}
    ck = ck if isinstance(ck, Mapping) else {"path": ck}
    local = paths.config_path(ck.get("path")) if ck.get("path") else None  # as `model.factory.load_model` reads
    if local:
        path = Path(local)
        fetch = "fix model.checkpoint.path"
        if ck.get("repo_id") and ck.get("filename"):
            fetch = _download_to(ck["repo_id"], ck["filename"], path, convert=True)
        out.append(Artifact("AF1 checkpoint (model.checkpoint.path)", str(path), path.exists(), fetch))
    elif ck.get("repo_id") and ck.get("filename"):
        present = _hub_file(str(ck["repo_id"]), str(ck["filename"]), ck.get("revision"))
        where, fetch = f"hf://{ck['repo_id']}/{ck['filename']}", _download(ck["repo_id"], ck["filename"])
        out.append(Artifact("AF1 checkpoint (model.checkpoint)", where, present, fetch))
    config = paths.config_path(model.get("config")) if model.get("config") else None
    if config:
        out.append(Artifact("AF1 config (model.config)", config, Path(config).is_file(), "fix model.config"))
    tokenizer = paths.config_path(model.get("tokenizer")) or DEFAULT_TOKENIZER
    needs_lm = config is None and not (local or "").endswith(".safetensors")  # a converted file has its config
    lm = paths.config_path(model.get("lm")) if needs_lm and model.get("lm") else None
    if lm and lm != tokenizer:
        out.append(_snapshot("OPT config (model.lm)", lm, TOKENIZER_FILES, "model.lm"))
    what = (
        "OPT config + tokenizer (model.lm, model.tokenizer)" if lm == tokenizer else "OPT tokenizer (model.tokenizer)"
    )
    out.append(_snapshot(what, tokenizer, TOKENIZER_FILES, "model.tokenizer"))
    audio = model.get("audio_encoder") or {}
    if isinstance(audio, Mapping) and audio.get("name"):
        out += weights("AF1 window encoder", {**option_defaults(audio["name"]), **audio}, "model.audio_encoder")
    return out


def _build_command(cfg: Any, store: Path, features: str | None, split_key: str = "index_split") -> str:
    """The build_index command that makes the store a command line expects. Without a dataset (a
    ``store=`` of rag_classify or rag_app) the labelled clips are the user's to name: a placeholder."""
    from .store.layout import holds_other_files

    if holds_other_files(store):
        return f"{store} holds other files, not a store: name a new folder for build_index (store=<new folder>)"
    dataset: DatasetConfig | None = getattr(cfg, "dataset", None)  # rag_classify has none
    parts = ["build_index"]
    if dataset is None or not dataset.name:
        parts.append("dataset=folder dataset.root=<your labelled clips>")
    else:
        parts.append(f"dataset={dataset.name}")
        if dataset.manifest:
            parts.append(f"'dataset.manifest={dataset.manifest}'")
        if dataset.root and (dataset.manifest or dataset.source == "folder"):
            parts.append(f"dataset.root={dataset.root}")  # an official dataset's root follows data_root
        if getattr(cfg, split_key) != "index":
            parts.append(f"split={getattr(cfg, split_key)}")
    encoder = cfg.encoder.get("name")
    parts += [f"encoder={encoder}"] if encoder else []
    parts += [f"features={features}"] if features else []
    return " ".join([*parts, f"store={store}"])


def store_artifacts(
    store: Path, features: str | None, build: str, encoder: Mapping[str, Any] | None = None
) -> list[Artifact]:
    """The store (its store.json, the files it records by size, as opening it checks them) and its
    cached model features. A store that is there is asked for with its own ``encoder`` (else listing
    that encoder's downloads would send the user after the wrong files)."""
    from types import SimpleNamespace

    from .components import check_encoder_request
    from .store.layout import INFO_FILE
    from .store.records import file_problems, read_info

    info = None
    where = str(store)
    if (store / INFO_FILE).is_file():
        try:
            info = read_info(store)
            problems = file_problems(store, info.files) if info is not None else ["store.json unreadable"]
        except RagFlamingoError as exc:
            problems = [str(exc)]
        if problems:
            info, where, build = None, f"{store} ({problems[0]})", f"build_index store={store} mode=repair"
        elif encoder is not None and info is not None:
            check_encoder_request(SimpleNamespace(root=store, info=info), dict(encoder))
    out = [Artifact("index store (store=)", where, info is not None, build)]
    if features and info is not None:
        fetch = f"build_index store={store} mode=features features={features}"
        out.append(Artifact(f"store's cached {features} shot features", str(store), features in info.features, fetch))
    return out


def artifacts(config_name: str, cfg: Any) -> list[Artifact]:
    """Everything ``config_name`` (build_index | evaluate | rag_classify | rag_app) needs for ``cfg``
    (its typed config: `rag_flamingo.config.SCHEMAS`)."""
    if isinstance(cfg, BuildIndexConfig):
        return _build_artifacts(cfg)
    return _query_artifacts(config_name, cfg)


def _build_artifacts(cfg: BuildIndexConfig) -> list[Artifact]:
    from .components import as_list, store_path
    from .encoders.base import option_defaults

    out = [] if cfg.mode == "repair" else dataset_artifacts(cfg.dataset, cfg.split)
    if cfg.mode in ("append", "repair", "features"):  # they work on a store that exists
        from .store.layout import INFO_FILE, PLANS_DIR, SHARDS_DIR

        built = store_path(cfg, split_key="split")
        build = _build_command(cfg, built, None, split_key="split")
        if cfg.mode == "repair":  # no dataset is named with repair: the user's to say
            build = f"nothing to repair there: build it first (build_index dataset=<yours> store={built})"
        made = any((built / part).exists() for part in (INFO_FILE, PLANS_DIR, SHARDS_DIR))  # repairable
        out.append(Artifact("index store (store=)", str(built), made, build))
    encoder = cfg.encoder
    if cfg.mode in ("build", "append") and encoder.get("name"):
        out += weights("retrieval encoder", {**option_defaults(encoder["name"]), **encoder}, "encoder")
    for name in as_list(cfg.features):
        options = {**option_defaults(str(name)), "name": name, **cfg.features_encoder}
        out += weights("features encoder", options, "features_encoder")
    return out


def _query_artifacts(config_name: str, cfg: EvaluateConfig | ClassifyConfig | AppConfig) -> list[Artifact]:
    from .components import as_list, store_path
    from .encoders.base import option_defaults

    out = []
    store: Path | None = None
    if isinstance(cfg, ClassifyConfig):  # its two required settings, named here too (with --check)
        if not cfg.store:
            out.append(
                Artifact("index store (store=)", "store= is required", False, "store=<the folder build_index wrote>")
            )
        audio = cfg.audio
        where = str(audio) if audio else "audio= is required"
        present = bool(audio) and Path(str(audio)).expanduser().exists()
        fix = "no such file or folder: audio=<one that exists>"
        out.append(Artifact("audio to label (audio=)", where, present, fix))
    named = not isinstance(cfg, ClassifyConfig) and bool(cfg.dataset.name)  # rag_classify has no dataset
    if cfg.store or named:
        from .datasets.demo import DEMO_ENCODER
        from .datasets.sources import check_split_exists

        if not isinstance(cfg, ClassifyConfig) and not cfg.store:
            check_split_exists(cfg.dataset, cfg.index_split, "index_split")
        store = store_path(cfg, encoder=DEMO_ENCODER if config_name == "rag_app" else None)
    predictors = [str(p) for p in as_list(cfg.predictor)]
    model = cfg.model
    flamingo = "flamingo" in predictors or (config_name == "rag_app" and bool(model))  # the app's Ask and Chat tabs
    if store is not None:
        from .backends import backend_name

        af1 = flamingo and bool(model) and backend_name(model) == "af1"
        features = cfg.flamingo.features if af1 else None
        out += store_artifacts(store, features, _build_command(cfg, store, features), cfg.encoder)
    if isinstance(cfg, EvaluateConfig):
        from .datasets.sources import check_split_exists

        check_split_exists(cfg.dataset, cfg.query_split, "query_split")
        out += dataset_artifacts(cfg.dataset, cfg.query_split)
    encoder = cfg.encoder
    if encoder.get("name"):
        out += weights("retrieval encoder", {**option_defaults(encoder["name"]), **encoder}, "encoder")
    if flamingo and model:
        out += model_artifacts(model)
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def report(config_name: str, found: list[Artifact]) -> str:
    """``--check``'s table: one row per artifact, then what to do."""
    lines = [
        f"{config_name} --check: {_count(len(found), 'artifact')}, {sum(not a.present for a in found)} missing",
        "",
    ]
    lines += ["| artifact | where | status | fetch |", "| --- | --- | --- | --- |"]
    for a in found:
        lines.append(
            f"| {a.what} | {a.where} | {'present' if a.present else 'MISSING'} | {'' if a.present else a.fetch} |"
        )
    return "\n".join(lines)


def require(config_name: str, cfg: Any) -> None:
    """Refuse, in one line listing every missing artifact with its fetch command, before any work."""
    missing = [a for a in artifacts(config_name, cfg) if not a.present]
    if missing:
        listed = "; ".join(f"[{i}] {a.line()}" for i, a in enumerate(missing, 1))
        table = f"`{config_name} {CHECK_FLAG}` with the same settings shows them as a table"
        raise MissingArtifacts(f"{len(missing)} missing ({table}): {listed}")
