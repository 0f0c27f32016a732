"""Every setting's range and type, derived from the typed schemas (`rag_flamingo.config`), refused by
every CLI in one line (exit 2, no traceback) before any work; and every command-line fix an error
message suggests is accepted as written. A new setting or message is covered without a new test."""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from index_builder.cli import main as build_index
from rag_flamingo.app.main import main as rag_app
from rag_flamingo.classify import main as rag_classify
from rag_flamingo.cli import compose_config
from rag_flamingo.config import SCHEMAS, Range, check_ranges, ranges, scalar_types
from rag_flamingo.evaluate import main as evaluate

ROOT = Path(__file__).resolve().parents[1]
MAINS = {"build_index": build_index, "evaluate": evaluate, "rag_classify": rag_classify, "rag_app": rag_app}


def bad_values(rule: Range) -> list[str]:
    """Values just outside the range (as typed on a command line)."""
    out = []
    if rule.choices:
        out.append("bogus_choice")
    if rule.pattern:
        out.append("bogus_form")
    if rule.whole:
        out.append("1.5")
    for bound, step in ((rule.ge, -1), (rule.gt, 0), (rule.le, 1)):
        if bound is not None:
            value = bound + step
            out.append(str(int(value)) if float(value).is_integer() else str(value))
    return out


WRONG_TYPE = {int: "abc", float: "abc", bool: "2"}  # OmegaConf alone would read 2 as true


def cases() -> list[tuple[str, str, str]]:
    """(cli, key, bad value): every ranged setting just outside its range and every typed setting with a
    value of the wrong type, each on the first CLI whose schema has it (the others share the code)."""
    seen: set[str] = set()
    out = []
    for cli, schema in SCHEMAS.items():
        mine = [(key, value) for key, (rule, _) in ranges(schema).items() for value in bad_values(rule)]
        mine += [(key, WRONG_TYPE[kind]) for key, kind in scalar_types(schema).items()]
        for key, value in mine:
            if (key, value) not in seen:
                seen.add((key, value))  # type: ignore[arg-type]
                out.append((cli, key, value))
    return out


def test_every_ranged_setting_has_bad_values_and_its_default_is_inside():
    for schema in SCHEMAS.values():
        check_ranges(schema, dataclasses.asdict(schema()))  # the declared defaults are inside their ranges
        for key, (rule, _) in ranges(schema).items():
            assert bad_values(rule), key  # a range that refuses nothing is not a range


@pytest.mark.parametrize("cli", list(SCHEMAS))
def test_out_of_range_and_wrong_type_values_are_one_line_errors(cli, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = [(key, value) for c, key, value in cases() if c == cli]
    assert mine
    for key, value in mine:
        code = MAINS[cli]([f"{key}={value}", f"cache_root={tmp_path / 'cache'}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (cli, key, value, err)
        assert len(err) == 1 and "Traceback" not in err[0] and key.split(".")[-1] in err[0], (key, value, err)
    assert not (tmp_path / "cache").exists()  # refused before any work


# ----------------------------------------------------------------------------- advice that works as pasted

SUGGESTION = re.compile(r"(?<![\w.$/{-])(\+{0,2}[a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*)=([^\s`'\"(),;]+)")


def _message_texts(path: Path) -> list[tuple[str, int]]:
    """The literal text of every error raised in a module (f-string fields as ``{}``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for arg in node.exc.args:
                if isinstance(arg, ast.JoinedStr):
                    out.append(
                        ("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in arg.values), node.lineno)
                    )
                elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    out.append((arg.value, node.lineno))
    return out


def suggested_overrides() -> dict[str, str]:
    """``{override: where}``: every literal ``key=value`` an error message of the packages suggests,
    where ``key`` is a setting of one of the CLIs (not a Python argument) and the value is not a
    placeholder (``<name>``, ``...``, an f-string field)."""
    settings = {f.name for schema in SCHEMAS.values() for f in dataclasses.fields(schema)}
    out = {}
    for package in ("rag_flamingo", "index_builder"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for text, line in _message_texts(path):
                for m in SUGGESTION.finditer(text):
                    key, value = m.group(1), m.group(2)
                    if key.lstrip("+").split(".")[0] not in settings or "{}" in m.group(0):
                        continue
                    if value.startswith("<") or "..." in value:
                        continue
                    out[m.group(0).rstrip(".:")] = f"{path.relative_to(ROOT)}:{line}"
    return out


def test_every_suggested_setting_is_accepted_as_written():
    found = suggested_overrides()
    assert len(found) > 20  # the scan finds the messages (mode=features, flamingo.decode=generate, ...)
    refused = {}
    for override, where in found.items():
        errors = []
        for name in SCHEMAS:
            try:
                compose_config(name, [override])
                break
            except Exception as exc:  # noqa: BLE001 (any refusal counts; the message is reported)
                errors.append(f"{name}: {exc}")
        else:
            refused[override] = (where, errors[-1])
    assert not refused, refused


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["dataset=folder", "dataset.root={d}/my", "sounds"], "\"dataset.root='{d}/my sounds'\""),
        (["dataset=folder", "dataset.root={d}/a,b"], "\"dataset.root='{d}/a,b'\""),
        (["dataset=folder", "dataset.root={d}/outside", "+dataset.allow_outside_root=true"], None),
    ],
)
def test_quoting_advice_works_when_pasted_into_a_shell(tmp_path, capsys, argv, expected):
    """A path with a space or a comma: the error shows the quoted form, which a shell then passes
    to the CLI as one value (here shlex stands in for the shell)."""
    (tmp_path / "my sounds").mkdir()
    (tmp_path / "a,b").mkdir()
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    if expected is None:  # the manifest error's own advice: without + (and with it) both accepted
        for override in ("dataset.allow_outside_root=true", "+dataset.allow_outside_root=true"):
            assert compose_config("evaluate", ["dataset=folder", override]).dataset.allow_outside_root is True
        return
    assert evaluate(argv) == 2
    err = capsys.readouterr().err.strip()
    fix = expected.replace("{d}", str(tmp_path))
    assert fix in err and len(err.splitlines()) == 1, err
    pasted = shlex.split(f"dataset=folder {fix}")
    cfg = compose_config("evaluate", pasted)
    assert cfg.dataset.root == str(tmp_path / Path(fix.split("'")[1]).name)
