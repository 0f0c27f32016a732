#!/usr/bin/env python
"""Throughput of every registered encoder (clips/s, files on disk -> embeddings), next to the original
package's file-list API on the same weights and files where an oracle exists.

    python scripts/bench_encoders.py [--clips 24] [--seconds 5] [--batch-size 8] [--encoders a,b] [--roofline]

``--paths [--audio DIR] [--encoders aisfx,laion_clap,...]``: each encoder (default aisfx) end to end on
each runtime/precision path (``encoders.runtime``) side by side in one run, with parity and top-10
neighbour equality against the first path (aisfx: torch fp32 + librosa; the CLAP encoders: torch fp32).

``--roofline``: each encoder's FLOPs per clip (torch.utils.flop_counter) and its clips/s as a share of
this CPU's measured dense matmul rate (fp32, and bf16: native or emulated as the CPU has it).

Released weights cannot be downloaded here, so encoders whose checkpoint is not available offline
get a *bench builder* below: the original model built at its real architecture with random weights,
saved in the released format and loaded by our encoder (same compute as the real weights). Encoders
without a builder are built with ``build_encoder(name)`` (works when the checkpoint is local, e.g.
aisfx); otherwise the row says why it was skipped. To add an encoder: write a function
``(workdir, args) -> BenchCase`` and decorate it with ``@bench_builder("<registered name>")``.

Both sides decode the same files (ours: ``rag_flamingo.audio.load_audio``; the originals: their own
loaders — msclap's ``torchaudio.load`` is served by the test shim in oracles/msclap.py, i.e. soundfile)
and run in batches of ``--batch-size``. Wall and process CPU time are reported (the CPU is shared).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package and the parity oracles (oracles/)

from rag_flamingo.audio import load_audio  # noqa: E402
from rag_flamingo.encoders import available_encoders, build_encoder  # noqa: E402

log = logging.getLogger("bench_encoders")


@dataclass
class BenchCase:
    encoder: Any  # ours: .embed(list[np.ndarray]), .sample_rate
    baseline: Callable[[list[Path], int], None] | None = None  # (files, batch_size) -> None
    baseline_name: str = ""
    note: str = ""
    options: dict = field(default_factory=dict)  # build_encoder options that load these weights again


BENCH_BUILDERS: dict[str, Callable[[Path, argparse.Namespace], BenchCase]] = {}


def bench_builder(name: str):
    def wrap(fn):
        BENCH_BUILDERS[name] = fn
        return fn

    return wrap


# ----------------------------------------------------------------------------- MS-CLAP builders


def _msclap_case(workdir: Path, args, version: str) -> BenchCase:
    from oracles.msclap import build_msclap_clap, import_msclap, make_text_tower_dir, msclap_wrapper, randomize_
    from rag_flamingo.encoders.ms_clap import MSCLAP_2022, MSCLAP_2023, MSClapEncoder

    import_msclap()
    text_dir = make_text_tower_dir(workdir, "gpt2" if version == "2023" else "bert")
    oracle = randomize_(build_msclap_clap(version, text_dir))
    ckpt = workdir / f"CLAP_weights_{version}.pth"
    torch.save({"model": oracle.state_dict()}, ckpt)
    ours = MSClapEncoder(
        MSCLAP_2023 if version == "2023" else MSCLAP_2022,
        checkpoint=str(ckpt),
        with_text=False,
        batch_size=args.batch_size,
        device="cpu",
    )
    wrapper = msclap_wrapper(oracle, version, text_dir)

    def baseline(files: list[Path], batch_size: int) -> None:
        with torch.no_grad():
            for _ in wrapper.get_audio_embeddings_per_batch([str(f) for f in files], batch_size):
                pass

    return BenchCase(
        ours,
        baseline,
        "msclap 1.3.4 CLAP.get_audio_embeddings_per_batch",
        "random weights, real architecture; text tower not built",
        {"checkpoint": str(ckpt), "with_text": False, "batch_size": args.batch_size},
    )


@bench_builder("ms_clap_2023")
def _ms_clap_2023(workdir: Path, args) -> BenchCase:
    return _msclap_case(workdir, args, "2023")


@bench_builder("ms_clap_2022")
def _ms_clap_2022(workdir: Path, args) -> BenchCase:
    return _msclap_case(workdir, args, "2022")


@bench_builder("clapcap")
def _clapcap(workdir: Path, args) -> BenchCase:
    """Baseline: AF1's pipeline (reference data.py windowing re-implemented in the tests, from the spec)
    through the original clapcap audio encoder on all 16 windows per clip, as AF1 runs it."""
    from oracles.msclap import (
        build_msclap_clap,
        import_msclap,
        make_text_tower_dir,
        randomize_,
        reference_af1_clips,
    )
    from rag_flamingo.encoders.clapcap import ClapcapEncoder

    msclap = import_msclap()
    text_dir = make_text_tower_dir(workdir, "gpt2")
    oracle = msclap.models.mapper.ClapCaptionModel(
        build_msclap_clap("clapcap", text_dir), str(text_dir), 40, 40, 1024, 8, True, "transformer", True, True
    )
    randomize_(oracle).eval()
    ckpt = workdir / "clapcap_weights_2023.pth"
    torch.save({"model": oracle.state_dict()}, ckpt)
    ours = ClapcapEncoder(checkpoint=str(ckpt), batch_size=args.batch_size, device="cpu")

    def baseline(files: list[Path], batch_size: int) -> None:
        clips = np.concatenate([reference_af1_clips(load_audio(f, 44100))[0] for f in files])
        with torch.no_grad():
            for i in range(0, len(clips), batch_size):
                oracle.clap(torch.from_numpy(clips[i : i + batch_size]))

    return BenchCase(
        ours,
        baseline,
        "AF1 reference pipeline (16 windows/clip) on msclap's clapcap encoder",
        "ours: only real windows + one cached zero-window output",
        {"checkpoint": str(ckpt), "batch_size": args.batch_size},
    )


# ----------------------------------------------------------------------------- LAION-CLAP builders


def _laion_case(workdir: Path, args, amodel: str, enable_fusion: bool, hf: bool = False) -> BenchCase:
    """Stock laion_clap.CLAP_Module at its real architecture (random weights; RoBERTa of 1 layer),
    saved as a released .pt and loaded by ours; baseline = its get_audio_embedding_from_filelist."""
    from oracles import laion as lo
    from rag_flamingo.encoders.hf_clap import convert_original_to_transformers, load_hf_clap
    from rag_flamingo.encoders.laion_clap import load_laion_clap

    standins = lo.make_hub_standins(workdir / "hub")
    module = lo.build_clap_module(standins, amodel=amodel, enable_fusion=enable_fusion)
    ckpt = lo.save_original_checkpoint(module, workdir / "laion_clap_random.pt")
    text_dir = str(standins / "roberta-base")
    if hf:
        from transformers import RobertaTokenizer

        out = workdir / "hf"
        convert_original_to_transformers(ckpt, text_dir, amodel, enable_fusion).save_pretrained(str(out))
        RobertaTokenizer.from_pretrained(text_dir).save_pretrained(str(out))
        ours = load_hf_clap("hf_clap_fused" if enable_fusion else "hf_clap_unfused", model=str(out), device="cpu")
    else:
        ours = load_laion_clap(
            checkpoint=str(ckpt), text_model=text_dir, amodel=amodel, enable_fusion=enable_fusion, device="cpu"
        )

    def baseline(files: list[Path], batch_size: int) -> None:
        with torch.no_grad():
            for i in range(0, len(files), batch_size):
                module.get_audio_embedding_from_filelist([str(f) for f in files[i : i + batch_size]])

    note = "random weights, real architecture; same files, batches of --batch-size"
    options = {"checkpoint": str(ckpt), "text_model": text_dir, "batch_size": args.batch_size}
    return BenchCase(ours, baseline, "laion_clap 1.1.7 CLAP_Module.get_audio_embedding_from_filelist", note, options)


@bench_builder("laion_clap")
def _laion_clap(workdir: Path, args) -> BenchCase:
    return _laion_case(workdir, args, "HTSAT-tiny", False)


@bench_builder("laion_clap_fusion")
def _laion_clap_fusion(workdir: Path, args) -> BenchCase:
    return _laion_case(workdir, args, "HTSAT-tiny", True)


@bench_builder("laion_clap_music")
def _laion_clap_music(workdir: Path, args) -> BenchCase:
    return _laion_case(workdir, args, "HTSAT-base", False)


@bench_builder("hf_clap_unfused")
def _hf_clap_unfused(workdir: Path, args) -> BenchCase:
    return _laion_case(workdir, args, "HTSAT-tiny", False, hf=True)


@bench_builder("hf_clap_fused")
def _hf_clap_fused(workdir: Path, args) -> BenchCase:
    return _laion_case(workdir, args, "HTSAT-tiny", True, hf=True)


# ----------------------------------------------------------------------------- measurement


def make_files(workdir: Path, n: int, seconds: float, sr: int = 44100) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        t = np.arange(int(seconds * sr)) / sr
        wave = 0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t) + 0.05 * rng.standard_normal(t.shape)
        path = workdir / f"clip{i:03d}.wav"
        sf.write(str(path), wave.astype(np.float32), sr)
        files.append(path)
    return files


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def run_ours(case: BenchCase, files: list[Path], batch_size: int) -> None:
    enc = case.encoder
    max_seconds = getattr(enc, "max_seconds", None)
    for i in range(0, len(files), batch_size):
        enc.embed([load_audio(f, enc.sample_rate, max_seconds=max_seconds) for f in files[i : i + batch_size]])


def matmul_rate(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """This CPU's dense matmul rate (GFLOP/s) at the current torch thread count: the best of
    ``repeats`` n x n products, the ceiling every encoder's convolutions and matmuls run against."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up (oneDNN/BLAS kernel selection)
    best = min(timed(lambda: torch.mm(a, b))[0] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def clip_flops(encoder, seconds: float) -> float:
    """FLOPs of one ``seconds``-long clip through ``encoder.embed`` (matmuls, convolutions and attention
    as torch.utils.flop_counter counts them; the frontend's FFT and elementwise work are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    wave = np.random.default_rng(0).standard_normal(int(seconds * encoder.sample_rate)).astype(np.float32) * 0.1
    if getattr(encoder, "runtime", "torch") != "torch":  # another runtime's work is invisible to torch
        encoder = type(encoder)(device="cpu", runtime="torch", precision="fp32", max_seconds=encoder.max_seconds)
    with FlopCounterMode(display=False) as counter:
        encoder.embed([wave])
    return float(counter.get_total_flops())


def bench_one(name: str, workdir: Path, files: list[Path], args) -> dict:
    try:
        if name in BENCH_BUILDERS:
            (workdir / name).mkdir(exist_ok=True)
            case = BENCH_BUILDERS[name](workdir / name, args)
        else:
            case = BenchCase(build_encoder(name, device="cpu"), note="released weights (local)")
    except Exception as exc:  # a missing checkpoint or oracle: report, keep going
        return {"encoder": name, "skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
    row = {"encoder": name, "note": case.note, "baseline_name": case.baseline_name}
    run_ours(case, files[: args.batch_size], args.batch_size)  # warm-up
    if case.baseline is not None:
        case.baseline(files[: args.batch_size], args.batch_size)
    ours, base = [], []
    for _ in range(args.repeats):  # interleaved, so both sides see the same load on a shared CPU
        ours.append(timed(lambda: run_ours(case, files, args.batch_size)))
        if case.baseline is not None:
            base.append(timed(lambda: case.baseline(files, args.batch_size)))
    wall, cpu = min(ours)
    row.update(ours_cps=len(files) / wall, ours_cpu=cpu / len(files))
    if args.roofline:
        row["gflop"] = clip_flops(case.encoder, args.seconds) / 1e9
    if base:
        bwall, bcpu = min(base)
        row.update(base_cps=len(files) / bwall, base_cpu=bcpu / len(files))
    return row


def markdown(rows: list[dict], args) -> str:
    out = [
        f"{args.clips} wav files of {args.seconds} s at 44.1 kHz mono, batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}, best of {args.repeats}.",
        "",
        "| encoder | ours clips/s (wall) | ours CPU s/clip | original clips/s (wall) | original CPU s/clip "
        "| speed-up (CPU) | original | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    if args.roofline:
        return roofline_markdown(rows, args)
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['encoder']} | skipped | | | | | | {r['skipped']} |")
            continue
        base = ("", "", "")
        if "base_cps" in r:
            base = (f"{r['base_cps']:.2f}", f"{r['base_cpu']:.3f}", f"{r['base_cpu'] / r['ours_cpu']:.2f}x")
        out.append(
            f"| {r['encoder']} | {r['ours_cps']:.2f} | {r['ours_cpu']:.3f} | {base[0]} | {base[1]} | "
            f"{base[2]} | {r.get('baseline_name', '')} | {r.get('note', '')} |"
        )
    return "\n".join(out)


# ----------------------------------------------------------------------------- runtime/precision paths side by side

AISFX_PATHS = {  # label -> (runtime, precision, frontend)
    "torch fp32, librosa frontend (before)": ("torch", "fp32", "librosa"),
    "torch fp32": ("torch", "fp32", "torch"),
    "openvino fp32": ("openvino", "fp32", "torch"),
    "openvino fp32, librosa frontend": ("openvino", "fp32", "librosa"),
    "torch bf16": ("torch", "bf16", "torch"),
}
NETWORK_PATHS = {  # the CLAP encoders: their frontends run in torch on every path
    "torch fp32 (before)": ("torch", "fp32", "torch"),
    "openvino fp32": ("openvino", "fp32", "torch"),
    "torch bf16": ("torch", "bf16", "torch"),
}


def path_encoders(name: str, workdir: Path, args) -> dict[str, Any]:
    """``name`` built once per path of its table (label -> encoder), on the weights its bench builder
    writes (random, real architecture) or, without one, its released weights."""
    options: dict = {}
    if name in BENCH_BUILDERS:
        (workdir / name).mkdir(exist_ok=True)
        options = BENCH_BUILDERS[name](workdir / name, args).options
    encoders = {}
    for label, (runtime, precision, frontend) in (AISFX_PATHS if name == "aisfx" else NETWORK_PATHS).items():
        if precision not in args.precisions.split(","):
            continue
        try:
            encoders[label] = build_encoder(name, **options, device="cpu", runtime=runtime, precision=precision)
        except Exception as exc:  # openvino not installed: say so, keep going
            print(f"# {name} {label}: skipped ({exc})", file=sys.stderr)
            continue
        if frontend == "librosa":
            encoders[label].frontend.log_mel = encoders[label].frontend.librosa_log_mel
    return encoders


def bench_paths(name: str, workdir: Path, files: list[Path], args) -> str:
    """``name`` end to end (decode + frontend + forward) on each runtime/precision path, interleaved in
    one run; parity against the first path (cos, max abs) and its top-10 neighbours over the files."""
    import faiss

    encoders = path_encoders(name, workdir, args)
    first = next(iter(encoders.values()))
    max_seconds = getattr(first, "max_seconds", None)
    waves = [load_audio(f, first.sample_rate, max_seconds=max_seconds) for f in files]
    embeddings = {label: enc.embed(waves) for label, enc in encoders.items()}  # also the warm-up
    times: dict[str, list[float]] = {label: [] for label in encoders}
    for _ in range(args.repeats):
        for label, enc in encoders.items():
            times[label].append(timed(lambda enc=enc: run_ours(BenchCase(enc), files, args.batch_size))[0])
    ref_label = next(iter(encoders))
    ref = embeddings[ref_label]
    index = faiss.IndexFlatIP(ref.shape[1])
    index.add(ref)
    _, want = index.search(ref, 10)
    base = len(files) / min(times[ref_label])
    weights = "random weights at the real size" if name in BENCH_BUILDERS else "released weights"
    out = [
        f"{name} ({weights}), {len(files)} files ({args.audio or 'generated'}; up to {max_seconds} s), batch "
        f"{args.batch_size}, torch threads {torch.get_num_threads()}, best of {args.repeats} interleaved; "
        f"CPU {cpu_name()}. Between different files the first path's embeddings reach cos "
        f"{float(np.max(ref @ ref.T - 2 * np.eye(len(ref)))):.6f} at most (the parity figures mean something "
        "only when this is well below 1).",
        "",
        "| path | clips/s (wall) | vs before | min cos vs before | max abs vs before | same top-10 as before |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, emb in embeddings.items():
        cps = len(files) / min(times[label])
        _, got = index.search(emb, 10)
        same = np.mean([set(g) == set(w) for g, w in zip(got, want)])
        cos = float((emb * ref).sum(1).min())
        out.append(
            f"| {label} | {cps:.2f} | {cps / base:.2f}x | {cos:.6f} | {np.abs(emb - ref).max():.1e} | {same:.1%} |"
        )
    return "\n".join(out)


def roofline_markdown(rows: list[dict], args) -> str:
    """Each encoder's clips/s against this CPU's measured matmul rate: the share of the hardware's
    dense-compute limit its end-to-end embedding (decode + frontend + forward) reaches."""
    fp32, bf16 = args.peaks["fp32"], args.peaks["bf16"]
    out = [
        f"{args.clips} wav files of {args.seconds} s at 44.1 kHz mono, batch {args.batch_size}, torch threads "
        f"{torch.get_num_threads()}, best of {args.repeats}; CPU {args.cpu}. Dense matmul (2048^2): fp32 "
        f"{fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s ({'native' if args.native_bf16 else 'emulated'}).",
        "",
        "| encoder | GFLOP/clip | clips/s (wall) | GFLOP/s reached | share of fp32 matmul rate | fp32 limit clips/s "
        "| bf16 limit clips/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['encoder']} | skipped: {r['skipped']} | | | | | |")
            continue
        reached = r["gflop"] * r["ours_cps"]
        out.append(
            f"| {r['encoder']} | {r['gflop']:.2f} | {r['ours_cps']:.2f} | {reached:.1f} | {reached / fp32:.0%} | "
            f"{fp32 / r['gflop']:.2f} | {bf16 / r['gflop']:.2f} |"
        )
    return "\n".join(out)


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--encoders", default="", help="comma-separated names (default: all registered)")
    p.add_argument("--roofline", action="store_true", help="FLOPs per clip and the share of the matmul rate")
    p.add_argument("--paths", action="store_true", help="runtime/precision paths side by side (default: aisfx)")
    p.add_argument("--audio", default="", help="--paths: a folder of real recordings (default: generated files)")
    p.add_argument("--precisions", default="fp32,bf16", help="--paths: the precisions to run (bf16 emulated: slow)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.roofline:
        from rag_flamingo.devices import cpu_native_bf16

        args.cpu, args.native_bf16 = cpu_name(), cpu_native_bf16()
        # emulated bf16 runs at ~1 GFLOP/s: a smaller product measures it in seconds, not minutes
        args.peaks = {
            "fp32": matmul_rate(torch.float32),
            "bf16": matmul_rate(torch.bfloat16, 2048 if args.native_bf16 else 512),
        }
    if args.paths:
        with tempfile.TemporaryDirectory(prefix="bench_encoders_") as tmp:
            found = (
                sorted(p for p in Path(args.audio).rglob("*") if p.suffix in (".wav", ".flac")) if args.audio else []
            )
            files = found[:: max(1, len(found) // args.clips)][: args.clips] or make_files(
                Path(tmp), args.clips, args.seconds
            )
            for name in [n for n in args.encoders.split(",") if n] or ["aisfx"]:
                print(bench_paths(name, Path(tmp), files, args), "\n", flush=True)
        return
    names = [n for n in args.encoders.split(",") if n] or available_encoders()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_encoders_") as tmp:
        workdir = Path(tmp)
        files = make_files(workdir, args.clips, args.seconds)
        for name in names:
            print(f"# {name} ...", file=sys.stderr, flush=True)
            rows.append(bench_one(name, workdir, files, args))
            print(markdown(rows[-1:], args).splitlines()[-1], file=sys.stderr, flush=True)
    print(markdown(rows, args))


if __name__ == "__main__":
    main()
