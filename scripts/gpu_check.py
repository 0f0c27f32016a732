#!/usr/bin/env python
"""Everything a GPU must show, in one run: writes ``gpu_check.json`` and ``gpu_check.md`` into OUTDIR.

  python scripts/gpu_check.py OUTDIR              # on a CUDA machine (scripts/gpu_check.sh sets it up)
  python scripts/gpu_check.py --dry-run OUTDIR    # CPU, tiny sizes, the same code paths (run by the tests)

Sections (each one's figures, or its error, go into the report; one failing section does not stop
the others, and the exit code is 1 when any failed):
  encoder      the aisfx encoder (real weights, shipped in its wheel): fp16 autocast on the GPU vs fp32
               on the CPU on the same clips (cosine >= 0.999), clips/s at batch 32 and 128
  build_index  build_index over generated wav clips: clips/s end to end vs forward-only on the device
  faiss        IVF-Flat / IVF-PQ train + add on synthetic 512-d vectors (CPU FAISS on all cores, or
               faiss-gpu when present): time, recall@10 vs exact; exact top-k in torch on the device
  model        AF1 at the foundation size (random weights) in bf16: load time and peak device memory
               from a converted safetensors file written here, 8-audio ICL prompt, tokens/s cached vs
               uncached at batch 1 and 8, ms per decoded token vs the memory-bandwidth bound, greedy
               tokens bf16 vs fp32 (first divergence reported)
Not covered yet (listed in the report): the other encoders at their real sizes (their random-weight
checkpoints are built with the test-only oracle packages), an end-to-end 7-shot query.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

NOT_COVERED = [
    "encoders other than aisfx at their real sizes (random-weight checkpoints need the test-only oracle packages)",
    "end-to-end 7-shot query latency (retrieval + cached features + generation)",
    "faiss-gpu training/search (its wheel is ~135 MB, over the 64 MiB a device call carries)",
]


def sizes(dry: bool) -> dict:
    if dry:
        return {
            "batches": [2, 4],
            "clips": 8,
            "seconds": 2.0,
            "vectors": 4000,
            "pq_m": 8,
            "queries": 100,
            "new_tokens": 4,
        }
    # pq_m=64: auto would take PQ256 (2 dims per code), whose training alone can outlast the run
    return {
        "batches": [32, 128],
        "clips": 2000,
        "seconds": 5.0,
        "vectors": 1_000_000,
        "pq_m": 64,
        "queries": 1000,
        "new_tokens": 32,
    }


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clips(n: int, seconds: float, sr: int = 44100, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return [
        (0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        for i in range(n)
    ]


# ----------------------------------------------------------------------------- sections


def check_encoder(device: str, size: dict) -> dict:
    from rag_flamingo.encoders import build_encoder

    reference = build_encoder("aisfx", device="cpu")
    fast = build_encoder("aisfx", device=device)
    waves = clips(max(size["batches"]), size["seconds"], reference.sample_rate)
    n_check = min(8, len(waves))
    a = np.asarray(reference.embed(waves[:n_check]), dtype=np.float64)
    b = np.asarray(fast.embed(waves[:n_check]), dtype=np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    rates = {}
    for batch in size["batches"]:
        fast.embed(waves[:batch])  # warm-up (cudnn autotuning, allocator)
        synchronize(device)
        start = time.perf_counter()
        fast.embed(waves[:batch])
        synchronize(device)
        rates[str(batch)] = round(batch / (time.perf_counter() - start), 1)
    return {
        "encoder": "aisfx",
        "precision": str(getattr(fast, "dtype", "")),
        "cosine_min": round(float(cos.min()), 6),
        "cosine_ok": bool(cos.min() >= 0.999),
        "clips_per_s": rates,
        "clip_seconds": size["seconds"],
    }


def check_build_index(device: str, size: dict, work: Path) -> dict:
    import soundfile as sf

    from index_builder.cli import main as build_index_main
    from rag_flamingo.audio import load_audio
    from rag_flamingo.encoders import build_encoder

    audio = work / "audio"
    for i, wave in enumerate(clips(size["clips"], size["seconds"], 16000)):
        path = audio / f"class{i % 4}" / f"clip{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave, 16000)
    batch = max(size["batches"][0], 2)
    start = time.perf_counter()
    code = build_index_main(
        [
            "dataset=folder",
            f"dataset.root={audio}",
            f"store={work / 'store'}",
            f"batch_size={batch}",
            "num_workers=4" if device.startswith("cuda") else "num_workers=0",
            f"device={device}",
            "progress=false",
        ]
    )
    total = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"build_index exited {code}")
    encoder = build_encoder("aisfx", device=device)
    files = sorted(audio.rglob("*.wav"))
    waves = [load_audio(f, encoder.sample_rate) for f in files]
    encoder.embed(waves[:batch])
    synchronize(device)
    start = time.perf_counter()
    for i in range(0, len(waves), batch):
        encoder.embed(waves[i : i + batch])
    synchronize(device)
    forward = time.perf_counter() - start
    return {
        "clips": len(files),
        "batch_size": batch,
        "end_to_end_s": round(total, 2),
        "end_to_end_clips_per_s": round(len(files) / total, 1),
        "forward_only_clips_per_s": round(len(files) / forward, 1),
        "note": "end to end includes model load, decoding, shards, FAISS and the recall check",
    }


def check_faiss(device: str, size: dict) -> dict:
    import faiss

    from index_builder.faiss_index import IndexOptions, build_index, exact_neighbours

    n, dim = size["vectors"], 512
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(10, n // 100), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out: dict = {"vectors": n, "dim": dim, "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads()}
    for kind in ("ivf_flat", "ivf_pq"):
        start = time.perf_counter()
        _, report = build_index(x, IndexOptions(type=kind, pq_m=size["pq_m"], recall_queries=size["queries"]))
        out[kind] = {
            "factory": report.factory,
            "gpu": report.gpu,
            "build_and_tune_s": round(time.perf_counter() - start, 2),
            "recall_at_10": round(report.recall_at_10, 4),
            "search_params": report.search_params,
        }
    queries = np.arange(0, n, n // size["queries"])[: size["queries"]]
    start = time.perf_counter()
    truth = exact_neighbours(x, queries, 10, "cosine")
    cpu_s = time.perf_counter() - start
    base = torch.from_numpy(x).to(device)
    q = base[torch.from_numpy(queries).to(device)]
    synchronize(device)
    start = time.perf_counter()
    found = torch.topk(q @ base.T, 10, dim=1).indices
    synchronize(device)
    torch_s = time.perf_counter() - start
    agree = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.cpu().numpy(), truth)]))
    out["exact_top10"] = {
        "queries": len(queries),
        "faiss_cpu_s": round(cpu_s, 3),
        "torch_device_s": round(torch_s, 4),
        "agreement": round(agree, 4),
    }
    return out


def model_config(dry: bool):
    from rag_flamingo.model import AudioFlamingoConfig

    if not dry:
        return AudioFlamingoConfig()  # the released foundation size: OPT-IML-MAX-1.3B + xattn every layer
    opt = dict(AudioFlamingoConfig().opt)
    opt.update(hidden_size=64, word_embed_proj_dim=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128)
    return AudioFlamingoConfig(opt=opt, audio_embed_dim=32, at_d_inner=64)


def copy_bandwidth(device: str) -> float:
    """Bytes per second of a large device-to-device copy (read + write counted)."""
    n = 256 * 2**20 if device.startswith("cuda") else 16 * 2**20
    a = torch.empty(n, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    synchronize(device)
    return 2 * 10 * n / (time.perf_counter() - start)


def check_model(device: str, size: dict, work: Path, dry: bool) -> dict:
    from bench_model import build_model, icl_prompt

    from rag_flamingo.model import generate, load_audio_flamingo
    from rag_flamingo.model.loading import convert_released_checkpoint, released_state_dict

    cfg = model_config(dry)
    model = build_model(cfg)
    params = sum(t.numel() for t in model.state_dict().values())
    original = work / "af1_random.pt"
    torch.save({"model_state_dict": released_state_dict(model)}, original)
    converted = convert_released_checkpoint(original, work / "af1_random.safetensors", cfg, dtype=torch.bfloat16)
    original.unlink()
    ids, feats, mask = icl_prompt(8, 40, cfg)
    short = ids[:, :48]
    fp32_tokens = generate(model, short, None, feats, mask, max_new_tokens=8, eos_token_id=None).new_tokens[0]
    del model
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model = load_audio_flamingo(converted, cfg, dtype=torch.bfloat16, device=device)
    synchronize(device)
    load_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ids, feats, mask = ids.to(device), feats.to(device, torch.bfloat16), mask.to(device)
    bf16_tokens = generate(model, short.to(device), None, feats, mask, max_new_tokens=8, eos_token_id=None).new_tokens[
        0
    ]
    same = torch.equal(bf16_tokens.cpu(), fp32_tokens.cpu())
    diverge = None if same else int((bf16_tokens.cpu() != fp32_tokens.cpu()).nonzero()[0])
    runs = {}
    for batch in (1, 8):
        b_ids, b_feats, b_mask = ids.repeat(batch, 1), feats.repeat(batch, 1, 1), mask.repeat(batch, 1)
        for cached in (True, False):
            generate(model, b_ids, None, b_feats, b_mask, max_new_tokens=2, eos_token_id=None, use_cache=cached)
            synchronize(device)
            start = time.perf_counter()
            generate(
                model,
                b_ids,
                None,
                b_feats,
                b_mask,
                max_new_tokens=size["new_tokens"],
                eos_token_id=None,
                use_cache=cached,
            )
            synchronize(device)
            seconds = time.perf_counter() - start
            runs[f"batch{batch}_{'cached' if cached else 'uncached'}_tokens_per_s"] = round(
                batch * size["new_tokens"] / seconds, 1
            )
    # decode time per token (cached, batch 1): time of N+1 tokens minus time of 1 token (the prefill)
    one = _timed_generate(model, ids, feats, mask, 1, device)
    many = _timed_generate(model, ids, feats, mask, size["new_tokens"] + 1, device)
    per_token = (many - one) / size["new_tokens"]
    bandwidth = copy_bandwidth(device)
    return {
        "params": params,
        "size": "test-size" if dry else "foundation (OPT-IML-MAX-1.3B + gated xattn)",
        "dtype": "bfloat16",
        "load_s": round(load_s, 2),
        "safetensors_mb": round(converted.stat().st_size / 2**20, 1),
        "peak_device_memory_gb": round(peak / 2**30, 2) if peak is not None else None,
        "prompt_tokens": int(ids.shape[1]),
        "audio_windows": int(feats.shape[1]),
        **runs,
        "decode_ms_per_token": round(1000 * per_token, 3),
        "bandwidth_bound_ms_per_token": round(1000 * weight_bytes / bandwidth, 3),
        "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
        "greedy_bf16_equals_fp32": same,
        "first_divergence": diverge,
    }


def _timed_generate(model, ids, feats, mask, new_tokens: int, device: str) -> float:
    from rag_flamingo.model import generate

    synchronize(device)
    start = time.perf_counter()
    generate(model, ids, None, feats, mask, max_new_tokens=new_tokens, eos_token_id=None, use_cache=True)
    synchronize(device)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    lines = [
        "# gpu_check report",
        "",
        f"produced by scripts/gpu_check.py{' --dry-run' if report['dry_run'] else ''}; "
        f"{report['machine']}; {report['date']}",
        "",
    ]
    for name, section in report["sections"].items():
        lines.append(f"## {name}")
        lines.append("")
        if "error" in section:
            lines.append(f"FAILED: {section['error']}")
        else:
            lines += [f"- {key}: {value}" for key, value in section.items()]
        lines.append("")
    lines.append("## not covered by this check")
    lines += [f"- {item}" for item in report["not_covered"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, the same code paths")
    ap.add_argument("--only", default="encoder,build_index,faiss,model", help="comma-separated sections")
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch; run it on a GPU machine, or use --dry-run", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    size = sizes(args.dry_run)
    args.outdir.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "no GPU (dry run)"
    report: dict = {
        "dry_run": args.dry_run,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{gpu}; {platform.processor() or platform.machine()}, python {platform.python_version()}, "
        f"torch {torch.__version__}",
        "sizes": size,
        "sections": {},
        "not_covered": NOT_COVERED,
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checks = {
            "encoder": lambda: check_encoder(device, size),
            "build_index": lambda: check_build_index(device, size, work / "build"),
            "faiss": lambda: check_faiss(device, size),
            "model": lambda: check_model(device, size, work, args.dry_run),
        }
        for name in args.only.split(","):
            start = time.perf_counter()
            try:
                result = checks[name]()
            except Exception as exc:  # a failed section is reported, the others still run
                traceback.print_exc()
                result = {"error": f"{type(exc).__name__}: {exc}"}
            result["section_s"] = round(time.perf_counter() - start, 1)
            report["sections"][name] = result
            print(f"gpu_check: {name} done in {result['section_s']} s", flush=True)
            (args.outdir / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (args.outdir / "gpu_check.md").write_text(markdown(report))
    failed = [name for name, section in report["sections"].items() if "error" in section]
    print(
        f"gpu_check: report in {args.outdir}/gpu_check.{{json,md}}"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
