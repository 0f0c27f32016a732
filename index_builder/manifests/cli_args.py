"""The argument parser of the manifest commands: an argparse mistake is one line
``<prog>: error: ...`` (exit 2) with a "did you mean" for a misspelt flag or choice, like every
other command of the project, instead of argparse's usage block."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import NoReturn

from rag_flamingo.errors import did_you_mean


class OneLineParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line with a suggestion."""

    _argv: list[str]

    def parse_args(self, args: Sequence[str] | None = None, namespace=None):  # type: ignore[override]
        self._argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        return super().parse_args(self._argv, namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {self.explain(message)}\n")

    def explain(self, message: str) -> str:
        """argparse's ``message`` made one line; a misspelt flag in the arguments is named first
        (argparse would only say that the flag it stands for is missing)."""
        flags = self.option_names()
        known = [s for action in self._actions for s in action.option_strings]
        for token in getattr(self, "_argv", []):
            if token == "--":
                break
            if not token.startswith("-") or token == "-" or re.fullmatch(r"-\d[\d.]*", token):
                continue
            name = token.split("=", 1)[0]
            abbreviates = self.allow_abbrev and name.startswith("--") and any(f.startswith(name) for f in flags)
            if name in known or abbreviates:
                continue
            close = did_you_mean(name.lstrip("-"), [f[2:] for f in flags])  # "--" alone makes any two alike
            close = close.replace(" (did you mean '", " (did you mean '--")
            return f"unrecognized argument {name}{close}; the options are {', '.join(flags)}"
        choice = re.search(r"argument (\S+): invalid choice: '([^']*)'", message)
        if choice:
            argument, value = choice.groups()
            for action in self._actions:
                if action.choices is not None and argument in (action.dest, action.metavar, *action.option_strings):
                    choices = [str(c) for c in action.choices]
                    return (
                        f"argument {argument}: invalid choice {value!r}{did_you_mean(value, choices)}; "
                        f"choose from {', '.join(choices)}"
                    )
        return " ".join(message.split())

    def option_names(self) -> list[str]:
        return [s for action in self._actions for s in action.option_strings if s.startswith("--")]


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """``parser.parse_args(argv)``, or the exit code argparse chose (0 after ``--help``, 2 after an
    error already printed) so that ``main`` returns it instead of raising SystemExit."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
