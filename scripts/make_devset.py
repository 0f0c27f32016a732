"""Make the adaptation development set: real recordings from Debian sample packages, as folder datasets.

Two tasks, each a ``dataset=folder`` tree ``<out>/<task>/{train,test}/<label>/<source>__<file>``:
the support set (``train/``, what ``build_index`` indexes) and the queries (``test/``) come from
*different sources* (drum kits, instrument patches, sample packs), so evaluation measures adaptation
to new recordings of the labels, not memorised recordings.

- ``drums``: one-shot drum hits labelled kick, snare, hihat, tom, cymbal, clap, cowbell (from the
  file names); support: eight kits/packs, queries: nine other kits/packs.
- ``instruments``: single notes labelled by General MIDI family (piano, chromatic_percussion, organ,
  guitar, bass, strings, brass, reed, pipe); the notes of each freepats patch (one recorded
  instrument, sampled at several pitches) go to one side, alternating per family, so the queries are
  other instruments of the family; the queries also get the LMMS and Sonic Pi instrument samples.

Packages are downloaded with ``apt-get download <name>=<version>`` (pinned below; nothing is
installed) and unpacked with ``dpkg -x``. The choice of files is fixed by these rules and a seeded
generator; ``<out>/devset.json`` records the packages (version, sha256), the rules' seed and every
file with its source. The audio is not part of the repository.

    python scripts/make_devset.py --out devset
    build_index dataset=folder dataset.root=devset/drums encoder=aisfx store=devset/stores/drums
    evaluate store=devset/stores/drums dataset=folder dataset.root=devset/drums \\
        predictor=knn,prototype,simpleshot,tip_adapter shots=1,4,16

freepats' ``.pat`` files (Gravis UltraSound patches) are read here: no maintained Python library
reads them, and the format is a fixed header plus raw PCM per sample (64 lines below).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

PACKAGES = {  # Debian 12 (bookworm)
    "hydrogen-drumkits": "2017.09.19~dfsg-1",
    "hydrogen-data": "1.2.0~beta1+dfsg-1",
    "sonic-pi-samples": "3.2.2~repack-8",
    "lmms-common": "1.2.2+dfsg1-6",
    "freepats": "20060219-4",
}
SEED = 13
PER_SOURCE_LABEL = 6  # at most this many files of one label from one source (velocity layers are near copies)
MIN_SECONDS = 0.15  # shorter hits are left out (the query side refuses clips under 0.1 s)
AUDIO = (".wav", ".flac", ".ogg", ".aiff", ".aif")

HYDROGEN = "usr/share/hydrogen/data/drumkits"
# Drum sources: (package, folder inside it, name, side). Acoustic and electronic kits on both sides.
DRUM_SOURCES = [
    ("hydrogen-data", f"{HYDROGEN}/GMRockKit", "GMRockKit", "train"),
    ("hydrogen-data", f"{HYDROGEN}/TR808EmulationKit", "TR808EmulationKit", "train"),
    ("hydrogen-drumkits", f"{HYDROGEN}/The Black Pearl 1.0", "BlackPearl", "train"),
    ("hydrogen-drumkits", f"{HYDROGEN}/ForzeeStereo", "ForzeeStereo", "train"),
    ("hydrogen-drumkits", f"{HYDROGEN}/Millo_MultiLayered2", "MilloMultiLayered2", "train"),
    ("hydrogen-drumkits", f"{HYDROGEN}/ElectricEmpireKit", "ElectricEmpireKit", "train"),
    ("hydrogen-drumkits", f"{HYDROGEN}/HardElectro1", "HardElectro1", "train"),
    ("sonic-pi-samples", "usr/share/sonic-pi/samples", "SonicPi", "train"),
    ("hydrogen-drumkits", f"{HYDROGEN}/ColomboAcousticDrumkit", "ColomboAcoustic", "test"),
    ("hydrogen-drumkits", f"{HYDROGEN}/Millo_MultiLayered3", "MilloMultiLayered3", "test"),
    ("hydrogen-drumkits", f"{HYDROGEN}/Millo-Drums_v.1", "MilloDrums1", "test"),
    ("hydrogen-drumkits", f"{HYDROGEN}/BJA_Pacific", "BJAPacific", "test"),
    ("hydrogen-drumkits", f"{HYDROGEN}/VariBreaks", "VariBreaks", "test"),
    ("hydrogen-drumkits", f"{HYDROGEN}/Gimme A Hand 1.0", "GimmeAHand", "test"),
    ("hydrogen-drumkits", f"{HYDROGEN}/Audiophob", "Audiophob", "test"),
    ("lmms-common", "usr/share/lmms/samples/drums", "LMMS", "test"),
    ("freepats", "usr/share/midi/freepats/Drum_000", "FreepatsDrums", "test"),
]
GM_FAMILY_NAMES = (  # General MIDI program // 8 -> family
    "piano",
    "chromatic_percussion",
    "organ",
    "guitar",
    "bass",
    "strings",
    "ensemble",
    "brass",
    "reed",
    "pipe",
    "synth_lead",
    "synth_pad",
    "synth_effects",
    "ethnic",
    "percussive",
    "sound_effects",
)
GM_FAMILIES = {i: GM_FAMILY_NAMES[i] for i in (0, 1, 2, 3, 4, 5, 7, 8, 9)}  # those with several freepats patches
INSTRUMENT_WORDS = [  # extra query sources (LMMS, Sonic Pi): file-name words -> family
    ("organ", "organ"),
    ("piano", "piano"),
    ("guit", "guitar"),
    ("bassslap", "bass"),
    ("cello", "strings"),
    ("violin", "strings"),
    ("trumpet", "brass"),
    ("flute", "pipe"),
]


def words(stem: str) -> list[str]:
    """File-name words: 'SabianHatClosed-Med' -> sabian hat closed med; 'HH2_01' -> hh 2 01."""
    return [w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", stem)]


def drum_label(stem: str) -> str | None:
    w = set(words(stem))
    if w & {"hat", "hihat", "hh", "chh", "ohh", "ho"} or ("cymbal" in w and w & {"closed", "open", "pedal"}):
        return "hihat"
    if "clap" in w:
        return "clap"
    if w & {"cowbell", "cb"} or {"cow", "bell"} <= w:
        return "cowbell"
    if w & {"crash", "ride", "china", "splash", "cymbal", "cc", "rc", "rd", "cra"}:
        return "cymbal"
    if w & {"kick", "bd", "bassdrum"} or {"drum", "bass"} <= w:
        return "kick"
    if w & {"snare", "sd", "sn", "jsnare"}:
        return "snare"
    if w & {"tom", "tm", "ft", "floortom"} or re.match(r"t\d", stem):
        return "tom"
    return None


# ----------------------------------------------------------------------------- Gravis .pat


def read_pat(path: Path) -> list[tuple[np.ndarray, int]]:
    """The samples of a GF1 patch (``GF1PATCH110``) as (float32 mono, rate); looped samples are played
    through their loop until 2 s, as a sampler would hold the note."""
    data = path.read_bytes()
    if not data.startswith(b"GF1PATCH11"):
        raise ValueError(f"{path}: not a GF1 patch")
    n_samples = data[129 + 63 + 6]  # file header 129, instrument header 63, layer header: samples at +6
    pos = 129 + 63 + 47
    out = []
    for _ in range(n_samples):
        size, loop_start, loop_end, rate = struct.unpack_from("<IIIH", data, pos + 8)
        modes = data[pos + 55]
        raw = data[pos + 96 : pos + 96 + size]
        pos += 96 + size
        if modes & 1:  # 16-bit
            pcm = np.frombuffer(raw, "<u2" if modes & 2 else "<i2").astype(np.float64)
            pcm = (pcm - 32768 if modes & 2 else pcm) / 32768.0
            loop_start, loop_end = loop_start // 2, loop_end // 2
        else:
            pcm = np.frombuffer(raw, np.uint8 if modes & 2 else np.int8).astype(np.float64)
            pcm = (pcm - 128 if modes & 2 else pcm) / 128.0
        if modes & 4 and 0 <= loop_start < loop_end <= len(pcm):
            body, loop = pcm[:loop_end], pcm[loop_start:loop_end]
            repeats = max(0, int(np.ceil((2 * rate - len(body)) / len(loop))))
            pcm = np.concatenate([body, np.tile(loop, repeats)])
        out.append((pcm.astype(np.float32), int(rate)))
    return out


# ----------------------------------------------------------------------------- building


def fetch(packages: dict[str, str], work: Path) -> dict[str, dict]:
    """apt-get download + dpkg -x each pinned package into ``work/<name>``; their versions and sha256."""
    work.mkdir(parents=True, exist_ok=True)
    record = {}
    for name, version in packages.items():
        target = work / name
        debs = sorted(work.glob(f"{name}_*.deb"))
        if not debs:
            subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=work, check=True)
            debs = sorted(work.glob(f"{name}_*.deb"))
        if not target.is_dir():
            subprocess.run(["dpkg", "-x", str(debs[0]), str(target)], check=True)
        digest = hashlib.sha256(debs[0].read_bytes()).hexdigest()
        record[name] = {"version": version, "deb": debs[0].name, "sha256": digest}
    return record


def cap(files: list, rng: np.random.Generator, most: int = PER_SOURCE_LABEL) -> list:
    files = sorted(files)
    return files if len(files) <= most else [files[i] for i in sorted(rng.choice(len(files), most, replace=False))]


def drum_files(work: Path, rng: np.random.Generator) -> list[dict]:
    rows = []
    for package, folder, source, side in DRUM_SOURCES:
        by_label: dict[str, list[Path]] = defaultdict(list)
        for f in sorted((work / package / folder).iterdir()):
            if f.suffix.lower() in AUDIO + (".pat",) and (label := drum_label(f.stem)):
                by_label[label].append(f)
        for label, files in sorted(by_label.items()):
            rows += [{"file": f, "label": label, "source": source, "split": side} for f in cap(files, rng)]
    return rows


def instrument_files(work: Path, rng: np.random.Generator) -> list[dict]:
    rows = []
    patches: dict[str, list[Path]] = defaultdict(list)
    for f in sorted((work / "freepats/usr/share/midi/freepats/Tone_000").glob("*.pat")):
        family = GM_FAMILIES.get(int(f.name[:3]) // 8)
        if family:
            patches[family].append(f)
    for family, files in sorted(patches.items()):
        for j, f in enumerate(files):  # alternate whole patches (instruments) between the sides
            rows += [
                {
                    "file": f,
                    "sample": s,
                    "label": family,
                    "source": f"freepats-{f.stem}",
                    "split": ("train", "test")[j % 2],
                }
                for s in cap(list(range(len(read_pat(f)))), rng)
            ]
    extra = [
        ("lmms-common", "usr/share/lmms/samples/instruments", "LMMS"),
        ("sonic-pi-samples", "usr/share/sonic-pi/samples", "SonicPi"),
    ]
    for package, folder, source in extra:
        for f in sorted((work / package / folder).iterdir()):
            family = next((fam for word, fam in INSTRUMENT_WORDS if word in f.stem.lower()), None)
            if family and f.suffix.lower() in AUDIO and not f.stem.startswith(("bass_", "loop_")):
                rows.append({"file": f, "label": family, "source": source, "split": "test"})
    return rows


def write(rows: list[dict], root: Path, work: Path) -> list[dict]:
    listing = []
    for r in rows:
        folder = root / r["split"] / r["label"]
        folder.mkdir(parents=True, exist_ok=True)
        f: Path = r["file"]
        if f.suffix.lower() == ".pat":
            pcm, rate = read_pat(f)[r.get("sample", 0)]
            dest = folder / f"{r['source']}__{f.stem}_{r.get('sample', 0)}.wav"
            sf.write(dest, pcm, rate, subtype="PCM_16")
        else:
            try:
                info = sf.info(f)
            except (RuntimeError, sf.LibsndfileError):  # e.g. an LMMS .ogg that is a malformed WAV
                continue
            if info.duration < MIN_SECONDS:
                continue
            dest = folder / f"{r['source']}__{f.name.replace(' ', '_')}"
            shutil.copyfile(f, dest)
        listing.append(
            {
                "path": str(dest.relative_to(root)),
                "label": r["label"],
                "source": r["source"],
                "from": str(f.relative_to(work)),
            }
        )
    return listing


def save(out: Path, tasks: dict[str, list[dict]], summary: dict) -> None:
    """Print each task's counts per split and write ``<out>/devset.json`` (``summary`` + the listings)."""
    summary["tasks"] = {}
    for task, listing in tasks.items():
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for row in listing:
            counts[row["path"].split("/")[0]][row["label"]] += 1
        summary["tasks"][task] = {"counts": counts, "files": listing}
        for split in ("train", "test"):
            print(f"{task} {split}: {sum(counts[split].values())} files, {dict(sorted(counts[split].items()))}")
    (out / "devset.json").write_text(json.dumps(summary, indent=1, default=dict) + "\n")


def fresh(root: Path) -> Path:
    """``root``, emptied (a task folder is always written whole)."""
    if root.exists():
        shutil.rmtree(root)
    return root


def arguments(argv: list[str] | None, doc: str, default_out: str) -> argparse.Namespace:
    """The command line, its folders checked before any download (one line and exit 2 otherwise)."""
    from rag_flamingo.errors import ConfigError
    from rag_flamingo.paths import check_writable_folder

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(default_out), help="where the task folders go")
    p.add_argument("--work", type=Path, default=None, help="where the .deb files are kept (default: a temp dir)")
    args = p.parse_args(argv)
    try:
        check_writable_folder(args.out, "--out ")
        if args.work is not None:
            check_writable_folder(args.work, "--work ")
    except ConfigError as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return args


@contextlib.contextmanager
def work_folder(given: Path | None) -> Iterator[Path]:
    """``--work``, else a temp folder removed afterwards (the packages are only read while writing)."""
    if given is not None:
        yield given
        return
    work = Path(tempfile.mkdtemp(prefix="devset-debs-"))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv, __doc__, "devset")
    with work_folder(args.work) as work:
        packages = fetch(PACKAGES, work)
        tasks = {
            task: write(collect(work, np.random.default_rng(SEED)), fresh(args.out / task), work)
            for task, collect in (("drums", drum_files), ("instruments", instrument_files))
        }
    save(args.out, tasks, {"packages": packages, "seed": SEED, "per_source_label": PER_SOURCE_LABEL})
    return 0


if __name__ == "__main__":
    sys.exit(main())
