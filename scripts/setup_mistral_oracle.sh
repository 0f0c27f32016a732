#!/usr/bin/env bash
# Create the isolated venv of the mistral-common oracle (tests/test_backends_voxtral.py compares
# Voxtral's prompt ids against mistral-common's own encoding). mistral-common needs numpy < 2.4, which
# the project's venv does not hold, so the oracle has its own venv on Python <= 3.12:
#   scripts/setup_mistral_oracle.sh            -> .venv-mistral-oracle/ (the tests' default)
#   MISTRAL_ORACLE_VENV=/elsewhere scripts/setup_mistral_oracle.sh
#     then: MISTRAL_ORACLE_PYTHON=/elsewhere/bin/python pytest tests/test_backends_voxtral.py
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MISTRAL_ORACLE_VENV:-.venv-mistral-oracle}
PY=${MISTRAL_ORACLE_BASE_PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.12 python3.11 python3.10 python3; do  # the first that runs (a pyenv shim may not)
    if "$candidate" -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12)' 2>/dev/null; then
      PY=$candidate
      break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup_mistral_oracle.sh: no python3.10-3.12 found (set MISTRAL_ORACLE_BASE_PYTHON)" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install -q -r requirements-test-oracle-mistral.txt
