"""How close the int8 model stays to fp32: the whole multilingual test corpus, and a retrieval score.

Both models run the fast path on the e5 fixture (the fixture's weights are
dequantized from a 4-bit copy: see docs/quantization.md for how that may
flatter int8). Every line of tests/data/multilingual.txt is embedded, the
2,700 short lines with "query: ", the 150 long ones with "passage: ".

    cosine(int8, fp32) per line:  median >= 0.9999, 1st percentile >= 0.9995, minimum >= 0.999

Retrieval: tests/data/multilingual_groups.txt lists the lines that translate
the same message (scripts/make_translation_groups.py builds it from the
gettext catalogs the corpus comes from): 437 groups, 1,178 lines. Each of
those lines is a query against every other line of the corpus (2,849
candidates, "query: " on both sides, as e5 asks for symmetric tasks); the
rank is that of its best-scoring translation. Scores in points (percent):
mean reciprocal rank (MRR) and top-1 (the best candidate is a translation).
int8 must stay within 0.2 points of fp32 on MRR, and lose at most 0.2 on
top-1. (Top-1 moves in steps of 100 / 1,178 = 0.085 points: one query.)
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import minie5

from helpers import REPO

CORPUS = REPO / "tests" / "data" / "multilingual.txt"
GROUPS = REPO / "tests" / "data" / "multilingual_groups.txt"
SHORT_LINES = 2700  # scripts/make_test_corpus.py: CORPUS_SHORT short lines, then the long ones


def embed_corpus(model) -> np.ndarray:
    lines = CORPUS.read_text(encoding="utf-8").split("\n")[:-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", minie5.TruncationWarning)  # 15 long lines pass 512 tokens: both models alike
        return np.concatenate([model.encode(lines[:SHORT_LINES], prefix="query"),
                               model.encode(lines[SHORT_LINES:], prefix="passage")])


def translation_retrieval(embeddings: np.ndarray) -> tuple[float, float, int]:
    """(MRR, top-1, queries): each grouped line against all other lines; rank of its best translation."""
    groups = [[int(n) - 1 for n in line.split()] for line in GROUPS.read_text().splitlines()]
    scores = embeddings @ embeddings.T  # cosine: the rows are unit vectors
    np.fill_diagonal(scores, -np.inf)  # a line is not its own candidate
    ranks = []
    for group in groups:
        for i in group:
            best_translation = max(scores[i, j] for j in group if j != i)
            ranks.append(1 + int(np.count_nonzero(scores[i] > best_translation)))
    ranks = np.array(ranks)
    return 100 * float(np.mean(1 / ranks)), 100 * float(np.mean(ranks == 1)), len(ranks)


@pytest.mark.slow
def test_int8_stays_close_to_fp32(e5_dir, e5_model):
    int8_model = minie5.load(e5_dir, quantize="int8")
    fp32 = embed_corpus(e5_model)
    int8 = embed_corpus(int8_model)
    cos = (fp32 * int8).sum(axis=1)  # [2850]
    median, p1, worst = np.median(cos), np.percentile(cos, 1), cos.min()
    print(f"parity int8 e5 vs fp32, {len(cos)} lines: median cos {median:.6f}, 1st percentile {p1:.6f}, "
          f"min {worst:.6f} (line {int(cos.argmin()) + 1})")
    mrr_fp32, top1_fp32, queries = translation_retrieval(fp32)
    mrr_int8, top1_int8, _ = translation_retrieval(int8)
    print(f"parity int8 e5 translation retrieval, {queries} queries: MRR fp32 {mrr_fp32:.2f} int8 {mrr_int8:.2f} "
          f"({mrr_int8 - mrr_fp32:+.2f} points); top-1 fp32 {top1_fp32:.2f} int8 {top1_int8:.2f} "
          f"({top1_int8 - top1_fp32:+.2f})")
    assert median >= 0.9999 and p1 >= 0.9995 and worst >= 0.999
    assert abs(mrr_int8 - mrr_fp32) <= 0.2
    assert top1_int8 >= top1_fp32 - 0.2
