"""scripts/gpu_check.sh: the dry run (CPU, tiny sizes, the GPU run's code paths) writes a complete
report; without CUDA the real run refuses in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
ENV = dict(os.environ, PYTHON=sys.executable)
# one encoder of each random-weight builder path: LAION fusion (original format), its transformers
# port without fusion (the converter, the other checkpoint), MS-CLAP (clapcap's builder runs in e2e)
DRY_ENCODERS = ("laion_clap_fusion", "hf_clap_unfused", "ms_clap_2023")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the real run would start")
def test_without_cuda_it_says_so_in_one_line():
    proc = subprocess.run(["bash", str(SCRIPT), "/nonexistent/out"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr


def test_unknown_encoder_or_section_is_one_line(tmp_path):
    args = ["--encoders", "laion_clap,nope", "--only", "encoders,speed"]
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", str(tmp_path), *args], capture_output=True, text=True, env=ENV
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1 and "nope" in proc.stderr and "speed" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before any work


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dry_run_writes_a_complete_report(tmp_path):
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", str(tmp_path), "--encoders", ",".join(DRY_ENCODERS)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=880,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True
    sections = report["sections"]
    assert set(sections) == {"encoders", "build_index", "faiss", "model", "e2e"}
    assert not [name for name, s in sections.items() if "error" in s]
    encoders = sections["encoders"]
    for name in DRY_ENCODERS:  # CPU vs CPU in the dry run: the same numbers
        row = encoders[name]
        assert row["cosine_ok"] and set(row["clips_per_s"]) == {"1", "2"}, row
        assert row["weights"].startswith("random, real size") and row["precision"] == "float32"
    assert encoders["laion_clap_fusion"]["dim"] == 512 and encoders["ms_clap_2023"]["dim"] == 1024
    assert sections["build_index"]["clips"] == 8 and sections["build_index"]["end_to_end_clips_per_s"] > 0
    faiss_section = sections["faiss"]
    assert faiss_section["ivf_flat"]["recall_at_10"] >= 0.99 and faiss_section["ivf_pq"]["factory"].startswith("IVF")
    assert faiss_section["exact_top10"]["agreement"] == 1.0  # torch top-k = FAISS exact search
    model = sections["model"]
    assert model["greedy_bf16_equals_fp32"] in (True, False) and model["decode_ms_per_token"] > 0
    assert model["batch8_cached_tokens_per_s"] > 0 and model["batch1_uncached_tokens_per_s"] > 0
    e2e = sections["e2e"]
    assert e2e["queries"] == 1 and e2e["setup"].startswith("3 shots")
    assert 0 < e2e["median_retrieval_s"] < e2e["median_total_s"]
    assert e2e["median_prompt_audio_generate_s"] > 0
    text = (tmp_path / "gpu_check.md").read_text()
    assert "produced by scripts/gpu_check.py --dry-run" in text and "## not covered by this check" in text
    assert "| laion_clap_fusion | random, real size, released format | float32 | 1.0 | yes |" in text
