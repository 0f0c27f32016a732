#!/usr/bin/env python
"""Real-recording clip embeddings for ``scripts/bench_scale.py --vectors``: aisfx over whole tracks,
enlarged to 100k-1M vectors by time crops whose embeddings are exact block means.

aisfx pools a clip as the L2-normalised mean of its 100-frame block embeddings (50 % hop). So each
track is embedded once, block by block (``AisfxEncoder.embed_blocks``, the whole track, no
``max_seconds`` crop), and the embedding of the crop spanning blocks i..i+len-1 is the normalised
mean of those rows: a clip of ~2.3 s (1 block) to ~(len+1) * 1.16 s. Two ways it differs from
embedding the cut audio: the crop keeps the track's peak normalisation (a cut clip is divided by
its own peak, which shifts the log-mel compression), and its edge frames see the neighbouring
audio where a cut clip's centred STFT sees zero padding.

Decisions (fixed, seeded):
- tracks: every audio file under the ``--audio`` folders (sorted by path in each, folders in the order
  given); ``--held-out`` of them (a seeded
  choice) give only queries, the rest only indexed vectors, so no query is in the index and a
  query's neighbours are other recordings' crops, as for a new clip;
- crops: every (track, first block, length) with length 1..L that fits the track; L is the smallest
  length whose crop count reaches the largest requested size (or ``--longest``); a seeded
  permutation of all crops, its first n rows for size n (so the 100k set is part of the 1M set);
- queries: ``--queries`` crops drawn the same way from the held-out tracks.

Writes ``real_<n>.npy`` per size, ``real_queries.npy`` (float32, unit rows) and ``real_vectors.json``
(tracks, blocks, L, embedding time) to ``--out``; the block embeddings are cached in
``blocks_<hash of the folder's path>.npz`` there, so a second run only re-cuts.

  python scripts/make_real_vectors.py --audio /data/wesnoth/music /data/warzone2100/music --out /tmp/real
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

BLOCK_HOP_SECONDS = 50 * 1024 / 44100  # aisfx block hop (50 frames of 1024 samples at 44.1 kHz)


def track_paths(root: Path) -> list[Path]:
    from rag_flamingo.audio import AUDIO_EXTENSIONS

    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def embed_tracks(root: Path, out: Path) -> tuple[list[str], list[np.ndarray], dict]:
    """Block embeddings of every track under ``root`` (cached under ``out``) and how long it took."""
    cache = out / f"blocks_{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]}.npz"
    if cache.exists():
        data = np.load(cache)
        offsets = data["offsets"]
        names = [str(n) for n in data["names"]]
        blocks = [data["blocks"][a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        return names, blocks, json.loads(str(data["timing"]))
    from rag_flamingo.audio import load_audio
    from rag_flamingo.encoders.aisfx import AisfxEncoder

    encoder = AisfxEncoder(max_seconds=None, device="cpu")
    names, blocks = [], []
    decode_s = embed_s = seconds = 0.0
    for path in track_paths(root):
        t0 = time.perf_counter()
        wave = load_audio(path, encoder.sample_rate)
        t1 = time.perf_counter()
        blocks.append(encoder.embed_blocks([wave])[0])
        embed_s += time.perf_counter() - t1
        decode_s += t1 - t0
        seconds += len(wave) / encoder.sample_rate
        names.append(f"{root.name}/{path.relative_to(root)}"[-80:])
        print(f"{names[-1]}: {len(wave) / encoder.sample_rate:.0f} s, {len(blocks[-1])} blocks", flush=True)
    timing = {
        "audio_seconds": round(seconds, 1),
        "decode_s": round(decode_s, 1),
        "embed_s": round(embed_s, 1),
        "runtime": encoder.runtime,
        "dtype": str(encoder.dtype).replace("torch.", ""),
    }
    offsets = np.cumsum([0] + [len(b) for b in blocks])
    np.savez(cache, blocks=np.concatenate(blocks), offsets=offsets, names=np.array(names), timing=json.dumps(timing))
    return names, blocks, timing


def all_crops(counts: list[int], tracks: np.ndarray, longest: int) -> np.ndarray:
    """Every (track, first block, length) with length 1..longest inside the track, as int64 rows."""
    rows = []
    for t in tracks:
        for length in range(1, min(longest, counts[t]) + 1):
            starts = np.arange(counts[t] - length + 1)
            rows.append(np.stack([np.full_like(starts, t), starts, np.full_like(starts, length)], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)


def shortest_reaching(counts: list[int], tracks: np.ndarray, n: int) -> int:
    """The smallest longest-crop length whose crops number at least ``n`` (all lengths when none does)."""
    total, longest = 0, 0
    while total < n and longest < max(counts[t] for t in tracks):
        longest += 1
        total += sum(max(0, counts[t] - longest + 1) for t in tracks)
    return longest


def crop_vectors(blocks: list[np.ndarray], crops: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """The normalised block means of ``crops`` (float32 [len(crops), dim])."""
    sums = [np.concatenate([np.zeros((1, b.shape[1])), np.cumsum(b, axis=0, dtype=np.float64)]) for b in blocks]
    flat = np.concatenate(sums)
    base = np.cumsum([0] + [len(s) for s in sums])[:-1]
    out = np.empty((len(crops), blocks[0].shape[1]), np.float32)
    for start in range(0, len(crops), chunk):
        t, first, length = crops[start : start + chunk].T
        mean = flat[base[t] + first + length] - flat[base[t] + first]
        out[start : start + chunk] = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    return out


POSITIVE = ("held_out", "queries", "longest")  # options that must be >= 1 when given


def main(argv: list[str] | None = None) -> int:
    from index_builder.manifests.cli_args import OneLineParser

    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", type=Path, nargs="+", required=True, help="folders of recordings (searched recursively)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--held-out", type=int, default=4, help="tracks that give only queries")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--longest", type=int, default=None, help="longest crop in blocks (default: as needed)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from rag_flamingo.errors import AudioError

    try:
        sizes = sorted(int(s) for s in args.sizes.split(","))
    except ValueError:
        ap.error(f"--sizes {args.sizes!r}: write whole numbers separated by commas")
    small = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k in POSITIVE and v is not None and v < 1]
    if small or min(sizes) < 1:
        ap.error(f"{', '.join(small) or '--sizes ' + args.sizes}: give positive whole numbers")
    if missing := [str(root) for root in args.audio if not root.is_dir()]:
        ap.error(f"--audio: no such folder: {', '.join(missing)}")
    roots = list(dict.fromkeys(root.resolve() for root in args.audio))
    if len(roots) < len(args.audio) or any(a != b and b.is_relative_to(a) for a in roots for b in roots):
        ap.error("--audio names a folder twice (or one inside another): a track would be indexed and held out")
    found = sum(len(track_paths(root)) for root in args.audio)
    if found <= args.held_out:
        ap.error(f"--audio: {found} audio files; --held-out {args.held_out} leaves none to index")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        ap.error(f"--out {args.out}: cannot be made ({exc.strerror or exc})")
    names, blocks, timings = [], [], []
    for root in args.audio:
        try:
            root_names, root_blocks, timing = embed_tracks(root, args.out)
        except AudioError as exc:  # the library's one-line reason, naming the file
            ap.error(str(exc))
        names += root_names
        blocks += root_blocks
        timings.append(timing)
    timing = {key: round(sum(t[key] for t in timings), 1) for key in ("audio_seconds", "decode_s", "embed_s")}
    timing |= {key: timings[0][key] for key in ("runtime", "dtype")}
    counts = [len(b) for b in blocks]
    rng = np.random.default_rng(args.seed)
    held = np.sort(rng.choice(len(names), args.held_out, replace=False))
    indexed = np.setdiff1d(np.arange(len(names)), held)
    longest = args.longest or shortest_reaching(counts, indexed, sizes[-1])
    crops = all_crops(counts, indexed, longest)
    if len(crops) < sizes[-1]:
        ap.error(f"{len(crops)} crops of 1..{longest} blocks from {len(indexed)} tracks: fewer than {sizes[-1]}")
    order = crops[rng.permutation(len(crops))[: sizes[-1]]]
    for n in sizes:
        np.save(args.out / f"real_{n}.npy", crop_vectors(blocks, order[:n]))
    query_crops = all_crops(counts, held, longest)
    query_crops = query_crops[np.sort(rng.choice(len(query_crops), min(args.queries, len(query_crops)), replace=False))]
    np.save(args.out / "real_queries.npy", crop_vectors(blocks, query_crops))
    meta = {
        "tracks": len(names),
        "blocks": int(sum(counts)),
        "indexed_tracks": len(indexed),
        "indexed_blocks": int(sum(counts[t] for t in indexed)),
        "held_out_tracks": [names[t] for t in held],
        "longest_crop_blocks": longest,
        "crops_available": len(crops),
        "longest_crop_seconds": round((longest + 1) * BLOCK_HOP_SECONDS, 1),
        "sizes": sizes,
        "queries": len(query_crops),
        "seed": args.seed,
        "machine": platform.processor() or platform.machine(),
        **timing,
    }
    (args.out / "real_vectors.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
