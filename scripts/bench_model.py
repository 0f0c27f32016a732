#!/usr/bin/env python
"""Benchmark the AF1 model on CPU at a mid-size config (random weights, real classes).

1. Latency of an 8-audio ICL prompt generating 32 tokens greedily: ours (KV cache with correct
   media masks) vs uncached generation (the only correct way with the reference code, whose cached
   decoding shows the query audio to the first new token only). Both must give the same tokens.
   With ``--baseline REV`` also the same cached greedy generation by the package as it was at git
   revision REV (e.g. the hand-written decoding loop before generation moved to transformers'
   ``generate``), side by side: both run in fresh processes on the same weights and prompt, in
   alternating rounds (so a change of machine load hits both), best time of each; tokens compared.
2. Peak RAM of loading a checkpoint in the released format (``{'model_state_dict'}`` with the
   alias copies, torch.load mmap) vs the converted safetensors file, each in a fresh subprocess
   (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after touching every weight, minus the
   process's peak before loading).

  python scripts/bench_model.py                 # defaults below
  python scripts/bench_model.py --skip-ram --new-tokens 16
  python scripts/bench_model.py --skip-ram --baseline 5f45c84   # old vs new cached greedy generation
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rag_flamingo.model import AudioFlamingo, AudioFlamingoConfig, generate
from rag_flamingo.model.loading import convert_released_checkpoint, released_state_dict

MEDIA, SEP, EOC = 50265, 50267, 50266


def mid_config(args) -> AudioFlamingoConfig:
    opt = dict(AudioFlamingoConfig().opt)
    opt.update(
        hidden_size=args.hidden,
        word_embed_proj_dim=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        ffn_dim=args.ffn,
    )
    return AudioFlamingoConfig(opt=opt, audio_embed_dim=args.audio_dim)


def build_model(cfg: AudioFlamingoConfig) -> AudioFlamingo:
    torch.manual_seed(0)
    model = AudioFlamingo(cfg).eval()
    with torch.no_grad():
        for layer in model.decoder.layers:  # open the gates so the audio matters
            layer.gated_cross_attn_layer.attn_gate.fill_(0.5)
            layer.gated_cross_attn_layer.ff_gate.fill_(0.5)
    return model


def icl_prompt(n_audios: int, seg_tokens: int, cfg: AudioFlamingoConfig):
    """A token-level 8-shot ICL prompt: </s></s> prefix, then <audio> prompt <SEP> answer <EOC> ..."""
    g = torch.Generator().manual_seed(1)
    ids = [2, 2] + torch.randint(10, 50000, (12,), generator=g).tolist()
    for i in range(n_audios):
        ids += [MEDIA] + torch.randint(10, 50000, (seg_tokens // 2,), generator=g).tolist() + [SEP]
        if i < n_audios - 1:
            ids += torch.randint(10, 50000, (seg_tokens // 2,), generator=g).tolist() + [EOC]
    w = cfg.windows_per_audio
    feats = torch.randn(1, n_audios * w, cfg.audio_embed_dim, generator=g)
    mask = torch.zeros(1, n_audios * w)
    for i in range(n_audios):
        mask[0, i * w : i * w + 4 + (i * 5) % (w - 3)] = 1  # 4..16 real windows per audio
    return torch.tensor([ids]), feats, mask


def time_generation(model, ids, feats, mask, new_tokens, use_cache, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = generate(model, ids, None, feats, mask, max_new_tokens=new_tokens, eos_token_id=None, use_cache=use_cache)
        best = min(best, time.perf_counter() - t)
    return best, out


_GEN_CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[4]))
from rag_flamingo.model import AudioFlamingoConfig, generate, load_audio_flamingo
model = load_audio_flamingo(sys.argv[1], AudioFlamingoConfig.from_dict(json.loads(sys.argv[2])))
ids, feats, mask = torch.load(sys.argv[3])
new_tokens, repeats = int(sys.argv[5]), int(sys.argv[6])
generate(model, ids[:, :64], None, feats, mask, max_new_tokens=2)  # warm-up
best = float("inf")
for _ in range(repeats):
    t = time.perf_counter()
    out = generate(model, ids, None, feats, mask, max_new_tokens=new_tokens, eos_token_id=None, use_cache=True)
    best = min(best, time.perf_counter() - t)
print(json.dumps({"s": best, "tokens": out.new_tokens[0].tolist()}))
"""


def versus_baseline(model, cfg, prompt, args) -> dict:
    """Cached greedy generation by this tree and by the package at git revision ``args.baseline``,
    each in fresh processes, ``args.rounds`` alternating rounds of ``args.repeats`` runs."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "old").mkdir()
        archive = subprocess.run(
            ["git", "archive", args.baseline, "rag_flamingo"], cwd=root, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp / "old")], input=archive, check=True)
        weights = tmp / "mid.pt"
        torch.save({"model_state_dict": released_state_dict(model)}, weights)
        torch.save(prompt, tmp / "prompt.pt")
        (tmp / "child.py").write_text(_GEN_CHILD)
        child = [str(tmp / "child.py"), str(weights), json.dumps(cfg.to_dict()), str(tmp / "prompt.pt")]
        child += [str(args.threads), str(args.new_tokens), str(args.repeats)]
        runs: dict[str, list] = {"new": [], "old": []}
        for _ in range(args.rounds):
            for name, tree in (("new", root), ("old", tmp / "old")):
                env = {**os.environ, "PYTHONPATH": str(tree)}
                r = subprocess.run([sys.executable, *child], capture_output=True, text=True, env=env, check=True)
                runs[name].append(json.loads(r.stdout.strip().splitlines()[-1]))
    new, old = min(r["s"] for r in runs["new"]), min(r["s"] for r in runs["old"])
    same = all(r["tokens"] == runs["new"][0]["tokens"] for r in runs["new"] + runs["old"])
    return {"baseline": args.baseline, "new_s": new, "old_s": old, "new_over_old": new / old, "same_tokens": same}


_RAM_CHILD = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
from rag_flamingo.model import AudioFlamingoConfig, load_audio_flamingo
cfg = AudioFlamingoConfig.from_dict(json.loads(sys.argv[2])) if sys.argv[2] != "null" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = load_audio_flamingo(sys.argv[1], cfg)
with torch.no_grad():
    checksum = sum(float(p.float().sum()) for p in model.parameters())  # touch every weight
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"peak_delta_kb": after - before, "baseline_kb": before, "peak_kb": after, "vmhwm_kb": hwm,
                  "checksum": checksum}))
"""


def load_peak(path: Path, cfg: AudioFlamingoConfig | None) -> dict:
    """Run the loader in a fresh process. Linux carries ru_maxrss across fork+exec (the child
    starts with its parent's peak), so the child is started through an intermediate shell that
    does not exec it: its ru_maxrss then starts from the small shell's."""
    script = path.parent / "ram_child.py"
    script.write_text(_RAM_CHILD)
    arg = json.dumps(cfg.to_dict()) if cfg is not None else "null"
    cmd = ["/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, str(script), str(path), arg]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def model_parser(doc: str | None) -> argparse.ArgumentParser:
    """The mid-size model's options (shared with bench_scoring.py: the same model)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ffn", type=int, default=2048)
    p.add_argument("--audio-dim", type=int, default=1024)
    p.add_argument("--audios", type=int, default=8)
    p.add_argument("--segment-tokens", type=int, default=40, help="tokens per shot (prompt + answer)")
    return p


def main(argv=None) -> int:
    p = model_parser(__doc__)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-latency", action="store_true")
    p.add_argument("--baseline", default=None, help="git revision whose generation to time side by side")
    p.add_argument("--rounds", type=int, default=3, help="alternating new/old rounds with --baseline")
    p.add_argument("--skip-ram", action="store_true")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = mid_config(args)
    model = build_model(cfg)
    n_params = sum(t.numel() for t in model.state_dict().values())
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    res = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        "config": {
            k: getattr(args, k) for k in ("hidden", "layers", "heads", "ffn", "audio_dim", "audios", "new_tokens")
        },
        "params": n_params,
        "model_mb": model_bytes / 2**20,
    }
    print(f"mid-size AF1: {n_params / 1e6:.1f} M params ({model_bytes / 2**20:.0f} MiB fp32)")

    if not args.skip_latency:
        ids, feats, mask = icl_prompt(args.audios, args.segment_tokens, cfg)
        generate(model, ids[:, :64], None, feats, mask, max_new_tokens=2)  # warm-up
        t_cached, cached = time_generation(model, ids, feats, mask, args.new_tokens, True, args.repeats)
        t_uncached, uncached = time_generation(
            model, ids, feats, mask, args.new_tokens, False, max(1, args.repeats - 1)
        )
        same = torch.equal(cached.new_tokens, uncached.new_tokens)
        res["latency"] = {
            "prompt_tokens": ids.shape[1],
            "windows": feats.shape[1],
            "cached_s": t_cached,
            "uncached_s": t_uncached,
            "speedup": t_uncached / t_cached,
            "same_tokens": same,
        }
        print(
            f"8-audio ICL prompt ({ids.shape[1]} tokens, {feats.shape[1]} windows) -> {args.new_tokens} tokens: "
            f"cached {t_cached:.2f} s, uncached {t_uncached:.2f} s, speed-up {t_uncached / t_cached:.1f}x, "
            f"same tokens: {same}"
        )

    if args.baseline:
        vs = versus_baseline(model, cfg, icl_prompt(args.audios, args.segment_tokens, cfg), args)
        res["versus_baseline"] = vs
        print(
            f"cached greedy, {args.new_tokens} tokens: this tree {vs['new_s']:.2f} s, {args.baseline} "
            f"{vs['old_s']:.2f} s (new/old {vs['new_over_old']:.2f}), same tokens: {vs['same_tokens']}"
        )

    if not args.skip_ram:
        with tempfile.TemporaryDirectory() as d:
            original = Path(d) / "mid.pt"
            torch.save({"model_state_dict": released_state_dict(model)}, original)
            converted = convert_released_checkpoint(original, Path(d) / "mid-hf", cfg, tokenizer=None)
            del model
            rows = {}
            for name, path, c in (
                ("original .pt (with aliases)", original, cfg),
                ("converted folder (model.safetensors)", converted, None),
            ):
                r = load_peak(path, c)
                r["file_mb"] = (path / "model.safetensors" if path.is_dir() else path).stat().st_size / 2**20
                r["ratio"] = r["peak_delta_kb"] * 1024 / model_bytes
                rows[name] = r
                print(
                    f"load {name}: file {r['file_mb']:.0f} MiB, peak RSS +{r['peak_delta_kb'] / 1024:.0f} MiB "
                    f"= {r['ratio']:.2f}x the model ({model_bytes / 2**20:.0f} MiB)"
                )
            res["ram"] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
