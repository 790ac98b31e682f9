"""How close the int8 model stays to fp32: the whole multilingual test corpus, and a retrieval score.

Both models run the fast path on the e5 fixture (its weights are dequantized
from a 4-bit copy: docs/quantization.md says how that may flatter int8).
Every line of tests/data/multilingual.txt is embedded, the 2,700 short lines
with "query: ", the 150 long ones with "passage: " (scripts/int8_ablation.py
holds the measures, and its table the same figures for other int8 schemes).

    cosine(int8, fp32) per line:  median >= 0.9999, 1st percentile >= 0.9995, minimum >= 0.999

Retrieval: tests/data/multilingual_groups.txt lists the lines that translate
the same message (scripts/make_translation_groups.py builds it from the
gettext catalogs the corpus comes from): 437 groups, 1,178 lines. Each of
those lines is a query against every other line of the corpus (2,849
candidates); its rank is that of its best-scoring translation. Scores in
points (percent): mean reciprocal rank (MRR) and top-1 (the best candidate is
a translation). int8 must stay within 0.2 points of fp32 on MRR, and lose at
most 0.2 on top-1, which moves in steps of 100 / 1,178 = 0.085 points (one query).
"""
from __future__ import annotations

import pytest

import minie5

from helpers import load_script


@pytest.mark.slow
def test_int8_stays_close_to_fp32(e5_dir, e5_model):
    measures = load_script("int8_ablation.py")
    fp32 = measures.embed_corpus(e5_model)
    int8 = measures.embed_corpus(minie5.load(e5_dir, quantize="int8"))
    c = measures.closeness(int8, fp32)
    print(f"parity int8 e5 vs fp32, {len(fp32)} lines: median cos {c['median']:.6f}, 1st percentile {c['p1']:.6f}, "
          f"min {c['min']:.6f} (line {c['worst_line']})")
    base, got = measures.translation_retrieval(fp32), measures.translation_retrieval(int8)
    print(f"parity int8 e5 translation retrieval, {got['queries']} queries: MRR fp32 {base['mrr']:.2f} int8 "
          f"{got['mrr']:.2f} ({got['mrr'] - base['mrr']:+.2f} points); top-1 fp32 {base['top1']:.2f} int8 "
          f"{got['top1']:.2f} ({got['top1'] - base['top1']:+.2f})")
    assert c["median"] >= 0.9999 and c["p1"] >= 0.9995 and c["min"] >= 0.999
    assert abs(got["mrr"] - base["mrr"]) <= 0.2
    assert got["top1"] >= base["top1"] - 0.2
