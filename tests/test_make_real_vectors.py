"""scripts/make_real_vectors.py: the crop set and the crop embeddings (normalised block means)."""

from __future__ import annotations

import numpy as np

from support.scripts import load_script as load_named


def load_script():
    return load_named("make_real_vectors")


def test_every_crop_up_to_the_longest_once():
    mrv = load_script()
    counts = [3, 1, 5]
    crops = mrv.all_crops(counts, np.array([0, 2]), longest=2)
    # track 0: 3 crops of 1 block + 2 of 2; track 2: 5 + 4; track 1 left out
    assert len(crops) == 14 and len({tuple(c) for c in crops}) == 14
    assert set(crops[:, 0]) == {0, 2} and crops[:, 2].max() == 2
    assert all(first + length <= counts[t] for t, first, length in crops)
    assert mrv.shortest_reaching(counts, np.array([0, 2]), 14) == 2
    assert mrv.shortest_reaching(counts, np.array([0, 2]), 10**6) == 5  # all lengths when none reaches


def test_crop_vectors_are_normalised_block_means():
    mrv = load_script()
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((2, 8)).astype(np.float32)]
    crops = np.array([[0, 1, 3], [1, 0, 1], [0, 0, 4]])
    got = mrv.crop_vectors(blocks, crops, chunk=2)
    for row, (t, first, length) in zip(got, crops):
        mean = blocks[t][first : first + length].mean(0)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-6)


def test_bad_inputs_are_one_line_before_any_work(tmp_path, capsys):
    """A folder named twice would put a held-out track in the index; non-positive counts, vector files
    that are no float rows, queries of another dimension: one line, exit 2 (bench_scale too)."""
    import pytest

    mrv = load_script()
    (tmp_path / "a").mkdir()
    for argv, said in (
        (["--audio", str(tmp_path / "a"), str(tmp_path / "a"), "--out", str(tmp_path / "o")], "names a folder twice"),
        (["--audio", str(tmp_path / "a"), "--out", str(tmp_path / "o"), "--held-out", "0"], "--held-out 0"),
    ):
        with pytest.raises(SystemExit) as ended:
            mrv.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert ended.value.code == 2 and len(err) == 1 and said in err[0], err
    bench = load_named("bench_scale")
    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((1000, 8), dtype=np.float32))
    np.save(tmp_path / "q.npy", np.zeros((3, 4), np.float32))
    np.save(tmp_path / "nan.npy", np.full((1000, 8), np.nan, np.float32))
    (tmp_path / "text.npy").write_text("not numbers")
    for argv, said in (
        (["--vectors", str(tmp_path / "v.npy"), "--queries", str(tmp_path / "q.npy")], "another dimension"),
        (["--vectors", str(tmp_path / "nan.npy")], "NaN"),
        (["--vectors", str(tmp_path / "text.npy")], "not a .npy file of numbers"),
        (["--vectors", str(tmp_path / "q.npy")], "1000 or more"),
    ):
        with pytest.raises(SystemExit) as ended:
            bench.main([*argv, "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err.strip().splitlines()
        assert ended.value.code == 2 and len(err) == 1 and said in err[0], err
