"""Text normalisation, tokenisation and output -> option matching shared by the metrics."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_NOT_WORD = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lowercase, NFKC, punctuation and underscores -> spaces, whitespace collapsed and stripped."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", text)).strip()


def tokenize(text: str) -> list[str]:
    """Caption tokens: ``normalize(text).split()``.

    Differs from the PTB tokenizer of coco-caption/aac-metrics (Java) in two ways: PTB keeps
    hyphenated compounds as one token (``dog-like``) and splits clitics into their own token
    (``it's`` -> ``it 's``); here both are split at the punctuation (``dog like``, ``it s``).
    Both lowercase and drop punctuation tokens, so on captions without hyphens/apostrophes the
    token lists are the same.
    """
    return normalize(text).split()


def _contains(haystack: str, needle: str) -> bool:
    return bool(needle) and f" {needle} " in f" {haystack} "


def match_option(output: str, options: Sequence[str]) -> str | None:
    """The option that a free-text ``output`` names, or None.

    After `normalize`: (1) exact match; (2) exact match ignoring spaces (``crowded indoor`` ->
    ``crowdedindoor``); (3) unique containment: the options found in the output as whole words,
    minus those inside a longer found option (``car horn`` beats ``car``), if exactly one is left;
    (4) the output found as whole words inside exactly one option. Anything else is unmatched.
    """
    out = normalize(output)
    if not out:
        return None
    normed = [(opt, normalize(opt)) for opt in options]
    for key in (lambda s: s, lambda s: s.replace(" ", "")):
        exact = [opt for opt, n in normed if key(n) == key(out)]
        if exact:
            return exact[0]
    found = [(opt, n) for opt, n in normed if _contains(out, n)]
    maximal = [opt for opt, n in found if not any(m != n and _contains(m, n) for _, m in found)]
    if len(set(maximal)) == 1:
        return maximal[0]
    if not found:
        inside = [opt for opt, n in normed if _contains(n, out)]
        if len(inside) == 1:
            return inside[0]
    return None
