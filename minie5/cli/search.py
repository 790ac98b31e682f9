"""Nearest corpus rows for query embeddings: exact float search, and binary search with float rescoring.

    float search      score every corpus row: rows @ query (cosine, rows and
                      query unit length); keep the k best.
    binary search     1. Hamming: compare the query's bits with every row's bits
                         (one bit per dimension: 384 bits = 48 bytes a row, 1/32
                         of the floats) and keep the `candidates` closest rows;
                      2. rescoring: score only those rows in float, from the
                         float index memory-mapped on disk, and keep the k best.

The scores printed are exact cosines either way; binary search can only miss a
row whose bits put it outside the candidates. Recall against float search and
speed, measured: docs/cli.md (scripts/binary_search_recall.py).

The bits of the binary index are sign bits of the embeddings minus their mean
(`center`), not of the embeddings themselves as in quantize_embeddings'
"ubinary": e5's embeddings share a large common component (two unrelated texts
still score about 0.8), which makes the sign of most dimensions the same for
every text; measured on 12,000 lines, sign bits at 0 kept 8% of the float top 10,
bits around the mean 41% before rescoring (docs/cli.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.files import atomic_path
from ..embedding_precision import hamming_distances

BINARY_INDEX_SUFFIX = ".binary.npz"  # docs.npy (float index) -> docs.binary.npz
BLOCK_ROWS = 65536  # rows of the float index read at a time while building the binary index
RESCORE_MULTIPLIER = 100  # `minie5 search --binary`: candidates rescored in float per result (k x 100)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, best first; ties keep corpus order."""
    return np.argsort(-scores, kind="stable")[:k]


class RunningTopK:
    """The k best corpus rows of each query, kept while corpus blocks go past one at a time.

    Memory is [q, k + block rows] whatever the size of the corpus. Ties keep
    corpus order, as top_k over all the scores at once would: the rows kept so
    far come before the block's, and the sort is stable.
    """

    def __init__(self, queries: np.ndarray, k: int):
        self.queries = queries  # [q, dim]
        self.k = k
        self.rows = np.empty((len(queries), 0), dtype=np.int64)  # [q, <= k] best rows so far, best first
        self.scores = np.empty((len(queries), 0), dtype=np.float32)  # [q, <= k] their scores
        self.seen = 0  # corpus rows scored so far

    def add(self, block: np.ndarray) -> None:
        """Score the next corpus rows [b, dim] against every query and keep the k best of each."""
        scores = (block @ self.queries.T).T  # [b, dim] x [dim, q] -> [q, b]
        rows = np.broadcast_to(np.arange(self.seen, self.seen + len(block)), scores.shape)  # [q, b]
        all_scores = np.concatenate([self.scores, scores], axis=1)  # [q, kept + b]
        all_rows = np.concatenate([self.rows, rows], axis=1)
        best = np.argsort(-all_scores, axis=1, kind="stable")[:, :self.k]  # [q, <= k]
        self.scores = np.take_along_axis(all_scores, best, axis=1)
        self.rows = np.take_along_axis(all_rows, best, axis=1)
        self.seen += len(block)

    def results(self) -> list[list[tuple[int, float]]]:
        """Per query, its k (row, score) best first."""
        return [[(int(i), float(s)) for i, s in zip(rows, scores)] for rows, scores in zip(self.rows, self.scores)]


def float_search(blocks, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """Exact search: corpus blocks [b, dim] (in order) x queries [q, dim] -> per query, k (row, score) best first.

    One block of scores at a time (RunningTopK): memory does not grow with the corpus."""
    top = RunningTopK(queries, k)
    for block in blocks:
        top.add(np.asarray(block))
    return top.results()


@dataclass(frozen=True)
class BinaryIndex:
    """The in-memory part of binary search: one bit per dimension of each corpus embedding."""
    bits: np.ndarray  # [rows, ceil(dim / 8)] uint8: bit d of row i is 1 where embedding[i, d] > center[d]
    center: np.ndarray  # [dim] float32: the threshold of each dimension, the mean corpus embedding

    def pack(self, embeddings: np.ndarray) -> np.ndarray:
        """Embeddings [n, dim] -> their bits [n, bytes], as the index holds the corpus."""
        return np.packbits(embeddings > self.center, axis=-1)  # most significant bit first, as numpy.packbits

    def candidates(self, query_bits: np.ndarray, count: int) -> np.ndarray:
        """The `count` rows whose bits differ least from the query's [bytes]: indices in corpus order."""
        distances = hamming_distances(query_bits, self.bits)  # [rows]
        if count >= len(distances):
            return np.arange(len(distances))
        # the count smallest distances; rows tied at the cut-off distance are taken in corpus order
        cutoff = np.partition(distances, count - 1)[count - 1]
        below = np.flatnonzero(distances < cutoff)
        at = np.flatnonzero(distances == cutoff)[:count - len(below)]
        return np.sort(np.concatenate([below, at]))


def build_binary_index(vectors: np.ndarray) -> BinaryIndex:
    """A float index [rows, dim] (memory-mapped is fine: read in blocks, twice) -> its BinaryIndex."""
    rows, dim = vectors.shape
    total = np.zeros(dim, dtype=np.float64)
    for start in range(0, rows, BLOCK_ROWS):
        total += np.asarray(vectors[start:start + BLOCK_ROWS], dtype=np.float64).sum(axis=0)
    center = (total / max(rows, 1)).astype(np.float32)  # [dim]
    index = BinaryIndex(bits=np.empty((rows, (dim + 7) // 8), dtype=np.uint8), center=center)
    for start in range(0, rows, BLOCK_ROWS):
        index.bits[start:start + BLOCK_ROWS] = index.pack(np.asarray(vectors[start:start + BLOCK_ROWS]))
    return index


def binary_search(index: BinaryIndex, vectors: np.ndarray, queries: np.ndarray, k: int,
                  candidates: int) -> list[list[tuple[int, float]]]:
    """Hamming candidates, then float rescoring: per query, k (row, cosine) best first.

    vectors: the float index [rows, dim] the bits were built from; only the
    candidates' rows are read. With candidates >= rows the result is float_search's.
    """
    results = []
    for query, query_bits in zip(queries, index.pack(queries)):
        rows = index.candidates(query_bits, max(candidates, k))  # [c] in corpus order
        scores = np.asarray(vectors[rows]) @ query  # [c] exact cosines
        best = top_k(scores, k)  # ties keep corpus order, as float_search
        results.append([(int(rows[i]), float(scores[i])) for i in best])
    return results


# ---------------------------------------------------------------- the binary index on disk
def binary_index_path(float_index: Path) -> Path:
    """Where the binary index of a float index lives: docs.npy -> docs.binary.npz."""
    return float_index.with_name(float_index.name.removesuffix(".npy") + BINARY_INDEX_SUFFIX)


def save_binary_index(path: Path, index: BinaryIndex) -> None:
    """Write bits and center to an .npz file, complete or absent."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, bits=index.bits, center=index.center)


def saved_binary_index(path: Path, float_index: Path, rows: int, dim: int) -> tuple[BinaryIndex | None, str]:
    """The binary index saved at path if it was built from the float index as it is now; else None, and why not."""
    if not path.is_file():
        return None, f"{path} does not exist"
    if os.stat(path).st_mtime < os.stat(float_index).st_mtime:
        return None, f"{path} is older than {float_index}"
    try:
        with np.load(path) as saved:
            index = BinaryIndex(bits=saved["bits"], center=saved["center"])
    except (ValueError, OSError, KeyError) as e:
        return None, f"{path} is not a readable binary index ({e})"
    width = (dim + 7) // 8
    if (index.bits.dtype, index.bits.shape, index.center.dtype, index.center.shape) != \
            (np.uint8, (rows, width), np.float32, (dim,)):
        return None, (f"{path} holds bits {index.bits.dtype} {list(index.bits.shape)} and center "
                      f"{index.center.dtype} {list(index.center.shape)}, the corpus needs uint8 [{rows}, {width}] "
                      f"and float32 [{dim}]")
    return index, ""


def binary_index_for(float_index: Path, rows: int, dim: int) -> tuple[BinaryIndex, str]:
    """The binary index of a float index: the one saved beside it if it still fits, else built from the
    float index and saved; and a line saying which (for the command line)."""
    path = binary_index_path(float_index)
    index, why_not = saved_binary_index(path, float_index, rows, dim)
    if index is not None:
        return index, f"using the binary index saved in {path}"
    rebuilt = f"{why_not}: built it again; " if path.exists() else ""
    index = build_binary_index(np.load(float_index, mmap_mode="r"))
    save_binary_index(path, index)
    return index, f"{rebuilt}saved the binary index in {path}"
