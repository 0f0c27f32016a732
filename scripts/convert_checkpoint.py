#!/usr/bin/env python
"""Convert a released Audio Flamingo v1 checkpoint (.pt, the five *_partN.pt, or a hub name) to a
transformers folder (``save_pretrained``'s layout: config.json, model.safetensors without the
duplicate alias keys, generation_config.json, the AF1 tokenizer's files): about half the size of
the released file, bf16 halves it again.

  python scripts/convert_checkpoint.py foundation.pt foundation-hf [--dtype bf16]
  python scripts/convert_checkpoint.py checkpoints/ foundation-hf          # *_part1..5.pt
  python scripts/convert_checkpoint.py foundation foundation-hf            # hub download
  python scripts/convert_checkpoint.py tiny/checkpoint.pt tiny-hf --config tiny/config.json --tokenizer tiny/tokenizer

The folder loads with ``AudioFlamingoForConditionalGeneration.from_pretrained("foundation-hf")`` (or
``rag_flamingo.model.load_audio_flamingo``, or ``model.checkpoint.path=foundation-hf``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from rag_flamingo.errors import RagFlamingoError
from rag_flamingo.model.config import AF1_LM_ID, AudioFlamingoConfig
from rag_flamingo.model.loading import convert_released_checkpoint


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "checkpoint", nargs="+", help="released .pt file, part files, a directory of parts, or foundation/chat"
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--config", default=None, help="model config JSON (af1_tiny layout or ours); default: released size")
    p.add_argument(
        "--lm", default=None, help="read the OPT config from this hub id/dir (e.g. facebook/opt-iml-max-1.3b)"
    )
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="cast weights (default: keep)")
    p.add_argument("--tokenizer", default=AF1_LM_ID, help=f"base tokenizer, hub id or folder (default {AF1_LM_ID})")
    p.add_argument("--cache-dir", default=None, help="Hugging Face cache for hub downloads")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    src = args.checkpoint[0] if len(args.checkpoint) == 1 else args.checkpoint
    config = args.config or (AudioFlamingoConfig.foundation(lm=args.lm) if args.lm else None)
    try:
        out = convert_released_checkpoint(src, args.out, config, args.dtype, args.cache_dir, args.tokenizer)
    except RagFlamingoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"wrote {out}/ ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
