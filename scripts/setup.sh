#!/usr/bin/env bash
# Create .venv and install rag-flamingo into it (idempotent).
# torch is installed first and pinned, so a CPU machine gets the CPU wheel and pip never
# resolves an open `torch` requirement to a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q "torch==${TORCH_VERSION:-2.13.0}"
pip install -q -e ".[dev,app]"   # app: gradio for rag_app
# aisfx ships the pretrained sound-effects embedder used offline by the demo. Its metadata pins
# numpy 1.23 / librosa 0.9, which would break the stack, so it goes in without its dependencies
# (we use only its checkpoint file; the model code lives in rag_flamingo.encoders.aisfx).
pip install -q --no-deps "aisfx==0.1.2"
if [ "${WITH_TEST_ORACLES:-0}" = 1 ] && [ -f requirements-test-oracles.txt ]; then
  # Original CLAP packages, used only by parity tests as oracles (see oracles/).
  pip install -q --no-deps -r requirements-test-oracles.txt
  # mistral-common (Voxtral's prompt oracle) in a venv of its own; without it that test skips, saying so
  scripts/setup_mistral_oracle.sh || echo "setup.sh: no mistral-common oracle venv: tests/test_backends_voxtral.py skips its oracle test" >&2
fi
