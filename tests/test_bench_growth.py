"""scripts/bench_growth.py: the /proc sampler sees a real process tree's memory, and the tables read
its traces (the build_index and evaluate runs themselves are benchmarks, not tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.scripts import load_script as load_named

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_growth.py"

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")


def load_script():
    return load_named("bench_growth")


def test_sampler_sees_the_main_process_and_its_child(tmp_path: Path) -> None:
    bg = load_script()
    # The main process holds ~200 MB and starts a child holding ~100 MB; both stay a moment.
    child = "import time; b = bytearray(100 * 2**20); time.sleep(1.5)"
    code = textwrap.dedent(
        f"""
        import subprocess, sys, time
        a = bytearray(200 * 2**20)
        p = subprocess.Popen([sys.executable, "-c", {child!r}])
        time.sleep(2.0)
        p.wait()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    sampler = bg.Sampler(proc.pid, tmp_path / "shards", period=0.05)
    sampler.start()
    proc.wait()
    sampler.stop.set()
    sampler.join()
    samples = sampler.samples
    assert max(s["main_hwm"] for s in samples) / 1024 >= 200
    assert max(s["workers"] for s in samples) == 1
    assert max(s["worker_max_rss"] for s in samples) / 1024 >= 100
    assert max(s["tree_pss"] for s in samples) / 1024 >= 300


def test_tables_read_the_runs_and_traces(tmp_path: Path) -> None:
    bg = load_script()
    trace = [
        {"t": i, "main_rss": (600 + (i % 3)) * 1024, "main_hwm": 700 * 1024, "workers": 0, "worker_max_rss": 0}
        | {"tree_pss": 500 * 1024, "shards_done": i // 10}
        for i in range(45)
    ]
    (tmp_path / "build_trace_n4000_w0.jsonl").write_text("".join(json.dumps(s) + "\n" for s in trace))
    row: dict[str, object] = {
        "items": 4000,
        "workers": 0,
        "wall_s": 9.0,
        "main_peak_rss_mb": 700.0,
        "worker_peak_rss_mb": 0.0,
    }
    row |= {"tree_peak_pss_mb": 500.0, "index": "Flat", "index_mb": 7.8}
    (tmp_path / "build.jsonl").write_text(json.dumps(row) + "\n")
    text = bg.tables(tmp_path)
    assert "| 4000 | 0 | 9 | 700 | 601 (602) | - | 500 | Flat | 7.80 |" in text
    assert "shard 1: 601 / 500; shard 2: 601 / 500; shard 3: 601 / 500; shard 4: 601 / 500" in text
    assert "shard 5" not in text  # the samples after the last done marker are the final phase


def test_help_runs() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    assert "evaluate" in out.stdout and "build" in out.stdout
