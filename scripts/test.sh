#!/usr/bin/env bash
# Set up .venv (with the test-only oracle packages) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST_ORACLES=1 scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec python -m pytest -q "$@"
