#!/usr/bin/env bash
# Everything a GPU must show, in one run (see scripts/gpu_check.py): gpu_check.sh [--dry-run] OUTDIR
#
# On the GPU machine: installs the wheels carried in .whl/ (made here by scripts/gpu_wheels.sh) into
# a target folder next to the machine's own torch/transformers/numpy, puts the project on
# PYTHONPATH (no pip install: the machine has no registry), then runs the checks. Without CUDA and
# without --dry-run it says so in one line and exits non-zero. --dry-run: CPU, tiny sizes, same code.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [[ "${1:-}" != "--dry-run" ]]; then
  if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to $python's torch; run it on a GPU machine, or use --dry-run OUTDIR" >&2
    exit 2
  fi
  if compgen -G ".whl/*.whl" > /dev/null; then
    target=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$target" .whl/*.whl
    export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$python" scripts/gpu_check.py "$@"
