"""OpenVINO tests run in a child interpreter: OpenVINO's threads, left in the test process, made a
later subprocess-spawning test of the suite crash (segmentation fault; not root-caused).

A test module marks its OpenVINO tests ``@in_child`` (named ``test_child_*``) and calls
``run_child_tests(__file__, count)`` from one ordinary test, which runs them in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHILD = "RAG_FLAMINGO_TEST_OPENVINO_CHILD"
in_child = pytest.mark.skipif(os.environ.get(CHILD) != "1", reason="runs in its own process (run_child_tests)")


def run_child_tests(test_file: str, count: int) -> None:
    """Run ``test_file``'s ``test_child_*`` tests in a child interpreter; all ``count`` must pass."""
    pytest.importorskip("openvino")
    if os.environ.get(CHILD) == "1":
        pytest.skip("the child itself")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file, "-k", "test_child_"],
        env={**os.environ, CHILD: "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0 and f"{count} passed" in proc.stdout, proc.stdout[-3000:]
