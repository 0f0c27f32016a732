"""What the console scripts (build_index, evaluate, rag_classify) share: config composition, the
``--help`` / logging / error-exit contract, and handing the config's roots to the environment.

The Hydra compose API is used instead of ``@hydra.main`` so that a run has no side effects beyond
its output folder (no ``outputs/`` dirs, no logging reconfiguration), and the configs
(``rag_flamingo/conf``, shipped in the package) are found through ``rag_flamingo.paths.conf_dir()``
wherever the console script is installed from, plus the user folders of ``paths.user_conf_dirs()``.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import paths
from .config import INDEX_TYPES
from .errors import ConfigError, RagFlamingoError, did_you_mean

INDEX_TYPES_HINT = f"index= picks the index type ({', '.join(INDEX_TYPES)})"


def compose_config(config_name: str, overrides: list[str], aliases: dict[str, str] | None = None) -> Any:
    """``rag_flamingo/conf/<config_name>.yaml`` composed with Hydra overrides, resolved, as its typed
    schema (`rag_flamingo.config.SCHEMAS`: ``EvaluateConfig``, ``BuildIndexConfig``, ...): the one place
    where settings are read by name; everything after it reads attributes.

    Every override is checked first, so a mistake is one line that names it: an unknown key or group
    option (with a "did you mean"), ``index=<a path>`` (the store is ``store=``). ``aliases`` maps an
    accepted old key to its name (``output`` -> ``store``). A ``{split}`` placeholder in a value
    (``dataset.manifest=/data/{split}.jsonl``) is taken literally.
    """
    return _typed(config_name, _composed(config_name, overrides, aliases))


def _typed(config_name: str, cfg: Any) -> Any:
    """A composition (``_composed``) resolved, its ranges and model settings checked, as its schema."""
    from omegaconf import OmegaConf

    from .config import SCHEMAS, check_ranges

    OmegaConf.resolve(cfg)
    check_ranges(SCHEMAS[config_name], _as_dict(cfg))
    typed: Any = OmegaConf.to_object(cfg)  # the schema's dataclasses; open groups (encoder, model, task) dicts
    if getattr(typed, "model", None):  # an open group: its decoding and sizes are checked by the model's own rules
        from .model.factory import check_model_settings

        check_model_settings(typed.model)
    return typed


def _composed(config_name: str, overrides: list[str], aliases: dict[str, str] | None = None):
    """The Hydra composition of ``compose_config`` with every override checked, not yet resolved."""
    from hydra import compose, initialize_config_dir

    from .config import SCHEMAS, check_bool_text, register

    register()
    overrides = normalize_overrides(overrides, aliases)
    for ov in parse_overrides(overrides):
        if ov.is_sweep_override():  # evaluate expands its comma lists before composing; here one value is due
            key, values = ov.get_key_element(), ",".join(ov.sweep_string_iterator())
            raise ConfigError(
                f"{key}={values}: {config_name} takes one value here; a list is written {key}=[{values}], "
                f"a value with commas is quoted: \"{key}='{values}'\""
            )
    with initialize_config_dir(config_dir=str(paths.conf_dir().resolve()), version_base="1.3", job_name=config_name):
        groups, settings = _check_groups(config_name, overrides)
        base = _as_dict(_compose(compose, config_name, groups))
        for override in settings:
            _check_key(override, base)
            _, key, value = _split_override(override)
            check_bool_text(SCHEMAS[config_name], key, value)
        return _compose(compose, config_name, [_plus_on_existing(o, base) for o in overrides])


def _compose(compose: Callable, config_name: str, overrides: list[str]):
    """Hydra's compose, its config-file errors made one line: YAML syntax (file and line), an unknown
    key in a config file (with a "did you mean" from its schema), a value of the wrong type."""
    import dataclasses

    import yaml
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    try:
        return compose(config_name=config_name, overrides=paths.with_user_conf(overrides))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.name}:{mark.line + 1}" if mark is not None else "a config file"
        problem = getattr(exc, "problem", None) or one_line(exc)
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix the file") from None
    except ConfigCompositionException as exc:
        cause = exc.__cause__ or exc.__context__
        if not isinstance(cause, OmegaConfBaseException):
            raise
        where = str(exc).split(":", 1)[0].split(" ConfigKeyError")[0].split(" ValidationError")[0]
        schema = getattr(cause, "object_type", None)
        if isinstance(cause, ConfigKeyError) and dataclasses.is_dataclass(schema):
            known = [f.name for f in dataclasses.fields(schema)]
            hint = did_you_mean(str(cause.key), known) or f" (known: {', '.join(known)})"
            raise ConfigError(f"{where}: unknown key {cause.full_key!r}{hint}") from None
        message = str(getattr(cause, "msg", "") or cause).splitlines()[0]
        raise ConfigError(f"{where}: {cause.full_key}: {message}") from None
        raise


def _as_dict(cfg) -> dict:
    """A composed (or loaded) config as a plain dict."""
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(cfg)
    assert isinstance(out, dict)  # a config file is a mapping
    return out


MULTIRUN_FLAGS = ("-m", "--multirun")


def normalize_overrides(overrides: list[str], aliases: dict[str, str] | None = None) -> list[str]:
    """Aliases renamed (``output=`` -> ``store=``; an alias and its name both given is refused),
    ``{split}`` placeholders quoted, Hydra's ``-m``/``--multirun`` dropped (comma lists are expanded
    anyway), ``~key`` (Hydra's delete) refused: a setting is set to null instead."""
    overrides = [o for o in overrides if o not in MULTIRUN_FLAGS]
    for o in overrides:
        if o.startswith("~"):
            key = o[1:].partition("=")[0]
            raise ConfigError(f"{o}: removing a setting is not supported; set it to null instead ({key}=null)")
    heads = [_split_override(o)[1].split(".")[0] for o in overrides]
    for old, new in (aliases or {}).items():
        if old in heads and new in heads:
            raise ConfigError(f"{old}= and {new}= name the same setting ({old}= is the old name); give {new}= only")
    renamed = [_alias(o, aliases or {}) for o in overrides]
    return [_literal_braces(o) for o in renamed]


def print_config(
    config_name: str, overrides: list[str], aliases: dict[str, str] | None = None, resolve: bool = False
) -> None:
    """``--cfg job``: the composed config as YAML (checked as a run checks it), interpolations as
    written unless ``resolve`` (``--resolve``), as in Hydra."""
    from omegaconf import OmegaConf

    cfg = _composed(config_name, overrides, aliases)
    _typed(config_name, copy.deepcopy(cfg))  # every check a run makes, on a copy (the printed one keeps ${...})
    print(OmegaConf.to_yaml(cfg, resolve=resolve))


CFG_PARTS = ("job", "hydra", "all")  # Hydra's --cfg choices
INFO_PARTS = ("all", "config", "defaults", "searchpath")


def take_flags(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Hydra's flags out of ``argv``: ``--cfg``/``-c`` [job|hydra|all], ``--resolve``, ``--info``
    [all|config|defaults|searchpath], and ``--check``; the rest are overrides."""
    from .preflight import CHECK_FLAG

    flags: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg, following = argv[i], argv[i + 1] if i + 1 < len(argv) else None
        if arg in ("--cfg", "-c", "--info"):
            choices = CFG_PARTS if arg != "--info" else INFO_PARTS
            bare = following is not None and "=" not in following and not following.startswith("-")
            if bare and following is not None and following not in choices:  # --info bogus: a misspelt choice
                raise ConfigError(
                    f"{arg} {following}: use one of {', '.join(choices)}{did_you_mean(following, choices)}"
                )
            part = following if following is not None and following in choices else choices[0]
            flags["info" if arg == "--info" else "cfg"] = part
            i += 2 if following == part else 1
            continue
        if arg in ("--resolve", CHECK_FLAG):
            flags[arg.lstrip("-")] = "true"
        else:
            rest.append(arg)
        i += 1
    return flags, rest


def handle_flags(
    config_name: str, argv: list[str], aliases: dict[str, str] | None = None, list_keys: Sequence[str] = ()
) -> bool:
    """Hydra's ``--cfg [job|hydra|all]`` (the composed config; interpolations filled in with
    ``--resolve``; one config per run of a comma list), ``--info [all|config|defaults|searchpath]``
    (where configs come from, the groups and their options), and ``--check`` (`rag_flamingo.preflight`:
    every artifact the command line needs, present or missing, with its fetch command; exit 2 when one
    is missing).
    True when a flag was handled (the command then stops)."""
    from .preflight import MissingArtifacts, artifacts, report

    flags, rest = take_flags(argv)
    asked = [f"--{f}" for f in ("cfg", "info", "check") if f in flags]
    if len(asked) > 1:
        raise ConfigError(f"{' and '.join(asked)} each print a report of their own: give one of them")
    if "cfg" in flags:
        runs = expand_overrides(rest, list_keys)
        for overrides in runs:
            if len(runs) > 1:
                print(f"# {config_name} {' '.join(overrides)}")
            if flags["cfg"] in ("job", "all"):
                print_config(config_name, overrides, aliases, "resolve" in flags)
            if flags["cfg"] in ("hydra", "all"):
                print(_hydra_config(config_name, normalize_overrides(overrides, aliases), "resolve" in flags))
        return True
    if "info" in flags:
        print(_info(config_name, flags["info"], normalize_overrides(rest, aliases)))
        return True
    if "check" in flags and any(o.partition("=")[0] == "suite" for o in rest):
        raise ConfigError(
            "--check takes one command line; a suite's plan lists what each run needs: suite.dry_run=true"
        )
    if "check" not in flags:
        if "resolve" in flags:
            raise ConfigError("--resolve goes with --cfg (e.g. --cfg job --resolve)")
        return False
    missing = 0
    for overrides in expand_overrides(rest, list_keys):
        cfg = compose_config(config_name, overrides, aliases)
        export_roots(cfg)
        found = artifacts(config_name, cfg)
        print(report(config_name, found), flush=True)
        missing += sum(not a.present for a in found)
    if missing:
        raise MissingArtifacts(f"{missing} artifacts missing; each row above names the command that fetches it")
    return True


def _hydra_config(config_name: str, overrides: list[str], resolve: bool = False) -> str:
    """``--cfg hydra``: Hydra's own section for this command line (``resolve``: interpolations filled
    in where they can be outside a run; ``${now:...}`` and the like stay as written otherwise)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .config import register

    register()
    parse_overrides(overrides)
    with initialize_config_dir(config_dir=str(paths.conf_dir().resolve()), version_base="1.3", job_name=config_name):
        cfg = compose(config_name=config_name, overrides=paths.with_user_conf(overrides), return_hydra_config=True)
    try:
        section = OmegaConf.to_container(cfg.hydra, resolve=resolve)
    except OmegaConfBaseException:  # runtime-only values (the run's output dir, ...): as written
        section = OmegaConf.to_container(cfg.hydra, resolve=False)
    return OmegaConf.to_yaml(OmegaConf.create({"hydra": section}))


def _info(config_name: str, part: str, overrides: list[str]) -> str:
    """``--info``: the config search path, the config groups with their options, and the defaults."""
    from omegaconf import OmegaConf

    lines = [f"{config_name}: rag_flamingo/conf/{config_name}.yaml, typed by rag_flamingo/config.py"]
    if part in ("all", "searchpath"):
        lines += ["", "Config search path:", f"  {paths.conf_dir()} (the package's)"]
        lines += [f"  {d} (RAG_FLAMINGO_CONF_PATH)" for d in paths.user_conf_dirs()]
    if part in ("all", "config"):
        lines += ["", "Config groups (key=option):"]
        for group in sorted(_config_groups(config_name)):
            lines.append(f"  {group}: {', '.join(_group_options(group, overrides))}")
    if part in ("all", "defaults"):
        defaults = _as_dict(OmegaConf.load(paths.conf_dir() / f"{config_name}.yaml")).get("defaults", [])
        lines += ["", "Defaults list:"] + [f"  {entry}" for entry in defaults]
    return "\n".join(lines)


def expand_overrides(argv: Sequence[str], list_keys: Sequence[str] = ()) -> list[list[str]]:
    """Command-line overrides -> one override list per run.

    A comma list of a key in ``list_keys`` (evaluate: ``predictor=a,b`` / ``shots=1,4``) becomes a
    list evaluated inside one run; any other comma sweep gives one run per value (cartesian product);
    """
    fixed: list[str] = []
    sweeps: list[list[str]] = []
    for ov in parse_overrides(normalize_overrides(list(argv))):
        key = ov.get_key_element()
        if not ov.is_sweep_override():
            fixed.append(str(ov.input_line))
        elif key in list_keys:
            fixed.append(f"{key}=[{','.join(ov.sweep_string_iterator())}]")
        else:
            sweeps.append([f"{key}={v}" for v in ov.sweep_string_iterator()])
    return [fixed + list(combo) for combo in itertools.product(*sweeps)] if sweeps else [fixed]


QUOTE_HINT = "a value with spaces, commas or brackets is quoted for the shell and for Hydra"


def _parse_reason(exc: BaseException) -> str:
    """Hydra's parse error without its link to the grammar page."""
    return one_line(exc).split("; See https://")[0]


def parse_overrides(args: list[str]) -> list:
    """Hydra's parse of each ``key=value``; what it cannot read is one line with the quoted form to
    paste (an unquoted space splits a value into two arguments, a comma makes a list of values)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for i, arg in enumerate(args):
        try:
            (ov,) = parser.parse_overrides([arg])
        except OverrideParseException as exc:
            glued = "=" not in arg and i > 0 and "=" in args[i - 1]  # the rest of the previous argument's value
            if "=" not in arg and not glued:
                raise ConfigError(f"{arg!r} is not key=value (e.g. dataset=demo); see --help") from None
            prefix, key, value = _split_override(args[i - 1] if glued else arg)
            value = f"{value} {arg}" if glued else value
            raise ConfigError(
                f"{arg!r} cannot be read as key=value ({_parse_reason(exc)}); {QUOTE_HINT}: \"{prefix}{key}='{value}'\""
            ) from None
        if ov.is_sweep_override():
            values = list(ov.sweep_string_iterator())
            whole = ",".join(values)
            if Path(whole).expanduser().exists() and not all(Path(v).expanduser().exists() for v in values):
                key = ov.get_key_element()
                raise ConfigError(f"{key}={whole}: a comma makes a list of values; {QUOTE_HINT}: \"{key}='{whole}'\"")
        parsed.append(ov)
    return parsed


def _split_override(override: str) -> tuple[str, str, str]:
    """(prefix ``+``/``++``/``~``, key, value) of ``key=value``."""
    key, _, value = override.partition("=")
    prefix = key[: len(key) - len(key.lstrip("+~"))]
    return prefix, key[len(prefix) :], value


def _alias(override: str, aliases: dict[str, str]) -> str:
    prefix, key, value = _split_override(override)
    head, dot, rest = key.partition(".")
    if head in aliases:
        return f"{prefix}{aliases[head]}{dot}{rest}={value}"
    return override


def _literal_braces(override: str) -> str:
    """Quote a value holding ``{split}`` so Hydra reads it as text, not as a dictionary."""
    prefix, key, value = _split_override(override)
    if "{split}" in value and not value.startswith(("'", '"')):
        return f"{prefix}{key}='{value}'"
    return override


def _group_options(group: str, overrides: list[str]) -> list[str]:
    """The options of a config group in the config folders (the package's, the user's, and those of a
    ``hydra.searchpath=[file:///a/folder,...]`` override)."""
    searchpaths = [value for _, key, value in map(_split_override, overrides) if key == paths.SEARCHPATH_KEY]
    extra = (
        [Path(p.strip().removeprefix("file://")) for p in searchpaths[-1].strip("[]").split(",") if p.strip()]
        if searchpaths
        else paths.user_conf_dirs()
    )  # an explicit searchpath replaces the variable
    folders = [paths.conf_dir(), *extra]
    return sorted({p.stem for folder in folders for p in (folder / group).glob("*.yaml")})


def _config_groups(config_name: str) -> set[str]:
    """The config groups ``<config_name>.yaml`` selects in its defaults list (``dataset``, ``model``, ...)."""
    from omegaconf import OmegaConf

    defaults = _as_dict(OmegaConf.load(paths.conf_dir() / f"{config_name}.yaml")).get("defaults", [])
    return {str(key).split("@")[0] for entry in defaults if isinstance(entry, dict) for key in entry}


def _check_groups(config_name: str, overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split ``overrides`` into group choices (``dataset=esc50``, checked) and settings."""
    known_groups = _config_groups(config_name)
    groups, settings = [], []
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"{override!r} is not key=value (e.g. {config_name} dataset=demo); see --help")
        prefix, key, value = _split_override(override)
        if key.startswith("hydra."):
            groups.append(override)
            continue
        if key == "index" and ("/" in value or Path(value).expanduser().exists()):
            what = INDEX_TYPES_HINT if "index" in known_groups else f"{config_name} has no index= option"
            raise ConfigError(f"{what}; the store's folder is store={value}")
        options = _group_options(key, overrides) if key in known_groups else []
        if not options:
            settings.append(override)
            continue
        if value not in options and not value.startswith(("[", "{")):
            raise ConfigError(
                f"{key}={value} is not a known {key}{did_you_mean(value, options)}; choose one of {', '.join(options)}"
            )
        groups.append(override)
    return groups, settings


def _plus_on_existing(override: str, base: dict) -> str:
    """``+key=v`` on a key the config already has sets it (``++``), as the user meant, instead of
    Hydra's "an item is already there" (older advice said ``+dataset.allow_outside_root=true``)."""
    prefix, key, value = _split_override(override)
    node: object = base
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return override
        node = node[part]
    return f"++{key}={value}" if prefix == "+" else override


def _check_key(override: str, base: dict) -> None:
    """An override must set a key the config has (``+key=`` may add one inside a section, not at the top)."""
    prefix, key, _ = _split_override(override)
    node: object = base
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if isinstance(node, list) and not part.isdigit():
            where = ".".join(parts[:depth])
            raise ConfigError(
                f"{where} is a list: set it whole ({where}=[...]), or one item by its position ({where}.0...)"
            )
        if not isinstance(node, dict):
            return  # below a value that is not a section (None, an item of a list): its own checks apply
        if part not in node:
            if prefix.startswith("+") and depth > 0:
                return
            where = ".".join(parts[:depth]) or "the top level"
            known = [".".join([*parts[:depth], str(k)]) for k in node]
            hint = did_you_mean(key, known) or f": {where} has {', '.join(sorted(map(str, node)))}"
            if not node:  # a group left unchosen (rag_classify's encoder: the store's own)
                hint = f": {where} has no settings until one is chosen ({where}=<name> {key}=...)"
            elif parts[0] == "encoder" and depth == 1:
                _refuse_encoder_option(str(node.get("name") or ""), part)
            raise ConfigError(f"unknown option {key!r}{hint}")
        node = node[part]


def _refuse_encoder_option(name: str, option: str) -> None:
    """The chosen encoder's own refusal of an option its config lacks (it names the encoder and what
    it takes, e.g. that it runs in torch only), when the encoder is registered."""
    from .encoders.base import available_encoders, check_options

    if name in available_encoders():
        check_options(name, {option: None})


def export_roots(cfg: Any) -> None:
    """The config wins over the environment for everything downstream (dataset sources read these)."""
    os.environ["RAG_FLAMINGO_DATA_ROOT"] = str(cfg.data_root)
    os.environ["RAG_FLAMINGO_CACHE_ROOT"] = str(cfg.cache_root)


def run_main(
    prog: str,
    doc: str | None,
    body: Callable[[list[str]], int | None],
    argv: list[str] | None = None,
    log_level: str = "INFO",
) -> int:
    """Run ``body(argv)``: ``-h``/``--help`` prints ``doc``; a user error (bad config, bad input)
    prints ``<prog>: error: ...`` and returns 2 instead of a traceback."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(doc)
        return 0
    logging.basicConfig(
        level=os.environ.get("RAG_FLAMINGO_LOG", log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which SIMD build it found: noise here
    ranked = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        return body(argv) or 0
    except BrokenPipeError:  # the reader went away (`... --cfg | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (RagFlamingoError, HydraException, OmegaConfBaseException) as exc:
        rank = int(os.environ.get("RANK", "0"))
        if rank == 0:  # under torchrun every rank usually meets it: rank 0 says it
            print(f"{prog}: error: {one_line(exc)}", file=sys.stderr, flush=True)
        elif ranked:  # rank 0 says it first: the launcher stops the others once one rank has exited;
            signal.signal(signal.SIGTERM, lambda *_: os._exit(2))  # still here: rank 0 did not meet it
            time.sleep(5)
            print(f"{prog}: error: (rank {rank}) {one_line(exc)}", file=sys.stderr, flush=True)
        if ranked:
            os._exit(2)  # no wait at a barrier or a process-group teardown for ranks that will never come
        return 2
    except Exception as exc:
        if ranked and _peer_gone(exc):  # another rank stopped (its own error says why): leave quietly
            os._exit(2)
        raise


def _peer_gone(exc: BaseException) -> bool:
    """A torch.distributed collective failed because another rank's process is gone."""
    text = str(exc)
    return type(exc).__name__ == "DistBackendError" or any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer", "Broken pipe")
    )


def one_line(exc: BaseException) -> str:
    """An error message on one line: its lines joined with "; " (OmegaConf's type details dropped)."""
    text = str(exc)
    if exc.__cause__ is not None and text.startswith("Error merging override"):  # Hydra hides the reason
        text = f"{text}: {exc.__cause__}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(("object_type=", "reference_type="))]
    return "; ".join(kept) or type(exc).__name__
