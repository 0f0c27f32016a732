"""The embedded ``demo`` dataset: clearly distinct synthetic sound events, made with numpy only.

Nothing is downloaded. ``ensure_demo()`` generates, once, into ``paths.cache_root()/datasets/demo``:

    audio/<split>/<class_slug>_<nn>.wav    16-bit PCM, mono, 44.1 kHz, 1-4 s each
    train.jsonl, test.jsonl                 manifest rows: id, path, label, captions
    demo.json                               what was generated (version, seed, counts)

12 classes x (8 train + 4 test) items. Each item varies (pitch, duration, level, onset, a
little background noise) from a RNG seeded by (seed, class, split, item), so items differ while
the classes stay far apart. Output is byte-identical across runs for a given numpy version.
Every row carries the class ``label`` and the class's caption variants (``captions``), so the
demo serves classification and captioning.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .. import paths
from .manifest import write_manifest

logger = logging.getLogger(__name__)

SAMPLE_RATE = 44100
DEMO_SEED = 20240611
DEMO_ENCODER = "aisfx"  # the encoder scripts/demo.sh builds the demo store with (build_index's default)
SPLIT_SIZES = {"train": 8, "test": 4}
GENERATOR_VERSION = 1  # bump whenever the audio or the rows change: cached copies are regenerated

Synth = Callable[[np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class DemoClass:
    label: str
    captions: tuple[str, ...]
    synth: Synth

    @property
    def slug(self) -> str:
        return self.label.replace(" ", "_")


# ---------------------------------------------------------------------------------------------
# Synthesis: one function per class. Each returns a float64 signal of n samples, peak ~1.
# ---------------------------------------------------------------------------------------------


def _t(n: int) -> np.ndarray:
    return np.arange(n) / SAMPLE_RATE


def _fade(x: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    """Short raised-cosine fade in/out so no event starts or ends with a click."""
    k = min(len(x) // 2, int(seconds * SAMPLE_RATE))
    if k > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, k))
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def _sweep(f0: float, f1: float, n: int) -> np.ndarray:
    """Exponential sine sweep from f0 to f1 Hz over n samples."""
    t = _t(n)
    dur = n / SAMPLE_RATE
    k = np.log(f1 / f0) / dur
    return np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)


def _coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), shaped in the FFT."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1]
    spec *= f ** (-exponent / 2)
    x = np.fft.irfft(spec, n)
    return x / (np.max(np.abs(x)) + 1e-12)


def _sine_tone(rng, n):
    f = rng.uniform(400.0, 900.0)
    return np.sin(2 * np.pi * f * _t(n) + rng.uniform(0, 2 * np.pi))


def _chirp_up(rng, n):
    return _sweep(rng.uniform(150.0, 300.0), rng.uniform(3000.0, 6000.0), n)


def _chirp_down(rng, n):
    return _sweep(rng.uniform(3000.0, 6000.0), rng.uniform(150.0, 300.0), n)


def _white_noise(rng, n):
    x = rng.uniform(-1.0, 1.0, n)
    env = np.exp(-_t(n) * rng.uniform(0.3, 1.0))  # a burst that eases off a little
    return x * env


def _brown_rumble(rng, n):
    return _coloured_noise(rng, n, 2.0)


def _click_train(rng, n):
    x = np.zeros(n)
    period = int(SAMPLE_RATE / rng.uniform(8.0, 16.0))
    tc = np.arange(int(0.004 * SAMPLE_RATE)) / SAMPLE_RATE
    click = np.sin(2 * np.pi * rng.uniform(2500.0, 3500.0) * tc) * np.exp(-tc * 1500.0)  # a tick
    for start in range(int(rng.integers(0, period)), n - len(click), period):
        x[start : start + len(click)] += click
    return x


def _tremolo_tone(rng, n):
    t = _t(n)
    f, rate = rng.uniform(200.0, 350.0), rng.uniform(4.0, 7.0)
    return np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rate * t))


def _square_buzz(rng, n):
    t = _t(n)
    f = rng.uniform(80.0, 140.0)
    # band-limited square wave: odd harmonics 1/k up to ~8 kHz (no aliasing)
    ks = np.arange(1, int(8000 / f), 2)
    return (np.sin(2 * np.pi * f * np.outer(ks, t)) / ks[:, None]).sum(axis=0)


def _organ(rng, n):
    t = _t(n)
    f = rng.uniform(180.0, 260.0)
    partials = [(1, 1.0), (2, 0.7), (3, 0.5), (4, 0.35), (6, 0.2), (8, 0.15)]
    x = sum(a * np.sin(2 * np.pi * f * k * t) for k, a in partials)
    return x * np.minimum(1.0, t / 0.08)  # slow organ-like attack


def _bell(rng, n):
    t = _t(n)
    fc = rng.uniform(600.0, 1000.0)
    ratio, index = 1.4, rng.uniform(3.0, 5.0)  # inharmonic FM ratio: a bell
    decay = np.exp(-t * rng.uniform(2.5, 4.0))
    return np.sin(2 * np.pi * fc * t + index * decay * np.sin(2 * np.pi * fc * ratio * t)) * decay


def _rain(rng, n):
    x = 0.05 * rng.standard_normal(n)  # soft wash under the drops
    drop_len = int(0.008 * SAMPLE_RATE)
    env = np.exp(-np.arange(drop_len) / (0.0015 * SAMPLE_RATE))
    for start in rng.integers(0, n - drop_len, size=int(rng.uniform(60, 120) * n / SAMPLE_RATE)):
        x[start : start + drop_len] += rng.uniform(0.2, 1.0) * env * rng.standard_normal(drop_len)
    return x


def _knock(rng, n):
    x = np.zeros(n)
    f = rng.uniform(90.0, 160.0)
    knock_len = int(0.12 * SAMPLE_RATE)
    tk = np.arange(knock_len) / SAMPLE_RATE
    knock = np.sin(2 * np.pi * f * tk) * np.exp(-tk * 45.0)
    gap = int(rng.uniform(0.22, 0.35) * SAMPLE_RATE)
    for i in range(int(rng.integers(2, 5))):
        start = int(0.05 * SAMPLE_RATE) + i * gap
        if start + knock_len < n:
            x[start : start + knock_len] += knock
    return x


DEMO_CLASSES: tuple[DemoClass, ...] = (
    DemoClass(
        "sine tone", ("a steady pure tone sounds at one pitch", "a single clean tone hums without changing"), _sine_tone
    ),
    DemoClass("rising chirp", ("a tone sweeps quickly upward in pitch", "a whistle rises from low to high"), _chirp_up),
    DemoClass(
        "falling chirp", ("a tone sweeps quickly downward in pitch", "a whistle falls from high to low"), _chirp_down
    ),
    DemoClass(
        "white noise",
        ("a burst of harsh white noise hisses", "loud static hisses and slowly fades a little"),
        _white_noise,
    ),
    DemoClass("rumble", ("a deep noisy rumble rolls on", "low muffled rumbling like distant thunder"), _brown_rumble),
    DemoClass(
        "click train",
        ("a fast train of sharp clicks ticks evenly", "regular clicking like a rapid clock"),
        _click_train,
    ),
    DemoClass(
        "tremolo tone",
        ("a tone pulses with a wobbling tremolo", "a low tone throbs up and down in loudness"),
        _tremolo_tone,
    ),
    DemoClass("buzzer", ("a harsh buzzing tone drones", "an electric buzzer sounds continuously"), _square_buzz),
    DemoClass("organ", ("an organ plays a rich sustained note", "a warm harmonic tone is held like an organ"), _organ),
    DemoClass("bell", ("a bell rings and decays slowly", "a metallic bell strikes once and fades away"), _bell),
    DemoClass("rain", ("rain patters with many small drops", "raindrops fall in a steady patter"), _rain),
    DemoClass("knock", ("someone knocks on a door a few times", "a few dull knocks on wood"), _knock),
)

DEMO_LABELS: tuple[str, ...] = tuple(c.label for c in DEMO_CLASSES)


def demo_labels() -> list[str]:
    """The demo's class names (the option set for classification prompts)."""
    return list(DEMO_LABELS)


# ---------------------------------------------------------------------------------------------
# Items and files
# ---------------------------------------------------------------------------------------------


def _split_index(split: str) -> int:
    return list(SPLIT_SIZES).index(split)


def render_item(class_index: int, split: str, item: int, seed: int = DEMO_SEED) -> np.ndarray:
    """One demo waveform (float32, mono, SAMPLE_RATE): silence-padded event, level, noise floor."""
    rng = np.random.default_rng([seed, class_index, _split_index(split), item])
    n = int(rng.uniform(1.0, 4.0) * SAMPLE_RATE)
    onset = int(rng.uniform(0.0, 0.25) * SAMPLE_RATE)
    event_len = n - onset - int(rng.uniform(0.0, 0.15) * SAMPLE_RATE)
    event = DEMO_CLASSES[class_index].synth(rng, event_len)
    event = _fade(event / (np.max(np.abs(event)) + 1e-12))
    wave = np.zeros(n)
    wave[onset : onset + event_len] = event * rng.uniform(0.3, 0.9)
    wave += 10 ** (-55 / 20) * rng.standard_normal(n)  # faint background noise, -55 dBFS
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def _items(split: str):
    """(class index, item number, manifest row) for every item of a split, in manifest order."""
    for class_index, c in enumerate(DEMO_CLASSES):
        for item in range(SPLIT_SIZES[split]):
            name = f"{c.slug}_{item:02d}"
            yield (
                class_index,
                item,
                {
                    "id": f"{split}/{name}",
                    "path": f"audio/{split}/{name}.wav",
                    "label": c.label,
                    "captions": list(c.captions),
                },
            )


def demo_rows(split: str) -> list[dict]:
    """The manifest rows of one split (no audio is rendered)."""
    return [row for _, _, row in _items(split)]


def generate_demo(out_dir: str | Path, seed: int = DEMO_SEED) -> Path:
    """Write the demo audio and manifests into ``out_dir`` (created; existing files overwritten)."""
    out_dir = Path(out_dir)
    for split in SPLIT_SIZES:
        (out_dir / "audio" / split).mkdir(parents=True, exist_ok=True)
        rows = []
        for class_index, item, row in _items(split):
            wave = render_item(class_index, split, item, seed)
            sf.write(out_dir / row["path"], wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")
            rows.append(row)
        write_manifest(rows, out_dir / f"{split}.jsonl")
    (out_dir / "demo.json").write_text(json.dumps(_marker(seed), indent=1) + "\n")
    return out_dir


def _marker(seed: int) -> dict:
    return {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "sample_rate": SAMPLE_RATE,
        "splits": SPLIT_SIZES,
        "labels": list(DEMO_LABELS),
    }


def is_complete(root: Path, seed: int = DEMO_SEED) -> bool:
    """The marker matches this generator and seed, and every file is there."""
    try:
        marker = json.loads((root / "demo.json").read_text())
    except (OSError, ValueError):
        return False
    if marker != json.loads(json.dumps(_marker(seed))):
        return False
    expected = [f"{split}.jsonl" for split in SPLIT_SIZES]
    expected += [row["path"] for split in SPLIT_SIZES for row in demo_rows(split)]
    return all((root / p).is_file() for p in expected)


def demo_root() -> Path:
    return paths.cache_root() / "datasets" / "demo"


def ensure_demo(root: str | Path | None = None, seed: int = DEMO_SEED) -> Path:
    """Return the demo folder, generating it first when absent or from an older generator.

    Generation goes to a temporary sibling folder that is renamed into place, so an interrupted
    run never leaves a half-written demo, and concurrent callers end up with one complete copy.
    """
    root = Path(root) if root is not None else demo_root()
    if is_complete(root, seed):
        return root
    logger.info("generating the demo dataset into %s", root)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    generate_demo(tmp, seed)
    if is_complete(root, seed):  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return root
    if root.exists():
        stale = root.with_name(f"{root.name}.stale-{os.getpid()}")
        root.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    tmp.rename(root)
    return root
