"""Compact embeddings on the command line: `minie5 embed --precision` and `minie5 search --binary`.

`embed --precision` must write exactly what sentence-transformers' quantize_embeddings
makes of the float embeddings `embed` writes (int8 / uint8 ranges over the whole
output, or from --calibration). `search --binary` must print float search's lines
and scores whenever the true top k is among its Hamming candidates, and its
candidates must be the rows whose bits differ least, counted here by hand.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import minie5
from cli_helpers import EXAMPLES, run_cli, write_lines
from helpers import REPO, load_script, sentence_transformers_quantize
from minie5.io.files import write_quantized_npy
from minie5.cli.search import BinaryIndex, binary_search, build_binary_index, float_search


@pytest.fixture()
def corpus(tmp_path):
    """examples/multilingual.txt (24 lines in 20 languages) in a fresh directory."""
    path = tmp_path / "docs.txt"
    shutil.copy(EXAMPLES / "multilingual.txt", path)
    return path


def reference_quantize():
    """sentence-transformers' quantize_embeddings when installed, else minie5's (identical: test_precision.py)."""
    try:
        return sentence_transformers_quantize()
    except ImportError:
        return minie5.quantize_embeddings


# ---------------------------------------------------------------- embed --precision
@pytest.fixture(scope="module")
def example_floats(e5_dir, tmp_path_factory) -> np.ndarray:
    """What `minie5 embed --prefix passage` writes for examples/multilingual.txt: float32 [24, 384]."""
    path = tmp_path_factory.mktemp("floats") / "floats.npy"
    result = run_cli("embed", "-i", EXAMPLES / "multilingual.txt", "-o", path, "--prefix", "passage", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    return np.load(path)


# int8: the spooled path (ranges over the whole output), ubinary: the direct one; uint8 / binary differ from them
# only inside quantize_embeddings (test_precision.py)
@pytest.mark.parametrize("precision", ["int8", "ubinary"])
@pytest.mark.slow
def test_embed_precision_writes_quantize_embeddings_of_the_floats(e5_dir, corpus, tmp_path, example_floats,
                                                                  precision):
    out = tmp_path / f"docs.{precision}.npy"
    result = run_cli("embed", "-i", corpus, "-o", out, "--prefix", "passage", "--precision", precision,
                     "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    expected = reference_quantize()(example_floats, precision)
    got = np.load(out)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the float spool is gone


@pytest.mark.slow
def test_embed_precision_with_calibration(e5_dir, tmp_path, example_floats):
    calibration = tmp_path / "calibration.npy"
    np.save(calibration, example_floats)
    out = tmp_path / "two.npy"
    result = run_cli("embed", "query: one", "-o", out, "--precision", "uint8", "--calibration", calibration,
                     "--model", e5_dir)  # a single text: fine with calibration
    assert result.returncode == 0, result.stderr
    floats = minie5.load(e5_dir).encode(["query: one"])
    expected = reference_quantize()(floats, "uint8", calibration_embeddings=np.load(calibration))
    np.testing.assert_array_equal(np.load(out), expected)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_streamed_scalar_quantization_equals_one_call(tmp_path, precision):
    """write_quantized_npy in blocks (floats spooled, ranges from all of them) = quantize_embeddings on the whole."""
    floats = np.random.default_rng(3).normal(size=(23, 10)).astype(np.float32)
    out = tmp_path / "out.npy"
    write_quantized_npy(out, (floats[i:i + 4] for i in range(0, 23, 4)), 23, 10, precision, block_rows=5)
    np.testing.assert_array_equal(np.load(out), reference_quantize()(floats, precision))


@pytest.mark.slow
def test_embed_precision_of_an_empty_file_is_an_empty_array(e5_dir, tmp_path):
    empty = write_lines(tmp_path / "empty.txt", [])
    result = run_cli("embed", "-i", empty, "-o", tmp_path / "out.npy", "--precision", "int8", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "out.npy").shape == (0, 384)


@pytest.mark.parametrize("arguments, message", [
    (["--precision", "int8"], "--precision int8 writes a .npy file: give -o FILE.npy"),
    (["--precision", "binary", "-o", "{tmp}/x.jsonl"], "--precision binary writes a .npy file"),
    (["--precision", "binary", "--calibration", "{tmp}/c.npy", "-o", "{tmp}/x.npy"],
     "--calibration applies to --precision int8 or uint8, not binary"),
    (["--precision", "int4", "-o", "{tmp}/x.npy"], "invalid choice: 'int4'"),
])
@pytest.mark.slow
def test_embed_precision_usage_errors(tmp_path, arguments, message):
    result = run_cli("embed", "text", *[a.format(tmp=tmp_path) for a in arguments], "--model", tmp_path / "none")
    assert message in result.error_line()


@pytest.mark.slow
def test_embed_precision_input_errors(e5_dir, tmp_path):
    one = run_cli("embed", "only one", "-o", tmp_path / "x.npy", "--precision", "int8", "--model", e5_dir)
    assert "cannot compute int8 quantization ranges from 1 embedding: give --calibration FILE.npy" in one.error_line()
    narrow = tmp_path / "narrow.npy"
    np.save(narrow, np.ones((5, 16), np.float32))
    wrong = run_cli("embed", "a", "b", "-o", tmp_path / "x.npy", "--precision", "int8", "--calibration", narrow,
                    "--model", e5_dir)
    assert f"{narrow}: holds embeddings of 16 dimensions, the model's have 384" in wrong.error_line()
    assert not (tmp_path / "x.npy").exists()


# ---------------------------------------------------------------- the search itself
def hamming_by_hand(a_bits: np.ndarray, b_bits: np.ndarray) -> np.ndarray:
    return (np.unpackbits(a_bits, axis=-1) != np.unpackbits(b_bits, axis=-1)).sum(axis=-1)


def test_binary_index_bits_are_signs_around_the_mean():
    vectors = np.random.default_rng(1).normal(size=(30, 20)).astype(np.float32)
    index = build_binary_index(vectors)
    np.testing.assert_allclose(index.center, vectors.mean(axis=0), atol=1e-6)
    np.testing.assert_array_equal(np.unpackbits(index.bits, axis=1)[:, :20], vectors > index.center)


def test_candidates_are_the_rows_that_differ_least_ties_in_corpus_order():
    bits = np.array([[0b0000], [0b0111], [0b0001], [0b0011], [0b0001], [0b1111]], dtype=np.uint8) << 4
    index = BinaryIndex(bits=bits, center=np.zeros(4, np.float32))
    query = np.array([0], dtype=np.uint8)  # distances 0, 3, 1, 2, 1, 4
    assert index.candidates(query, 1).tolist() == [0]
    assert index.candidates(query, 2).tolist() == [0, 2]  # rows 2 and 4 tie at 1: the first in corpus order
    assert index.candidates(query, 4).tolist() == [0, 2, 3, 4]
    assert index.candidates(query, 9).tolist() == [0, 1, 2, 3, 4, 5]


def test_binary_search_is_float_search_on_its_candidates():
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(300, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:5] + 0.3 * rng.normal(size=(5, 32)).astype(np.float32)
    index = build_binary_index(vectors)
    every_row = binary_search(index, vectors, queries, 10, 300)  # candidates = the whole corpus
    exact = float_search([vectors[:120], vectors[120:]], queries, 10)
    assert [[row for row, _ in found] for found in every_row] == [[row for row, _ in found] for found in exact]
    np.testing.assert_allclose([[s for _, s in found] for found in every_row],
                               [[s for _, s in found] for found in exact], atol=1e-6)  # gemv vs gemm rounding
    for query, found in zip(queries, binary_search(index, vectors, queries, 3, 20)):
        distances = hamming_by_hand(index.pack(vectors), index.pack(query[None]))
        candidates = np.argsort(distances, kind="stable")[:20]
        scores = vectors[candidates] @ query
        best = candidates[np.argsort(-scores, kind="stable")][:3]
        assert [row for row, _ in found] == sorted(best, key=lambda r: (-float(vectors[r] @ query), r))
        np.testing.assert_allclose([s for _, s in found], [vectors[r] @ query for r, _ in found], rtol=1e-6)


# ---------------------------------------------------------------- minie5 search --binary
@pytest.mark.slow
def test_search_binary_prints_what_float_search_prints_and_keeps_both_indexes(e5_dir, corpus):
    queries = ["the highest mountain in Africa", "comment faire une omelette"]
    float_run = run_cli("search", "--corpus", corpus, *queries, "-k", "3", "--model", e5_dir)
    first = run_cli("search", "--corpus", corpus, *queries, "-k", "3", "--binary", "--model", e5_dir)
    assert first.returncode == 0, first.stderr
    assert first.stdout == float_run.stdout  # 24 lines < 3 x 100 candidates: every row is rescored
    index, bits = corpus.with_suffix(".npy"), corpus.with_name("docs.binary.npz")
    assert f"saved the corpus embeddings in {index}" in first.stderr
    assert f"saved the binary index in {bits}" in first.stderr
    second = run_cli("search", "--corpus", corpus, *queries, "-k", "3", "--binary", "--model", e5_dir)
    assert second.stdout == first.stdout
    assert f"using the corpus embeddings saved in {index}" in second.stderr
    assert f"using the binary index saved in {bits}" in second.stderr

    os.utime(index)  # the float index changed after its binary index: rebuilt
    past = os.stat(index).st_mtime - 100
    os.utime(bits, (past, past))
    third = run_cli("search", "--corpus", corpus, *queries, "-k", "3", "--binary", "--model", e5_dir)
    assert "is older than" in third.stderr and "built it again" in third.stderr
    assert third.stdout == first.stdout


@pytest.mark.slow
def test_search_binary_with_few_candidates_rescores_the_closest_bits(e5_dir, e5_model, corpus, tmp_path):
    index = tmp_path / "idx.npy"
    query = "the highest mountain in Africa"
    result = run_cli("search", "--corpus", corpus, query, "-k", "2", "--binary", "--rescore-multiplier", "2",
                     "--index", index, "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "idx.binary.npz").is_file()
    lines = corpus.read_text(encoding="utf-8").splitlines()
    passages = e5_model.encode_passages(lines)  # [24, 384]
    center = passages.mean(axis=0)
    query_vector = e5_model.encode_queries(query)
    distances = hamming_by_hand(np.packbits(passages > center, axis=1), np.packbits(query_vector > center))
    candidates = np.argsort(distances, kind="stable")[:4]  # k 2 x multiplier 2
    best = sorted(candidates, key=lambda i: -float(passages[i] @ query_vector))[:2]
    printed = [line.split("\t") for line in result.stdout.splitlines()]
    assert [int(number) - 1 for _, number, _ in printed] == list(best)
    for (score, number, text), i in zip(printed, best):
        assert abs(float(score) - float(passages[i] @ query_vector)) <= 1e-4 and text == lines[i]


@pytest.mark.slow
def test_rescore_multiplier_needs_binary(tmp_path):
    path = write_lines(tmp_path / "docs.txt", ["a"])
    result = run_cli("search", "--corpus", path, "q", "--rescore-multiplier", "3", "--model", tmp_path / "none")
    assert "--rescore-multiplier applies to --binary search" in result.error_line()


@pytest.mark.slow
def test_recall_script_runs_and_rescoring_every_row_is_exact(e5_dir, tmp_path):
    """scripts/binary_search_recall.py on 300 lines of tests/data/multilingual.txt: with 10 x 100 candidates
    every row is rescored, so recall is 1; the timings are reported for both searches."""
    script = load_script("binary_search_recall.py")
    results = script.main(["--model", str(e5_dir), "--corpus", str(REPO / "tests" / "data" / "multilingual.txt"),
                           "--lines", "300", "--queries", "12", "--multipliers", "1", "100", "--scale-rows", "1000",
                           "--workdir", str(tmp_path)])
    header, rule, at_zero, at_mean = results["table"]
    assert at_zero.startswith("| bits at 0 |") and at_zero.endswith("| 1.000 |")
    assert at_mean.startswith("| bits at mean |") and at_mean.endswith("| 1.000 |")
    assert set(results["timings"]) == {300, 1000}
