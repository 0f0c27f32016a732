"""Per-query latency of `RagFlamingo` vs a reference-style pipeline (CPU, 7 shots).

Both pipelines answer the same queries with the same retrieved shots, the same prompt and the same
model (greedy), and must produce the same text:

- ``engine``: `RagFlamingo.answer_batch` - retrieval embedding of the query, FAISS search, prompt,
  window features of the *query only* (shot windows come from the store's ``features/clapcap``
  cache written by ``build_index ... features=clapcap``), KV-cached generation.
- ``reference-style``: what the AF1 reference code does per query - decode every shot's audio file
  and the query's, run the clapcap encoder over all of them, then generate without a KV cache
  (``use_cache=False``, the reference's way to get correct multi-audio masks: its cached
  generation attends only the first audio).
  Retrieval (embedding + search) is the same as the engine's and is included in both.

Parts (all real code, random weights where no weights can be downloaded here):
- retrieval encoder: aisfx (pretrained, ships in its wheel);
- window encoder: the real clapcap architecture (MS-CLAP 2023 HTSAT audio branch) with random
  weights saved in the released checkpoint format and loaded strictly;
- model: Audio Flamingo v1 architecture at a mid size (``--hidden``/``--layers``; audio side at the
  released sizes: 1024-d windows, 16 windows per audio, 3-layer audio transformer), random weights,
  with the af1_tiny tokenizer (the OPT tokenizer cannot be downloaded here).

    python scripts/bench_engine.py                 # defaults: 4 queries, 7 shots, 10 s clips
    python scripts/bench_engine.py --queries 8 --max-new-tokens 32 --hidden 1024 --layers 8
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag_flamingo.audio import load_audio, load_for_encoders, wave_for  # noqa: E402
from rag_flamingo.engine import RagFlamingo  # noqa: E402
from rag_flamingo.model import (  # noqa: E402
    AudioFlamingo,
    AudioFlamingoConfig,
    GenerationSettings,
    encode_prompt_audios,
    generate,
    load_af1_tokenizer,
    postprocess_output,
    tokenize_prompts,
)
from rag_flamingo.store.index_store import IndexStore  # noqa: E402

TOKENIZER = ROOT / "tests" / "fixtures" / "af1_tiny" / "tokenizer"
CLASSES = ("tone", "chirp", "noise", "clicks")


def synth(kind: str, seconds: float, seed: int, sr: int = 44100) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    if kind == "tone":
        x = np.sin(2 * np.pi * rng.uniform(300, 900) * t)
    elif kind == "chirp":
        x = np.sin(2 * np.pi * rng.uniform(200, 400) * t * (1 + t / seconds))
    elif kind == "noise":
        x = rng.standard_normal(t.size)
    else:
        x = np.zeros_like(t)
        x[:: int(sr / rng.uniform(5, 15))] = 1.0
    return (0.5 * x / np.max(np.abs(x)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def make_data(root: Path, n_store: int, n_query: int, seconds: float) -> tuple[Path, list[dict]]:
    rows, queries = [], []
    for i in range(n_store + n_query):
        kind = CLASSES[i % len(CLASSES)]
        path = root / "audio" / f"{kind}_{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, synth(kind, seconds, i), 44100)
        row = {
            "id": f"{kind}_{i:03d}",
            "path": str(path.relative_to(root)),
            "label": kind,
            "captions": [f"a {kind} sound"],
        }
        (rows if i < n_store else queries).append(row)
    manifest = root / "store.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest, queries


def random_clapcap_checkpoint(path: Path) -> Path:
    from rag_flamingo.encoders.clapcap import ClapcapAudioModel

    torch.manual_seed(0)
    torch.save({"model": ClapcapAudioModel().state_dict()}, path)
    return path


def mid_model(hidden: int, layers: int, tokenizer) -> AudioFlamingo:
    from rag_flamingo.model import af1_token_ids

    ids = af1_token_ids(tokenizer)
    cfg = AudioFlamingoConfig()
    cfg.opt.update(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        ffn_dim=4 * hidden,
        word_embed_proj_dim=hidden,
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
    )
    cfg.media_token_id, cfg.eoc_token_id, cfg.sep_token_id = (
        ids["media_token_id"],
        ids["eoc_token_id"],
        ids["sep_token_id"],
    )
    torch.manual_seed(0)
    model = AudioFlamingo(cfg).eval()
    with torch.no_grad():  # open the gates so the audio matters (they start at 0 in AF1)
        for name, p in model.named_parameters():
            if name.endswith("_gate"):
                p.fill_(0.5)
    return model


def retrieve(engine: RagFlamingo, audio_root: Path, row: dict, k: int):
    """The query decoded for every encoder and its shots (what the runner does per query)."""
    waves = load_for_encoders(audio_root / row["path"], [engine.retrieval_encoder, *engine.audio_encoders], row)
    emb = engine.retrieval_encoder.embed([wave_for(waves, engine.retrieval_encoder)])
    return waves, engine.retriever.search(emb, k, query_ids=[row["id"]])


def reference_style(
    engine: RagFlamingo,
    store: IndexStore,
    audio_root: Path,
    row: dict,
    k: int,
    task: str,
    options,
    gen: GenerationSettings,
) -> tuple[str, dict]:
    """AF1-reference-style: decode + clapcap-encode every shot and the query, generate uncached."""
    t0 = time.perf_counter()
    waves, shots = retrieve(engine, audio_root, row, k)
    prompt = engine.prompts(task, [{"id": row["id"]}], shots, options)[0]
    t1 = time.perf_counter()
    sr = engine.window_encoder.sample_rate
    audios = [
        [load_audio(audio_root / s.item["path"], sr) for s in prompt.shots] + [wave_for(waves, engine.window_encoder)]
    ]
    feats, mask = encode_prompt_audios(engine.window_encoder, audios, engine.audio_slots)
    t2 = time.perf_counter()
    ids, attn = tokenize_prompts(engine.tokenizer, [prompt.text])
    out = generate(engine.model, ids, attn, feats, mask, gen, use_cache=False, eos_token_id=[])
    text = postprocess_output(engine.tokenizer.decode(out.new_tokens[0])).strip()
    t3 = time.perf_counter()
    return text, {"retrieval+prompt": t1 - t0, "audio": t2 - t1, "generate": t3 - t2, "total": t3 - t0}


def engine_timed(engine: RagFlamingo, audio_root: Path, row: dict, k: int, task: str, options) -> tuple[str, dict]:
    t0 = time.perf_counter()
    waves, shots = retrieve(engine, audio_root, row, k)
    t1 = time.perf_counter()
    answer = engine.generate(task, [{"id": row["id"]}], shots, [waves], options)[0]
    t2 = time.perf_counter()
    return answer.output, {"retrieval": t1 - t0, "prompt+audio+generate": t2 - t1, "total": t2 - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--shots", type=int, default=7)
    ap.add_argument("--store-size", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of every clip (10 s: 3 windows)")
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--window-batch", type=int, default=2, help="clapcap micro-batch (windows per forward)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from index_builder.cli import main as build_index
    from rag_flamingo.encoders import build_encoder

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_engine_"))
    work.mkdir(parents=True, exist_ok=True)
    manifest, queries = make_data(work, args.store_size, args.queries, args.seconds)
    ckpt = random_clapcap_checkpoint(work / "clapcap_random.pth")
    store_dir = work / "store"
    t = time.perf_counter()
    build_index(
        [
            f"dataset.manifest={manifest}",
            f"dataset.root={work}",
            "dataset.name=bench",
            f"store={store_dir}",
            "features=clapcap",
            f"+features_encoder.checkpoint={ckpt}",
            "progress=false",
            "num_workers=0",
            f"cache_root={work / 'cache'}",
        ]
    )
    build_s = time.perf_counter() - t
    store = IndexStore.open(store_dir)
    tokenizer = load_af1_tokenizer(str(TOKENIZER))
    model = mid_model(args.hidden, args.layers, tokenizer)
    gen = GenerationSettings(max_new_tokens=args.max_new_tokens, num_beams=1)
    # clapcap runs fixed-size micro-batches (padded): a small batch suits query-only encoding on CPU;
    # the same encoder instance serves both pipelines
    clapcap = build_encoder("clapcap", checkpoint=str(ckpt), device="cpu", batch_size=args.window_batch)
    engine = RagFlamingo(store, model, tokenizer, clapcap, build_encoder("aisfx", device="cpu"), generation=gen)
    task, options = "classification", store.label_set()
    # never stop at </s> so both pipelines generate exactly max_new_tokens tokens
    engine.model.config.eos_token_id = -10

    warm = queries[0]
    engine_timed(engine, work, warm, args.shots, task, options)  # warm-up (allocations, lazy inits)
    ours, ref = [], []
    for row in queries:
        c0 = time.process_time()
        a, t_ours = engine_timed(engine, work, row, args.shots, task, options)
        c1 = time.process_time()
        b, t_ref = reference_style(engine, store, work, row, args.shots, task, options, gen)
        c2 = time.process_time()
        t_ours["cpu_total"], t_ref["cpu_total"] = c1 - c0, c2 - c1
        if a != b:
            raise SystemExit(f"outputs differ for {row['id']}: engine {a!r} vs reference-style {b!r}")
        ours.append(t_ours)
        ref.append(t_ref)

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}",
        "setup": f"{args.queries} queries, {args.shots} shots, {args.seconds:.0f} s clips, "
        f"store {args.store_size} items, "
        f"model hidden {args.hidden} x {args.layers} layers ({n_params:.0f}M params), "
        f"{args.max_new_tokens} new tokens greedy, clapcap micro-batch {args.window_batch}",
        "store_build_s": round(build_s, 1),
        "engine_median_s": {k: round(med(ours, k), 3) for k in ours[0]},
        "reference_style_median_s": {k: round(med(ref, k), 3) for k in ref[0]},
        "speedup_median_wall": round(med(ref, "total") / med(ours, "total"), 2),
        "speedup_median_cpu": round(med(ref, "cpu_total") / med(ours, "cpu_total"), 2),
        "identical_outputs": True,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
