"""Extract the audio track of videos once, as mono WAV files (datasets distributed as video: MUSIC-AVQA).

``python -m index_builder.manifests.video_audio --videos DIR --out DIR [--sample-rate HZ]``

Every video file under ``--videos`` (mp4, mkv, webm, avi, mov) becomes ``<out>/<stem>.wav``: the
first audio stream, decoded with PyAV (FFmpeg's libraries, from PyPI: the ``video`` extra), down-mixed
to mono float32, resampled to ``--sample-rate`` when given (default: the stream's own rate), written
as 16-bit PCM. A WAV that already exists is kept (an interrupted run resumes). A video that cannot
be decoded or has no audio stream is listed with the reason in ``<out>/failed.jsonl`` and skipped;
it never stops the run. The manifest maker then leaves such questions out with ``--check-audio``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rag_flamingo.cli import one_line
from rag_flamingo.datasets.manifest import write_manifest
from rag_flamingo.errors import ConfigError, RagFlamingoError

from .cli_args import OneLineParser, run_parser

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
FAILED_FILE = "failed.jsonl"
PROG = "python -m index_builder.manifests.video_audio"


@dataclass
class ExtractResult:
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # already there from an earlier run
    failed: list[dict] = field(default_factory=list)  # {"video", "reason"}


def video_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")
    )


def extract_audio(videos: str | Path, out: str | Path, sample_rate: int | None = None) -> ExtractResult:
    """Write ``out/<stem>.wav`` for every video under ``videos``; failures listed in ``out/failed.jsonl``."""
    try:
        import av  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            'extracting audio from video needs PyAV: pip install -e ".[video]" (or pip install av)'
        ) from exc
    videos, out = Path(videos), Path(out)
    if not videos.is_dir():
        raise ConfigError(f"{videos}: video folder not found")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"--out {out}: cannot be created ({exc.strerror or exc}); give a writable folder for the WAV files"
        ) from None
    result = ExtractResult()
    for video in video_files(videos):
        target = out / f"{video.stem}.wav"
        if target.is_file():
            result.kept.append(target)
            continue
        try:
            wave, rate = decode_audio_track(video, sample_rate)
        except Exception as exc:  # any decoder failure: listed, never fatal to the whole run
            reason = " ".join(str(exc).split()) or type(exc).__name__
            result.failed.append({"id": video.stem, "path": str(video), "reason": reason})
            logger.warning("%s: no audio extracted (%s)", video, reason)
            continue
        _write_wav(target, wave, rate)
        result.written.append(target)
    report = out / FAILED_FILE
    if result.failed:
        write_manifest(result.failed, report)
    elif report.exists():
        report.unlink()
    return result


def decode_audio_track(video: Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """(mono float32 samples, rate) of the first audio stream of ``video``."""
    import av

    with av.open(str(video)) as container:
        streams = container.streams.audio
        if not streams:
            raise ValueError("no audio stream")
        stream = streams[0]
        rate = int(sample_rate or stream.rate or stream.codec_context.sample_rate)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        for frame in container.decode(stream):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))  # flush
    if not chunks or sum(int(c.size) for c in chunks) == 0:
        raise ValueError("the audio stream decoded to no samples")
    return np.concatenate(chunks).astype(np.float32), rate


def _write_wav(target: Path, wave: np.ndarray, rate: int) -> None:
    import soundfile as sf

    tmp = target.with_suffix(".wav.part")
    sf.write(tmp, np.clip(wave, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    tmp.replace(target)  # a crash never leaves a truncated .wav that a rerun would keep


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--videos", required=True, help="folder of video files (searched recursively)")
    parser.add_argument("--out", required=True, help="folder for <video stem>.wav")
    parser.add_argument("--sample-rate", type=int, default=None, help="resample to this rate (default: the stream's)")
    args = run_parser(parser, argv)
    if isinstance(args, int):
        return args
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        result = extract_audio(args.videos, args.out, args.sample_rate)
    except RagFlamingoError as exc:
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    failed = f", {len(result.failed)} failed (listed in {Path(args.out) / FAILED_FILE})" if result.failed else ""
    print(f"{len(result.written)} written, {len(result.kept)} already there{failed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
