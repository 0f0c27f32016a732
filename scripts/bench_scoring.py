#!/usr/bin/env python
"""Benchmark rank scoring (`rag_flamingo.model.scoring`) on CPU at a mid-size AF1 config (random weights).

One 8-audio ICL prompt whose query carries an OPTIONS list of N labels (as the eval template does),
and N label answers of 1-4 tokens + ``<|endofchunk|>``; each N in ``--options``:

- shared prefix: one prefill of the prompt, the N answers as batched rows from its KV cache
  (``rows_per_pass`` rows per forward);
- separate: N forwards of prompt + answer, one per option (OpenFlamingo's uncached rank
  classification), i.e. ``share_prefix=False, rows_per_pass=1``. Each such forward costs the same
  (the prompt dominates), so above ``--separate-max`` options only the first ``--separate-max`` are
  run and the N-option time is their time x N / measured (the table says "projected").

Both must give the same scores on the options run both ways (max |difference| printed) and, when
every option was run separately, the same best option.

  python scripts/bench_scoring.py                      # N = 10, 50, 200, mid-size model of bench_model.py
  python scripts/bench_scoring.py --options 10 --json out.json
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import EOC, MEDIA, SEP, build_model, mid_config, model_parser  # noqa: E402  (the same mid-size model)

from rag_flamingo.model.scoring import score_continuations  # noqa: E402


def rank_prompt(n_audios: int, seg_tokens: int, n_options: int, cfg, seed: int = 1):
    """Token ids of an ICL prompt whose query lists ``n_options`` labels, window features + mask, and
    the labels' answer tokens (1-4 tokens each)."""
    g = torch.Generator().manual_seed(seed)

    def rand(n: int) -> list[int]:
        return torch.randint(10, 50000, (n,), generator=g).tolist()

    labels = [rand(1 + i % 4) for i in range(n_options)]
    ids = [2, 2] + rand(12)
    for i in range(n_audios):
        ids += [MEDIA] + rand(seg_tokens // 2)
        if i == n_audios - 1:  # the query: "\noptions:\n - a.\n - b. ...\nanswer:"
            ids += rand(3) + [tok for lab in labels for tok in [12, *lab, 4]] + rand(3)
        ids += [SEP]
        if i < n_audios - 1:
            ids += rand(seg_tokens // 2) + [EOC]
    w = cfg.windows_per_audio
    feats = torch.randn(1, n_audios * w, cfg.audio_embed_dim, generator=g)
    mask = torch.zeros(1, n_audios * w)
    for i in range(n_audios):
        mask[0, i * w : i * w + 4 + (i * 5) % (w - 3)] = 1
    return torch.tensor([ids]), feats, mask, labels


def timed(repeats: int, *args, **kw):
    """Best wall time of ``score_continuations(*args, **kw)`` over ``repeats`` runs, and its scores."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = score_continuations(*args, **kw)[0]
        best = min(best, time.perf_counter() - t)
    assert out is not None
    return best, out


def main(argv=None) -> int:
    p = model_parser(__doc__)
    p.add_argument("--options", default="10,50,200", help="comma list of option counts N")
    p.add_argument("--rows-per-pass", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--separate-max", type=int, default=10, help="separate forwards actually run per N")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = mid_config(args)
    model = build_model(cfg)
    n_params = sum(t.numel() for t in model.state_dict().values())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    res: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "commit": commit,
        "params": n_params,
        "rows_per_pass": args.rows_per_pass,
        "runs": [],
    }
    print(f"mid-size AF1: {n_params / 1e6:.1f} M params; {res['machine']}; commit {commit}")
    print(
        "| N options | prompt tokens | shared prefix s | N separate forwards s | speed-up | max abs diff | same best |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    warm = rank_prompt(args.audios, args.segment_tokens, 2, cfg)
    score_continuations(model, warm[0], None, warm[1], warm[2], [warm[3]], end_ids=[EOC])
    for n in [int(x) for x in args.options.split(",")]:
        ids, feats, mask, labels = rank_prompt(args.audios, args.segment_tokens, n, cfg)
        inputs = (model, ids, None, feats, mask, [labels])
        t_shared, shared = timed(args.repeats, *inputs, end_ids=[EOC], rows_per_pass=args.rows_per_pass)
        run = min(n, args.separate_max)
        t_run, sep = timed(1, *inputs[:-1], [labels[:run]], end_ids=[EOC], rows_per_pass=1, share_prefix=False)
        t_sep = t_run * n / run
        diff = float(np.abs(shared.total[:run] - sep.total).max())
        same = int(np.argmax(shared.mean)) == int(np.argmax(sep.mean)) if run == n else None
        row = {
            "options": n,
            "prompt_tokens": ids.shape[1],
            "shared_s": t_shared,
            "separate_s": t_sep,
            "separate_run": run,
            "speedup": t_sep / t_shared,
            "max_abs_diff": diff,
            "same_best": same,
        }
        res["runs"].append(row)
        print(
            f"| {n} | {ids.shape[1]} | {t_shared:.2f} | {t_sep:.2f}{'' if run == n else f' (projected from {run})'} "
            f"| {t_sep / t_shared:.1f}x | {diff:.1e} | {'–' if same is None else same} |",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
