"""rag_flamingo.hashing: the one file hash, and a floor module (no torch, no faiss)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np

from rag_flamingo import checkpoints
from rag_flamingo.hashing import file_sha256
from rag_flamingo.store import items, records


def test_file_sha256_reads_every_chunk(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 10_007, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == want
    assert file_sha256(path, chunk=1000) == want  # a partial last chunk is hashed too
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_one_function_for_store_manifests_and_checkpoints():
    assert checkpoints.file_sha256 is file_sha256
    assert records.file_sha256 is file_sha256 and items.file_sha256 is file_sha256
    assert not hasattr(records, "file_digest")


def test_hashing_imports_neither_torch_nor_faiss():
    code = "import sys, rag_flamingo.hashing; print(sorted(m for m in ('torch', 'faiss', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
