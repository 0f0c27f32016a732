#!/usr/bin/env python
"""Everything a GPU must show, in one run: writes ``gpu_check.json`` and ``gpu_check.md`` into OUTDIR.

  python scripts/gpu_check.py OUTDIR              # on a CUDA machine (scripts/gpu_check.sh sets it up)
  python scripts/gpu_check.py --dry-run OUTDIR    # CPU, tiny sizes, the same code paths (run by the tests)

Sections (each one's figures, or its error, go into the report; one failing section does not stop
the others, and the exit code is 1 when any failed):
  encoders     every registered encoder at its real size (aisfx with its released weights, the others
               with random weights built from the project's model classes, saved in the released
               format, loaded through build_encoder): fp16/autocast on the GPU vs fp32 on the CPU on
               the same clips (cosine >= 0.999), clips/s at batch 32 and 128
  build_index  build_index over generated wav clips: clips/s end to end vs forward-only on the device
  faiss        IVF-Flat / IVF-PQ train + add on synthetic 512-d vectors (CPU FAISS on all cores, or
               faiss-gpu when present): time, recall@10 vs exact; exact top-k in torch on the device
  model        AF1 at the foundation size (random weights) in bf16: load time and peak device memory
               from a converted safetensors file written here, 8-audio ICL prompt, tokens/s cached vs
               uncached at batch 1 and 8, ms per decoded token vs the memory-bandwidth bound, greedy
               tokens bf16 vs fp32 (first divergence reported)
  e2e          one 7-shot RagFlamingo query end to end on AF1 at the foundation size (bf16): retrieval
               (decode, aisfx, FAISS), then prompt + clapcap windows of the query (shots' windows from
               the store's feature cache) + greedy generation; median latency per part
The random-weight builders reuse tests/support's pure-Python helpers (tiny local RoBERTa stand-in,
the CLAP randomiser); no oracle package is needed.
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
sys.path.insert(0, str(SCRIPTS.parent))  # oracles.laion: random weights, text stand-ins

NOT_COVERED = [
    "encoders' text towers (tiny local stand-ins: the machine cannot fetch roberta-base/gpt2/bert)",
    "faiss-gpu training/search (its wheel is ~135 MB, over the 64 MiB a device call carries)",
]


def sizes(dry: bool) -> dict:
    if dry:
        return {
            "batches": [1, 2],
            "check_clips": 1,
            "clips": 8,
            "seconds": 2.0,
            "vectors": 4000,
            "pq_m": 8,
            "queries": 100,
            "new_tokens": 4,
            "e2e": {"store": 4, "queries": 1, "seconds": 2.0, "shots": 3, "window_batch": 1, "feature_batch": 4},
        }
    # pq_m=64: auto would take PQ256 (2 dims per code), whose training alone can outlast the run
    return {
        "batches": [32, 128],
        "check_clips": 8,
        "clips": 2000,
        "seconds": 5.0,
        "vectors": 1_000_000,
        "pq_m": 64,
        "queries": 1000,
        "new_tokens": 32,
        "e2e": {"store": 128, "queries": 8, "seconds": 10.0, "shots": 7, "window_batch": 16, "feature_batch": 64},
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


# Every registered encoder, at its real size. aisfx ships its weights in its wheel; the others are
# built from the project's own model classes with random weights (the machine has no network), saved
# in the released checkpoint format, and loaded through build_encoder (the real loading path). Only
# the audio side is measured: the text towers are tiny local stand-ins the loaders need to start.
ENCODERS = (
    "aisfx",
    "laion_clap",
    "laion_clap_fusion",
    "laion_clap_music",
    "hf_clap_unfused",
    "hf_clap_fused",
    "ms_clap_2022",
    "ms_clap_2023",
    "clapcap",
)
LAION = {  # name -> (amodel, enable_fusion, transformers port)
    "laion_clap": ("HTSAT-tiny", False, False),
    "laion_clap_fusion": ("HTSAT-tiny", True, False),
    "laion_clap_music": ("HTSAT-base", False, False),
    "hf_clap_unfused": ("HTSAT-tiny", False, True),
    "hf_clap_fused": ("HTSAT-tiny", True, True),
}


def random_laion_checkpoint(work: Path, amodel: str, fusion: bool) -> tuple[Path, Path]:
    """(original-format *.pt with random weights, local RoBERTa stand-in dir), made once per model."""
    from types import SimpleNamespace

    from oracles import laion as lo
    from rag_flamingo.encoders.laion_clap import LaionClapConfig, LaionClapModel, load_text_side

    text_dir = lo.make_hub_standins(work / "hub") / "roberta-base"
    path = work / f"laion_{amodel}{'_fusion' if fusion else ''}_random.pt"
    if not path.is_file():
        model = LaionClapModel(
            LaionClapConfig(amodel=amodel, enable_fusion=fusion, long_audio="fusion" if fusion else "mean"),
            load_text_side(str(text_dir))[1],
        )
        lo.save_original_checkpoint(SimpleNamespace(model=lo.randomize_clap_(model)), path)
    return path, text_dir


def random_encoder_options(name: str, work: Path) -> dict:
    """build_encoder options that load ``name`` at its real size with random weights (see ENCODERS)."""
    from oracles.laion import randomize_clap_

    if name == "aisfx":
        return {}
    if name in LAION:
        amodel, fusion, port = LAION[name]
        ckpt, text_dir = random_laion_checkpoint(work, amodel, fusion)
        if not port:
            return {"checkpoint": str(ckpt), "text_model": str(text_dir)}
        from transformers import AutoTokenizer

        from rag_flamingo.encoders.hf_clap import convert_original_to_transformers

        out = work / name
        convert_original_to_transformers(ckpt, str(text_dir), amodel, fusion).save_pretrained(str(out))
        AutoTokenizer.from_pretrained(str(text_dir)).save_pretrained(str(out))
        return {"model": str(out)}
    if name in ("ms_clap_2022", "ms_clap_2023"):
        from rag_flamingo.encoders.ms_clap import MSCLAP_2022, MSCLAP_2023, MSClapModel

        model: torch.nn.Module = MSClapModel(MSCLAP_2022 if name.endswith("2022") else MSCLAP_2023)
        options = {"with_text": False}
    elif name == "clapcap":
        from rag_flamingo.encoders.clapcap import ClapcapAudioModel

        model, options = ClapcapAudioModel(), {}
    else:
        raise ValueError(f"no random-weight builder for encoder {name!r}")
    path = work / f"{name}_random.pth"
    torch.save({"model": randomize_clap_(model).state_dict()}, path)
    return {"checkpoint": str(path), **options}


def check_encoder(name: str, device: str, size: dict, work: Path) -> dict:
    """fp16/autocast on the device vs fp32 on the CPU on the same clips; clips/s per batch size."""
    from rag_flamingo.encoders import build_encoder

    work.mkdir(parents=True, exist_ok=True)
    options = random_encoder_options(name, work)
    reference = build_encoder(name, device="cpu", **options)
    fast = build_encoder(name, device=device, **options)
    waves = clips(max(size["batches"]), size["seconds"], reference.sample_rate)
    n_check = min(size["check_clips"], len(waves))
    a = np.asarray(reference.embed(waves[:n_check]), dtype=np.float64)
    del reference
    b = np.asarray(fast.embed(waves[:n_check]), dtype=np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    rates = {}
    for batch in size["batches"]:
        if hasattr(fast, "batch_size"):  # one forward per measured batch (the encoders micro-batch)
            fast.batch_size = batch
        fast.embed(waves[:batch])  # warm-up (cudnn autotuning, allocator)
        synchronize(device)
        start = time.perf_counter()
        fast.embed(waves[:batch])
        synchronize(device)
        rates[str(batch)] = round(batch / (time.perf_counter() - start), 1)
    return {
        "weights": "released (aisfx wheel)" if name == "aisfx" else "random, real size, released format",
        "precision": str(getattr(fast, "dtype", "")).replace("torch.", ""),
        "dim": int(b.shape[1]),
        "cosine_min": round(float(cos.min()), 6),
        "cosine_ok": bool(cos.min() >= 0.999),
        "clips_per_s": rates,
        "clip_seconds": size["seconds"],
    }


def check_encoders(names: list[str], device: str, size: dict, work: Path) -> dict:
    """Each encoder named (of ENCODERS); one failing is reported in its row, the others still run."""
    out: dict = {}
    for name in names:
        start = time.perf_counter()
        try:
            out[name] = check_encoder(name, device, size, work)
        except Exception as exc:
            traceback.print_exc()
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        out[name]["s"] = round(time.perf_counter() - start, 1)
        print(f"gpu_check: encoder {name} done in {out[name]['s']} s", flush=True)
        release(device)
    failed = [name for name, row in out.items() if "error" in row or not row["cosine_ok"]]
    if failed:
        out["error"] = f"failed or below cosine 0.999: {', '.join(failed)}"
    return out


def release(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


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

    from rag_flamingo.config import IndexConfig
    from rag_flamingo.indexing.faiss_index import build_index, exact_neighbours

    n, dim = size["vectors"], 512
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((max(10, n // 100), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out: dict = {"vectors": n, "dim": dim, "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads()}
    for kind in ("ivf_flat", "ivf_pq"):
        start = time.perf_counter()
        _, report = build_index(x, IndexConfig(type=kind, pq_m=size["pq_m"], recall_queries=size["queries"]))
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
    # (best of 3 each; a difference lost in timing noise is reported as absent, never as a wrong number)
    one = min(_timed_generate(model, ids, feats, mask, 1, device) for _ in range(3))
    many = min(_timed_generate(model, ids, feats, mask, size["new_tokens"] + 1, device) for _ in range(3))
    per_token = (many - one) / size["new_tokens"] if many > one else None
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
        "decode_ms_per_token": round(1000 * per_token, 3) if per_token is not None else None,
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


def check_e2e(device: str, size: dict, work: Path, dry: bool) -> dict:
    """One 7-shot RagFlamingo query end to end, as bench_engine times it: query decode + aisfx
    embedding + FAISS search, then prompt, clapcap windows of the query only (the shots' come from the
    store's feature cache written by build_index), greedy generation on AF1 (foundation size, random
    weights, bf16 on the GPU; af1_tiny tokenizer: the OPT tokenizer cannot be fetched there)."""
    import dataclasses
    import statistics

    from bench_engine import TOKENIZER, engine_timed, make_data
    from bench_model import build_model

    from index_builder.cli import main as build_index_main
    from rag_flamingo.encoders import build_encoder
    from rag_flamingo.engine import RagFlamingo
    from rag_flamingo.model import GenerationSettings, af1_token_ids, load_af1_tokenizer
    from rag_flamingo.store.index_store import IndexStore

    work.mkdir(parents=True, exist_ok=True)
    e2e = size["e2e"]
    manifest, queries = make_data(work, e2e["store"], e2e["queries"] + 1, e2e["seconds"])
    clapcap = random_encoder_options("clapcap", work)["checkpoint"]
    start = time.perf_counter()
    code = build_index_main(
        [
            f"dataset.manifest={manifest}",
            f"dataset.root={work}",
            "dataset.name=gpu_check",
            f"store={work / 'store'}",
            "features=clapcap",
            f"+features_encoder.checkpoint={clapcap}",
            f"+features_encoder.batch_size={e2e['feature_batch']}",  # clapcap pads its micro-batches
            f"device={device}",
            f"batch_size={e2e['store']}",
            "num_workers=4" if device.startswith("cuda") else "num_workers=0",
            "progress=false",
            f"cache_root={work / 'cache'}",
        ]
    )
    if code != 0:
        raise RuntimeError(f"build_index exited {code}")
    store_s = time.perf_counter() - start
    tokenizer = load_af1_tokenizer(str(TOKENIZER))
    cfg = dataclasses.replace(model_config(dry), audio_embed_dim=1024, **af1_token_ids(tokenizer))  # clapcap: 1024-d
    with torch.device(device):  # random init on the device: the CPU would take minutes at this size
        model = build_model(cfg)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model.to(dtype)
    gen = GenerationSettings(max_new_tokens=size["new_tokens"], num_beams=1)
    store = IndexStore.open(work / "store")
    engine = RagFlamingo(
        store,
        model,
        tokenizer,
        build_encoder("clapcap", checkpoint=clapcap, device=device, batch_size=e2e["window_batch"]),
        build_encoder("aisfx", device=device),
        generation=gen,
    )
    engine.model.config.eos_token_id = -10  # never stop early: every query generates max_new_tokens
    task, options = "classification", store.label_set()
    engine_timed(engine, work, queries[0], e2e["shots"], task, options)  # warm-up
    times = [engine_timed(engine, work, row, e2e["shots"], task, options)[1] for row in queries[1:]]
    return {
        "setup": f"{e2e['shots']} shots, store of {e2e['store']} clips of {e2e['seconds']} s "
        f"(features=clapcap cached), {size['new_tokens']} new tokens greedy, batch 1",
        "model": f"AF1 {'test-size' if dry else 'foundation'} size, random weights, {str(dtype).replace('torch.', '')}",
        "params": sum(p.numel() for p in model.parameters()),
        "store_build_s": round(store_s, 1),
        "queries": len(times),
        **{f"median_{k.replace('+', '_')}_s": round(statistics.median(t[k] for t in times), 3) for k in times[0]},
    }


# ----------------------------------------------------------------------------- report


def encoder_table(rows: dict) -> list[str]:
    batches = sorted({b for r in rows.values() for b in r.get("clips_per_s", {})}, key=int)
    lines = [
        "| encoder | weights | precision | min cosine vs CPU fp32 | >= 0.999 | "
        + " | ".join(f"clips/s at batch {b}" for b in batches)
        + " | s |",
        "| --- | --- | --- | ---: | --- | " + " | ".join("---:" for _ in batches) + " | ---: |",
    ]
    for name, r in rows.items():
        if "error" in r:
            lines.append(
                f"| {name} | FAILED: {r['error']} | | | | " + " | ".join("" for _ in batches) + f" | {r['s']} |"
            )
            continue
        rates = " | ".join(str(r["clips_per_s"].get(b, "")) for b in batches)
        ok = "yes" if r["cosine_ok"] else "**no**"
        lines.append(f"| {name} | {r['weights']} | {r['precision']} | {r['cosine_min']} | {ok} | {rates} | {r['s']} |")
    return lines


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
            lines += [f"FAILED: {section['error']}", ""]
        rows = {k: v for k, v in section.items() if isinstance(v, dict) and k in ENCODERS}
        if rows:
            lines += encoder_table(rows) + [""]
        lines += [f"- {key}: {value}" for key, value in section.items() if key not in rows and key != "error"]
        lines.append("")
    lines.append("## not covered by this check")
    lines += [f"- {item}" for item in report["not_covered"]]
    return "\n".join(lines) + "\n"


SECTIONS = ("encoders", "build_index", "faiss", "model", "e2e")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, the same code paths")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument("--encoders", default=",".join(ENCODERS), help="comma-separated encoders (default: all)")
    args = ap.parse_args(argv)
    encoders = [n for n in args.encoders.split(",") if n]
    unknown = sorted(set(encoders) - set(ENCODERS)) + sorted(set(args.only.split(",")) - set(SECTIONS))
    if unknown:
        print(f"gpu_check: unknown encoder or section: {', '.join(unknown)}", file=sys.stderr)
        return 2
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
            "encoders": lambda: check_encoders(encoders, device, size, work / "encoders"),
            "build_index": lambda: check_build_index(device, size, work / "build"),
            "faiss": lambda: check_faiss(device, size),
            "model": lambda: check_model(device, size, work, args.dry_run),
            "e2e": lambda: check_e2e(device, size, work / "e2e", args.dry_run),
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
            release(device)
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
