#!/usr/bin/env bash
# Set up .venv (with the test-only oracle packages), check lint, format and types, run the tests.
#   scripts/test.sh                  everything
#   scripts/test.sh -m "not slow"    the quick part (arguments go to pytest)
#   SKIP_CHECKS=1 scripts/test.sh    tests only (no ruff / mypy)
set -euo pipefail
cd "$(dirname "$0")/.."
WITH_TEST_ORACLES=1 scripts/setup.sh
# chromium + chromedriver for tests/test_app_browser.py (apt-get when missing); without them the rest
# still runs and those tests fail saying how to install them (they are never skipped)
scripts/install_browser.sh || echo "test.sh: no browser: tests/test_app_browser.py will fail" >&2
. .venv/bin/activate
if [ "${SKIP_CHECKS:-0}" != 1 ]; then
  # settings in pyproject.toml ([tool.ruff], [tool.mypy]); .pre-commit-config.yaml runs the same
  ruff check .
  ruff format --check .
  mypy
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec python -m pytest -q --durations=15 "$@"
