"""``python -m index_builder.manifests <dataset> --metadata DIR --out DIR [--check-audio] [--option K=V]``."""

from __future__ import annotations

import argparse
import logging
import sys

from rag_flamingo.cli import one_line
from rag_flamingo.errors import RagFlamingoError

from . import DATASETS, make_manifests
from .cli_args import OneLineParser, run_parser

PROG = "python -m index_builder.manifests"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace | int:
    """The arguments, or the exit code when argparse stopped (2 after a one-line error, 0 after --help)."""
    parser = OneLineParser(
        prog=PROG,
        description="Turn a dataset's official metadata into JSONL manifests (one per split).",
    )
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument(
        "--metadata",
        required=True,
        help="the dataset root as extracted (see data_manifests/<dataset>/README.md); "
        "manifest paths are relative to it",
    )
    parser.add_argument("--out", required=True, help="folder for <split>.jsonl (e.g. <root>/manifests)")
    parser.add_argument(
        "--check-audio",
        action="store_true",
        help="leave out rows whose audio file is missing (listed in <split>.missing.jsonl)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a maker option, e.g. query_fold=1 (esc50/us8k) or audio_pattern=... (audiocaps)",
    )
    return run_parser(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if isinstance(args, int):
        return args
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"{PROG}: error: --option {item!r} is not KEY=VALUE, e.g. --option query_fold=1", file=sys.stderr)
            return 2
        options[key.strip()] = value
    try:
        result = make_manifests(args.dataset, args.metadata, args.out, check_audio=args.check_audio, **options)
    except RagFlamingoError as exc:  # a user error: one line, exit 2, like every command of the project
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    for split, path in result.manifests.items():
        missing = f" ({result.missing[split]} without audio left out)" if split in result.missing else ""
        print(f"{split}: {result.counts[split]} rows -> {path}{missing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
