#!/usr/bin/env bash
# Download, here, the wheels the lent GPU machine lacks (python 3.12, x86-64; it has torch,
# transformers, numpy, safetensors, tokenizers, pyarrow, scikit-learn, matplotlib, tqdm, ...)
# into .whl/ (ignored by git; a device call carries it: at most 64 MiB per call).
# faiss-gpu (~135 MB) does not fit: GPU FAISS stays unverified there; faiss-cpu is carried instead.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
args=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl)
for p in "${platforms[@]}"; do args+=(--platform "$p"); done
# the project's runtime needs that the machine lacks, and their own needs (hydra: antlr4 runtime)
# (the versions this project's venv runs; aisfx: its wheel holds the default encoder's weights)
wheels=(hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 soundfile==0.14.0 cffi==2.1.1
        pycparser==3.12 soxr==1.1.0 faiss-cpu==1.15.1 librosa==0.11.0 audioread==3.1.0 pooch==1.9.0
        decorator==5.3.1 aisfx==0.1.2)
mkdir -p .whl
for w in "${wheels[@]}"; do
  python3 -m pip download -q "${args[@]}" "$w" 2>/dev/null || python3 -m pip download -q --no-deps -d .whl "$w"
done
# antlr4-python3-runtime 4.9.3 is published as an sdist only: build its pure-Python wheel here
for sdist in .whl/*.tar.gz; do
  [[ -e "$sdist" ]] || continue
  python3 -m pip wheel -q --no-deps -w .whl "$sdist" && rm "$sdist"
done
du -sh .whl
total=$(du -sm .whl | cut -f1)
if (( total > 64 )); then echo "gpu_wheels: .whl is ${total} MiB, over the 64 MiB a device call carries" >&2; exit 1; fi
