"""Make two more adaptation development sets: General MIDI sound fonts rendered note by note.

Same layout as ``scripts/make_devset.py`` (``<out>/<task>/{train,test}/<label>/<source>__<file>``,
``<out>/devset.json``), from packages that set does not use. Each note is rendered alone by
FluidSynth (``apt-get install fluidsynth``; reverb and chorus off) from three sound fonts, each a
different source of recordings and instruments: the support (``train/``) is FluidR3 (Debian's
``fluid-soundfont-gm``), the queries (``test/``) are TimGM6mb and MuseScore General Lite.

- ``gm_drums``: the GM percussion keys of 12 labels (kick, snare, hihat, tom, cymbal, clap, cowbell,
  tambourine, conga, bongo, woodblock, triangle) played on the 7 GM drum kits of each font (Standard,
  Room, Power, Electronic, TR-808, Jazz, Brush): a kit of a font is one source.
- ``gm_instruments``: single notes (C3, C4, C5; bass an octave lower) of the 8 programs of 12 GM
  families (piano, chromatic_percussion, organ, guitar, bass, strings, ensemble, brass, reed, pipe,
  synth_lead, synth_pad): a font is one source.

    python scripts/make_devset_gm.py --out devset_gm
    build_index dataset=folder dataset.root=devset_gm/gm_drums encoder=aisfx store=devset_gm/stores/gm_drums

The notes are written to one MIDI file per (font, kit or program) here (a header, a tempo and
note events: 30 lines instead of a dependency), rendered in one FluidSynth run each and cut into
clips; a clip whose peak is under ``SILENT`` (a key the font has no sound for) is left out.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from make_devset import GM_FAMILY_NAMES, arguments, fetch, fresh, save, work_folder

PACKAGES = {  # Debian 12 (bookworm)
    "fluid-soundfont-gm": "3.1-5.3",
    "timgm6mb-soundfont": "1.3-5",
    "musescore-general-soundfont-small": "0.2.1-1",
}
FONTS = [  # (package, file inside it, source name, side)
    ("fluid-soundfont-gm", "usr/share/sounds/sf2/FluidR3_GM.sf2", "FluidR3", "train"),
    ("timgm6mb-soundfont", "usr/share/sounds/sf2/TimGM6mb.sf2", "TimGM6mb", "test"),
    ("musescore-general-soundfont-small", "usr/share/sounds/sf3/MuseScore_General_Lite.sf3", "MuseScoreLite", "test"),
]
RATE = 44100
CLIP_SECONDS = 2.0  # each note: held HOLD seconds, then released until the clip ends
HOLD = {"gm_drums": 0.2, "gm_instruments": 1.0}
SILENT = 1e-3
DRUM_KITS = {0: "Standard", 8: "Room", 16: "Power", 24: "Electronic", 25: "TR808", 32: "Jazz", 40: "Brush"}
DRUM_KEYS = {  # General MIDI percussion key map
    "kick": (35, 36),
    "snare": (38, 40),
    "hihat": (42, 44, 46),
    "tom": (41, 43, 45, 47, 48, 50),
    "cymbal": (49, 51, 52, 55, 57, 59),
    "clap": (39,),
    "cowbell": (56,),
    "tambourine": (54,),
    "conga": (62, 63, 64),
    "bongo": (60, 61),
    "woodblock": (76, 77),
    "triangle": (80, 81),
}
FAMILIES = dict(enumerate(GM_FAMILY_NAMES[:12]))  # General MIDI program // 8 -> family: the melodic ones
PITCHES = (48, 60, 72)
DRUM_CHANNEL = 9


def midi_file(program: int, bank: int, channel: int, notes: list[int], hold: float) -> bytes:
    """A one-track standard MIDI file: bank and program, then each note held ``hold`` s, one every
    ``CLIP_SECONDS`` (at 480 ticks per 0.5 s beat)."""

    def varlen(n: int) -> bytes:
        out = [n & 0x7F]
        while n := n >> 7:
            out.append(0x80 | (n & 0x7F))
        return bytes(reversed(out))

    tick = 960  # per second
    on, off = round(hold * tick), round((CLIP_SECONDS - hold) * tick)
    events = bytearray(b"\x00\xff\x51\x03\x07\xa1\x20")  # tempo: 500000 us per beat
    events += bytes([0, 0xB0 | channel, 0, bank, 0, 0xC0 | channel, program])
    for i, note in enumerate(notes):
        events += varlen(0 if i == 0 else off) + bytes([0x90 | channel, note, 100])
        events += varlen(on) + bytes([0x80 | channel, note, 0])
    events += varlen(off) + b"\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(events)) + bytes(events)


def render(font: Path, midi: bytes, n_notes: int) -> list[np.ndarray]:
    """FluidSynth's mono render of ``midi`` cut into one clip per note."""
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "notes.mid", Path(tmp) / "notes.wav"
        mid.write_bytes(midi)
        cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(RATE), "-F", str(wav)]
        subprocess.run([*cmd, str(font), str(mid)], check=True, capture_output=True)
        audio, _ = sf.read(wav, dtype="float32", always_2d=True)
    mono, step = audio.mean(1), int(CLIP_SECONDS * RATE)
    mono = np.pad(mono, (0, max(0, n_notes * step - len(mono))))
    return [mono[i * step : (i + 1) * step] for i in range(n_notes)]


def notes_of(task: str) -> list[tuple[int, int, int, str, list[tuple[str, int, str]]]]:
    """(bank, program, channel, source suffix, [(label, note, file stem)]) of every render of ``task``."""
    if task == "gm_drums":
        keys = [(label, key, f"{label}_{key}") for label, ks in DRUM_KEYS.items() for key in ks]
        return [(128, prog, DRUM_CHANNEL, kit, keys) for prog, kit in DRUM_KITS.items()]
    out = []
    for program in range(8 * len(FAMILIES)):
        family = FAMILIES[program // 8]
        shift = -12 if family == "bass" else 0
        notes = [(family, p + shift, f"program{program:03d}_{p + shift}") for p in PITCHES]
        out.append((0, program, 0, "", notes))
    return out


def make(task: str, work: Path, root: Path) -> list[dict]:
    listing = []
    for package, path, font_name, side in FONTS:
        for bank, program, channel, suffix, notes in notes_of(task):
            midi = midi_file(program, bank, channel, [n for _, n, _ in notes], HOLD[task])
            source = f"{font_name}{suffix}"
            for (label, _, stem), clip in zip(notes, render(work / package / path, midi, len(notes))):
                if np.abs(clip).max() < SILENT:
                    continue
                dest = root / side / label / f"{source}__{stem}.wav"
                dest.parent.mkdir(parents=True, exist_ok=True)
                sf.write(dest, clip, RATE, subtype="PCM_16")
                listing.append(
                    {
                        "path": str(dest.relative_to(root)),
                        "label": label,
                        "source": source,
                        "from": f"{path} bank {bank} program {program}",
                    }
                )
    return listing


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv, __doc__, "devset_gm")
    with work_folder(args.work) as work:
        packages = fetch(PACKAGES, work)
        tasks = {task: make(task, work, fresh(args.out / task)) for task in ("gm_drums", "gm_instruments")}
    fluidsynth = subprocess.run(["fluidsynth", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    save(args.out, tasks, {"packages": packages, "renderer": fluidsynth, "clip_seconds": CLIP_SECONDS})
    return 0


if __name__ == "__main__":
    sys.exit(main())
