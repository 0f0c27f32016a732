"""build_index across "nodes": two torchrun launchers meeting at a c10d rendezvous endpoint.

Each launcher is what one node of a cluster runs (``torchrun --nnodes=2 --nproc_per_node=1
--rdzv-backend=c10d --rdzv-endpoint=HOST:PORT``); here both run on this machine, the output folder
standing for the shared storage. The store must equal a single-process build, file for file.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from test_index_pipeline import FAST, _free_port, make_folder, manifest_rows, store_bytes, write_manifest

from rag_flamingo.store.shards import read_all_shards


def node_command(port: int, args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        "--rdzv-id=multinode-test",
        "--max-restarts=0",
        "-m",
        "index_builder",
        *args,
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_nodes_equal_one_process(tmp_path):
    root = make_folder(tmp_path / "audio", per_class=3)
    (root / "noise" / "broken.wav").write_bytes(b"not audio at all")
    manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(root))
    args = [f"dataset.manifest={manifest}", f"dataset.root={root}", "shard_size=2", *FAST]
    one, shared = tmp_path / "one", tmp_path / "shared_storage" / "store"
    # One thread per process on both sides: bitwise-equal embeddings need equal thread counts.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run(
        [sys.executable, "-m", "index_builder", *args, f"output={one}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]

    port = _free_port()
    nodes = [
        subprocess.Popen(
            node_command(port, [*args, f"output={shared}"]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=400) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    reports = [out for out, _ in outputs if "build_index: built" in out]
    assert len(reports) == 1  # the node that got rank 0 reports, for both
    assert "9 indexed, 1 rejected" in reports[0] and "embedded 9 clips" in reports[0]
    logs = "".join(err for _, err in outputs)
    assert "rank 0/2" in logs and "rank 1/2" in logs  # both nodes embedded their share

    assert store_bytes(shared) == store_bytes(one)  # items, index, shards, rejected: byte for byte
    shared_vectors, shared_items = read_all_shards(shared)
    one_vectors, one_items = read_all_shards(one)
    assert np.array_equal(shared_vectors, one_vectors) and shared_items.equals(one_items)


@pytest.mark.timeout(120)
def test_a_user_error_under_torchrun_is_one_line_from_rank_0_and_every_rank_exits_2(tmp_path):
    """Each rank meets the same bad setting: rank 0 prints the one line, every rank exits 2 at once
    (torchrun's own failure summary follows; its exit code is 1)."""
    run = _evaluate_on_two_ranks(["limit=-1"], tmp_path)
    ours = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("evaluate:")]
    assert ours == ["evaluate: error: limit=-1: must be >= 1 (null: every query)"], run.stderr[-3000:]
    assert _exit_codes(run.stderr)[0] == 2 and "rag_flamingo/" not in run.stderr  # no traceback through our code


def _evaluate_on_two_ranks(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "rag_flamingo.evaluate", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1", RAG_FLAMINGO_CACHE_ROOT=str(tmp_path / "cache")),
        timeout=150,
        cwd=tmp_path,
    )


def _exit_codes(stderr: str) -> list[int]:
    """The ranks' exit codes in torchrun's failure summary, rank 0 first: 2 for a rank that met the
    error; a rank the launcher stopped first (it had not reached it yet) reports SIGTERM's -15."""
    codes = {}
    rank = None
    for line in stderr.splitlines():
        words = line.split()
        if words[:1] == ["rank"]:
            rank = int(words[2])
        elif words[:1] == ["exitcode"] and rank is not None:
            codes[rank] = int(words[2])
    assert sorted(codes) == [0, 1] and all(c in (2, -15) for c in codes.values()), stderr[-3000:]
    return [codes[0], codes[1]]


@pytest.mark.timeout(180)
def test_an_error_of_rank_0_alone_stops_every_rank_with_code_2(folder_stores, tmp_path):
    """Rank 0 refuses the output folder (another run's) while rank 1 waits at the barrier: rank 1 sees
    the closed connection and leaves quietly with 2, no traceback, no wait."""
    from support.clips import evaluate_folder_queries

    out = tmp_path / "eval"
    assert evaluate_folder_queries(folder_stores, "predictor=knn", "shots=1", f"output_dir={out}") == 0
    args = [
        f"store={folder_stores / 'train_idx'}",
        "dataset=folder",
        f"dataset.root={folder_stores / 'test'}",
        f"output_dir={out}",
        "retrieval.seed=5",
        "progress=false",
    ]
    run = _evaluate_on_two_ranks(args, tmp_path)
    ours = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("evaluate:")]
    assert len(ours) == 1 and "holds results of another run" in ours[0], run.stderr[-3000:]
    assert _exit_codes(run.stderr)[0] == 2 and "[rank1]" not in run.stderr and "[rank0]" not in run.stderr
