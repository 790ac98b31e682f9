"""Compact embeddings for storage: int8 / uint8 scalars and binary bits, and Hamming search over bits.

The semantics are sentence-transformers' `quantize_embeddings`, so that arrays
written by minie5 and by sentence-transformers are interchangeable (the tests
compare the two for identity on the same float embeddings):

    int8 / uint8    each dimension d is cut into 256 equal buckets between a
                    calibration range [low_d, high_d] (the per-dimension min and
                    max of calibration embeddings, by default of the embeddings
                    themselves); a value becomes its bucket number, 0..255, clipped
                    at the ends (int8: minus 128, -128..127).
    binary          one bit per dimension, 1 where the value is > 0, packed 8 per
                    byte, most significant bit first (numpy.packbits), minus 128 as
                    int8: [n, 384] float32 -> [n, 48] int8.
    ubinary         the same bytes without the offset, as uint8.

Binary search: the Hamming distance between two packed rows counts the bits in
which they differ (XOR, then a popcount); for sign bits it ranks rows roughly
as cosine similarity does. cli/search.py uses it to pick candidates, then rescores
them in float.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
BINARY_PRECISIONS = ("binary", "ubinary")
SCALAR_PRECISIONS = ("int8", "uint8")
BUCKETS = 255  # intervals between the 256 levels of an int8 / uint8 value

# popcount of every byte value: BYTE_BITS[b] = number of 1 bits in b
BYTE_BITS = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)


def check_precision(precision) -> str:
    """A precision name, or InputError naming the value and the choices."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
    return precision


def precision_dtype(precision: str) -> np.dtype:
    """The dtype of embeddings stored at a precision (binary -> int8, ubinary -> uint8)."""
    return np.dtype({"float32": np.float32, "int8": np.int8, "uint8": np.uint8,
                     "binary": np.int8, "ubinary": np.uint8}[check_precision(precision)])


def stored_width(precision: str, dim: int) -> int:
    """Columns of a quantised row: dim for float32 / int8 / uint8, dim / 8 bytes (rounded up) for bits."""
    return (dim + 7) // 8 if check_precision(precision) in BINARY_PRECISIONS else dim


def float_array(embeddings, what: str) -> np.ndarray:
    """embeddings -> a float NumPy array [n, dim] or [dim]; anything else is an InputError naming `what`."""
    array = np.asarray(embeddings)
    if array.dtype.kind != "f":
        raise InputError(f"{what} must be float embeddings, got an array of {array.dtype}"
                         + (" (already quantised?)" if array.dtype in (np.int8, np.uint8) else ""))
    if array.ndim not in (1, 2):
        raise InputError(f"{what} must be [n, dim] or [dim], got shape {list(array.shape)}")
    return array


def quantization_ranges(calibration_embeddings) -> np.ndarray:
    """The per-dimension [min, max] of calibration embeddings [m, dim] -> ranges [2, dim]."""
    calibration = float_array(calibration_embeddings, "calibration_embeddings")
    if calibration.ndim != 2 or calibration.shape[0] == 0:
        raise InputError(f"calibration_embeddings must be [m, dim] with m >= 1, got shape {list(calibration.shape)}")
    return np.vstack((np.min(calibration, axis=0), np.max(calibration, axis=0)))  # [2, dim]


def quantize_embeddings(embeddings, precision: str, ranges=None, calibration_embeddings=None) -> np.ndarray:
    """Float embeddings [n, dim] (or [dim]) -> the same at `precision`, as sentence-transformers computes it.

    ranges: [2, dim], the low and high end of each dimension (int8 / uint8 only).
    calibration_embeddings: [m, dim] whose per-dimension min and max are the
    ranges, when ranges is None. With neither, the ranges come from the
    embeddings themselves (so they need at least two rows). Both are ignored by
    float32 / binary / ubinary, as in sentence-transformers.
    """
    check_precision(precision)
    embeddings = float_array(embeddings, "embeddings")
    dim = embeddings.shape[-1]
    if embeddings.ndim == 2 and embeddings.shape[0] == 0:  # nothing to calibrate or pack
        return np.zeros((0, stored_width(precision, dim)), dtype=precision_dtype(precision))
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision in BINARY_PRECISIONS:
        bits = np.packbits(embeddings > 0, axis=-1)  # [n, dim/8] uint8, first dimension in the high bit
        return bits if precision == "ubinary" else (bits - 128).astype(np.int8)
    return quantize_scalars(embeddings, precision, scalar_ranges(embeddings, precision, ranges, calibration_embeddings))


def scalar_ranges(embeddings: np.ndarray, precision: str, ranges, calibration_embeddings) -> np.ndarray:
    """The [2, dim] float32 ranges an int8 / uint8 quantisation uses: given, from calibration, or from the data."""
    dim = embeddings.shape[-1]
    if ranges is not None:
        ranges = np.asarray(ranges)
        if ranges.shape != (2, dim) or ranges.dtype.kind != "f":
            raise InputError(f"ranges must be a float array [2, {dim}] (per-dimension min and max), "
                             f"got {ranges.dtype} {list(ranges.shape)}")
    elif calibration_embeddings is not None:
        width = np.shape(calibration_embeddings)[-1] if np.ndim(calibration_embeddings) else None
        if width != dim:
            raise InputError(f"calibration_embeddings have {width} dimensions, the embeddings {dim}: "
                             f"calibrate with embeddings of the same model")
        ranges = quantization_ranges(calibration_embeddings)
    else:
        if embeddings.ndim == 1 or embeddings.shape[0] == 1:
            raise InputError(f"cannot compute {precision} quantization ranges from a single embedding: pass "
                             f"ranges or calibration_embeddings (a representative set of embeddings)")
        ranges = quantization_ranges(embeddings)
    return ranges.astype(np.float32, copy=False)


def quantize_scalars(embeddings: np.ndarray, precision: str, ranges: np.ndarray) -> np.ndarray:
    """[n, dim] floats -> bucket numbers between ranges[0] and ranges[1]: uint8 0..255, or int8 -128..127."""
    starts = ranges[0, :]  # [dim]
    steps = (ranges[1, :] - starts) / BUCKETS  # [dim] width of one bucket
    steps = np.where(steps == 0, 1, steps)  # a constant dimension: every value in bucket 0
    buckets = np.clip(np.floor((embeddings - starts) / steps), 0, BUCKETS)  # [n, dim] 0..255, still float
    return buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)


# ---------------------------------------------------------------- Hamming distance over packed bits
def as_ubinary(bits: np.ndarray) -> np.ndarray:
    """Packed bits as uint8, whichever of binary (int8, minus 128) or ubinary (uint8) they are stored in."""
    if bits.dtype == np.uint8:
        return bits
    if bits.dtype == np.int8:
        return (bits.astype(np.int16) + 128).astype(np.uint8)
    raise InputError(f"packed bits must be int8 (binary) or uint8 (ubinary), got {bits.dtype}")


def hamming_distances(query_bits: np.ndarray, corpus_bits: np.ndarray, block_rows: int = 65536) -> np.ndarray:
    """Bits in which each corpus row differs from the query: [bytes] and [n, bytes] uint8 -> [n] int32.

    XOR marks the differing bits, a popcount counts them. Works through the
    corpus block_rows rows at a time (a memory-mapped index is read once, in order).
    """
    out = np.empty(len(corpus_bits), dtype=np.int32)
    for start in range(0, len(corpus_bits), block_rows):
        block = np.asarray(corpus_bits[start:start + block_rows])  # [b, bytes] uint8
        out[start:start + len(block)] = popcount_rows(block ^ query_bits)
    return out


def popcount_rows(xor: np.ndarray) -> np.ndarray:
    """1 bits per row of a [b, bytes] uint8 array -> [b] int32.

    With numpy >= 2.0 and whole 64-bit words per row, np.bitwise_count on the
    rows viewed as uint64 (one hardware popcount per 8 bytes); otherwise
    popcount_rows_reference. The two agree exactly (tests/test_precision.py).
    """
    if hasattr(np, "bitwise_count") and xor.shape[1] % 8 == 0 and xor.flags.c_contiguous:
        return np.bitwise_count(xor.view(np.uint64)).sum(axis=1, dtype=np.int32)  # [b, bytes/8] -> [b]
    return popcount_rows_reference(xor)


def popcount_rows_reference(xor: np.ndarray) -> np.ndarray:
    """The plain twin of popcount_rows: a 256-entry table of bit counts, looked up byte by byte."""
    return BYTE_BITS[xor].sum(axis=1, dtype=np.int32)  # [b, bytes] -> [b]
