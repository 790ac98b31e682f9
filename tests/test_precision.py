"""minie5.quantize_embeddings gives sentence-transformers' arrays, bit for bit, on the same float embeddings.

The reference is sentence-transformers' quantize_embeddings, run on the very
arrays minie5 quantises: real e5 embeddings and random ones with awkward shapes
(a width that is not a multiple of 8, constant dimensions, float64, values
outside the calibration ranges). Then the Hamming distance against a plain count.
"""
from __future__ import annotations

import numpy as np
import pytest

import minie5
from conftest import requires_torch
from helpers import REPO, sentence_transformers_quantize
from minie5.embedding_precision import hamming_distances, popcount_rows, popcount_rows_reference

PRECISIONS = ["float32", "int8", "uint8", "binary", "ubinary"]


@pytest.fixture(scope="module")
def st_quantize():
    pytest.importorskip("sentence_transformers")
    return sentence_transformers_quantize()


@pytest.fixture(scope="module")
def e5_minie5_st(e5_dir):
    return minie5.SentenceTransformer(str(e5_dir))


@pytest.fixture(scope="module")
def e5_embeddings(e5_model):
    texts = (REPO / "tests" / "data" / "multilingual.txt").read_text(encoding="utf-8").splitlines()[:120]
    return e5_model.encode(texts, prefix="passage")  # [120, 384] float32, unit rows


def random_cases():
    rng = np.random.default_rng(18)
    constant = rng.normal(size=(20, 24)).astype(np.float32)
    constant[:, 3] = 0.25  # a dimension with max == min: its step is 1, every value in bucket 0
    return {
        "random [50, 384]": rng.normal(scale=0.05, size=(50, 384)).astype(np.float32),
        "odd width [7, 13]": rng.normal(size=(7, 13)).astype(np.float32),  # packbits pads the last byte
        "float64 [9, 16]": rng.normal(size=(9, 16)),
        "constant dimension [20, 24]": constant,
        "exact zeros [4, 8]": np.array([[0, -0.0, 1e-45, -1e-45, 1, -1, 0.5, 0]] * 4, dtype=np.float32),
    }


def assert_identical(ours, theirs):
    assert type(ours) is np.ndarray and ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@requires_torch
@pytest.mark.parametrize("precision", PRECISIONS)
def test_identical_to_sentence_transformers_on_e5_embeddings(st_quantize, e5_embeddings, precision):
    ours = minie5.quantize_embeddings(e5_embeddings, precision)
    theirs = st_quantize(e5_embeddings, precision)
    assert_identical(ours, theirs)
    ranges = np.vstack([e5_embeddings[:60].min(0), e5_embeddings[:60].max(0)])
    assert_identical(minie5.quantize_embeddings(e5_embeddings[60:], precision, ranges=ranges),
                     st_quantize(e5_embeddings[60:], precision, ranges=ranges))
    assert_identical(minie5.quantize_embeddings(e5_embeddings[60:], precision, calibration_embeddings=e5_embeddings[:60]),
                     st_quantize(e5_embeddings[60:], precision, calibration_embeddings=e5_embeddings[:60]))
    assert_identical(minie5.quantize_embeddings(e5_embeddings[0], precision, ranges=ranges),  # one vector [dim]
                     st_quantize(e5_embeddings[0], precision, ranges=ranges))
    print(f"parity quantize {precision}: e5 [120, 384] -> {ours.dtype} {list(ours.shape)}, identical to "
          f"sentence-transformers (own ranges, given ranges, calibration, one vector)")


@requires_torch
@pytest.mark.parametrize("case", list(random_cases()))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_identical_to_sentence_transformers_on_awkward_arrays(st_quantize, case, precision):
    embeddings = random_cases()[case]
    assert_identical(minie5.quantize_embeddings(embeddings, precision), st_quantize(embeddings, precision))
    calibration = embeddings[: len(embeddings) // 2] * 0.5  # narrower ranges: values clip at both ends
    assert_identical(minie5.quantize_embeddings(embeddings, precision, calibration_embeddings=calibration),
                     st_quantize(embeddings, precision, calibration_embeddings=calibration))


@requires_torch
@pytest.mark.parametrize("precision", PRECISIONS)
def test_empty_input(st_quantize, precision):
    empty = np.zeros((0, 12), dtype=np.float32)
    assert_identical(minie5.quantize_embeddings(empty, precision), st_quantize(empty, precision))


@requires_torch
@pytest.mark.parametrize("precision", PRECISIONS)
def test_encode_precision_is_sentence_transformers_quantize_of_the_floats(st_quantize, e5_model, e5_minie5_st,
                                                                         precision):
    """Model.encode(precision=) and minie5.SentenceTransformer.encode(precision=) give sentence-transformers'
    quantize_embeddings of the float embeddings of the same call (int8 / uint8 calibrated on them)."""
    texts = (REPO / "tests" / "data" / "multilingual.txt").read_text(encoding="utf-8").splitlines()[200:230]
    floats = e5_model.encode(texts, prefix="query")  # [30, 384]
    assert_identical(e5_model.encode(texts, prefix="query", precision=precision), st_quantize(floats, precision))
    assert_identical(e5_minie5_st.encode_query(texts, precision=precision), st_quantize(floats, precision))


def test_bucket_arithmetic_by_hand():
    """Dimension 0 spans [0, 2.55] in steps of 0.01, dimension 1 [0, 255] in steps of 1: value v lands in
    bucket floor((v - low) / step), clipped to 0..255. (With other ranges the top of a range can land in
    bucket 254 by float rounding, in sentence-transformers too.)"""
    ranges = np.array([[0.0, 0.0], [2.55, 255.0]], dtype=np.float32)
    values = np.array([[0.0, 0.0], [0.015, 127.5], [2.55, 255.0], [-5.0, 300.0]], dtype=np.float32)
    levels = minie5.quantize_embeddings(values, "uint8", ranges=ranges)
    np.testing.assert_array_equal(levels, [[0, 0], [1, 127], [255, 255], [0, 255]])
    np.testing.assert_array_equal(minie5.quantize_embeddings(values, "int8", ranges=ranges), levels.astype(int) - 128)
    bits = minie5.quantize_embeddings(np.array([[1, -1, 0, 2, -3, 4, 5, -6, 7]], dtype=np.float32), "ubinary")
    np.testing.assert_array_equal(bits, [[0b10010110, 0b10000000]])  # > 0 -> 1, first dimension in the high bit
    np.testing.assert_array_equal(minie5.quantize_embeddings(np.ones((1, 9)), "binary"), [[255 - 128, 128 - 128]])


@pytest.mark.parametrize("call, message", [
    (lambda x: minie5.quantize_embeddings(x, "int4"), "precision 'int4' is not supported"),
    (lambda x: minie5.quantize_embeddings(x, "int8", calibration_embeddings=np.ones((5, 7))),
     "calibration_embeddings have 7 dimensions, the embeddings 8"),
    (lambda x: minie5.quantize_embeddings(x, "int8", ranges=np.ones((3, 8))), r"ranges must be a float array \[2, 8\]"),
    (lambda x: minie5.quantize_embeddings(x[:1], "int8"), "single embedding"),
    (lambda x: minie5.quantize_embeddings(x[0], "uint8"), "single embedding"),
    (lambda x: minie5.quantize_embeddings(x.astype(np.int8), "int8"), "already quantised"),
    (lambda x: minie5.quantize_embeddings(x[None], "binary"), r"\[n, dim\] or \[dim\]"),
    (lambda x: minie5.quantize_embeddings(x, "uint8", calibration_embeddings=np.ones((0, 8))), "m >= 1"),
])
def test_bad_input_names_what_is_wrong(call, message):
    x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    with pytest.raises(minie5.InputError, match=message):
        call(x)


def test_hamming_distances_against_a_plain_count():
    rng = np.random.default_rng(5)
    for width in (48, 13):  # 48 bytes: the uint64 popcount path; 13: the table
        corpus = rng.integers(0, 256, size=(1000, width), dtype=np.uint8)
        query = rng.integers(0, 256, size=width, dtype=np.uint8)
        expected = (np.unpackbits(corpus, axis=1) != np.unpackbits(query)).sum(axis=1)
        np.testing.assert_array_equal(hamming_distances(query, corpus, block_rows=300), expected)
        xor = corpus ^ query
        np.testing.assert_array_equal(popcount_rows(xor), popcount_rows_reference(xor))
