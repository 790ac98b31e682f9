#!/usr/bin/env python3
"""What each int8 choice costs in quality: the ablation table of docs/performance.md ("int8").

    python scripts/int8_ablation.py --model DIR              # every row (about 20 minutes on 2 cores)
    python scripts/int8_ablation.py --model DIR --ort        # plus ONNX Runtime float32 (a check) and its dynamic int8
    python scripts/int8_ablation.py --model DIR --rows shipped,int8-row

Every row embeds the whole test corpus (tests/data/multilingual.txt: the 2,700
short lines with "query: ", the 150 long ones with "passage: ") and compares
with minie5 fp32 on the same fast path: cosine per line (median, 1st
percentile, minimum) and the translation-retrieval score of
tests/test_int8_quality.py (MRR and top-1, in points).

Rows: which blocks are int8 (the four linear layers of every encoder layer:
q|k|v, attention output, FFN up, FFN down; the word-embedding table), and how
a linear layer's input is rounded: int16 or int8, one scale per token row or
one per product ("tensor": the largest |value| of the batch's packed tokens,
as ONNX Runtime's dynamic quantisation takes one per tensor). Weights are
always int8 with one scale per output channel (row). "shipped" is what
minie5.load(quantize="int8") runs, on the int8 kernels; the other rows run the
fast path with each int8 product computed as reference_int8.linear computes it,
in the row's scheme (AblationLinear: the rounding in NumPy, the integer
product on the int8 kernel, bit for bit the NumPy twin's).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import minie5  # noqa: E402
from minie5.engine import kernels_int8 as int8  # noqa: E402
from minie5 import reference_int8
from minie5.engine.encoder import FastEncoder  # noqa: E402
from minie5.model import Model  # noqa: E402
from minie5.checkpoint.quantize_model import BLOCKS, quantize_table, quantized_names  # noqa: E402
from minie5.checkpoint.weights import Weights  # noqa: E402
from minie5.engine.workers import POOL  # noqa: E402

CORPUS = REPO / "tests" / "data" / "multilingual.txt"
GROUPS = REPO / "tests" / "data" / "multilingual_groups.txt"
SHORT_LINES = 2700  # scripts/make_test_corpus.py: CORPUS_SHORT short lines, then the long ones
ALL = tuple(BLOCKS)  # quantize.BLOCKS: qkv, attention-output, ffn-up, ffn-down, word-embeddings


class Row(NamedTuple):
    name: str
    blocks: tuple  # which BLOCKS are int8
    bits: int  # activations rounded to int16 or int8
    per: str  # one activation scale per "row" or per "tensor"
    label: str


ROWS = [
    Row("int8-tensor", ALL, 8, "tensor", "int8 per tensor x int8 per channel (ONNX Runtime's scheme)"),
    Row("int8-row", ALL, 8, "row", "int8 per row x int8 per channel"),
    Row("int8-row-down-fp32", tuple(b for b in ALL if b != "ffn-down"), 8, "row", "the same, FFN down fp32"),
    Row("int16-tensor", ALL, 16, "tensor", "int16 per tensor x int8 per channel"),
    Row("shipped", ALL, 16, "row", "int16 per row x int8 per channel (minie5 int8)"),
    Row("int16-row-down-fp32", tuple(b for b in ALL if b != "ffn-down"), 16, "row", "the same, FFN down fp32"),
    Row("int16-row-words-fp32", tuple(b for b in ALL if b != "word-embeddings"), 16, "row",
        "the same, word embeddings fp32"),
] + [Row("only-" + b, (b,), 16, "row", f"int16 per row, only {b} int8") for b in ALL]


# ---------------------------------------------------------------- the measures (shared with the tests)
def embed_corpus(model) -> np.ndarray:
    """The test corpus, embedded as the quality test embeds it: [2850, H], unit rows."""
    lines = CORPUS.read_text(encoding="utf-8").split("\n")[:-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", minie5.TruncationWarning)  # 15 long lines pass 512 tokens: all rows alike
        return np.concatenate([model.encode(lines[:SHORT_LINES], prefix="query"),
                               model.encode(lines[SHORT_LINES:], prefix="passage")])


def closeness(embeddings: np.ndarray, fp32: np.ndarray) -> dict:
    """Cosine per line against fp32: median, 1st percentile, minimum (and the worst line, 1-based)."""
    cos = (embeddings * fp32).sum(axis=1)
    return {"median": float(np.median(cos)), "p1": float(np.percentile(cos, 1)), "min": float(cos.min()),
            "worst_line": int(cos.argmin()) + 1}


def translation_retrieval(embeddings: np.ndarray) -> dict:
    """Each line of a translation group against every other corpus line: MRR and top-1, in points.

    The rank of a query is that of its best-scoring translation among the 2,849
    other lines (tests/data/multilingual_groups.txt; scripts/make_translation_groups.py).
    """
    groups = [[int(n) - 1 for n in line.split()] for line in GROUPS.read_text().splitlines()]
    scores = embeddings @ embeddings.T  # cosine: the rows are unit vectors
    np.fill_diagonal(scores, -np.inf)  # a line is not its own candidate
    ranks = []
    for group in groups:
        for i in group:
            best_translation = max(scores[i, j] for j in group if j != i)
            ranks.append(1 + int(np.count_nonzero(scores[i] > best_translation)))
    ranks = np.array(ranks)
    return {"mrr": 100 * float(np.mean(1 / ranks)), "top1": 100 * float(np.mean(ranks == 1)), "queries": len(ranks)}


# ---------------------------------------------------------------- the rows
class AblationLinear:
    """The plan's linear engine for any rounding scheme: int8 weights' products as reference_int8.linear computes them.

    The input is rounded by reference_int8.quantize_activation_rows with the
    weight's scheme (int16 or int8, per row or per tensor); the integer product
    and the rescaling run on int8.linear_block, which equals
    reference_int8.integer_product and the float steps of reference_int8.linear
    bit for bit (tests/test_int8.py) and is many times faster than NumPy's
    float64 product. Float weights go to the plan's float engine.
    """

    def __init__(self, float_linear):
        self.float_linear = float_linear
        self.packed = {}  # id(weight) -> (weight, PackedMatrix)

    def __call__(self, x, weight, bias, out):
        if not isinstance(weight, reference_int8.QuantizedMatrix):
            self.float_linear(x, weight, bias, out)
            return
        if id(weight) not in self.packed:
            self.packed[id(weight)] = weight, int8.pack(weight.values, weight.scales)
        packed = self.packed[id(weight)][1]
        M, K = x.shape
        bound = reference_int8.activation_bound(K, weight.activation_bits)
        xq, x_scales = reference_int8.quantize_activation_rows(x, bound, weight.activation_scale)
        xq = np.pad(xq, ((0, 0), (0, K % 2)))  # rows of even length, as int8.quantize_rows leaves them
        N, threads = out.shape[1], numba.get_num_threads()
        width = int8.PANELS * int8.PANEL
        cuts = [min(N, (N * t // threads + width - 1) // width * width) for t in range(threads)] + [N]
        POOL.run(int8.linear_block, [(xq, x_scales, packed.panels, packed.scales, bias, out, 0, M, cuts[t],
                                      cuts[t + 1]) for t in range(threads) if cuts[t + 1] > cuts[t]])


def ablation_model(float_model, row: Row):
    """A Model on the float model's files whose chosen blocks are int8, run with AblationLinear."""
    base, config = float_model.weights, float_model.config
    weights = Weights(base.path)
    weights.update(base)
    weights.fd, weights.file_offsets = base.fd, dict(base.file_offsets)
    names = quantized_names(config, keep_float=tuple(b for b in ALL if b not in row.blocks))
    for name in names:
        weights[name] = reference_int8.QuantizedMatrix(*quantize_table(base, name), activation_bits=row.bits,
                                                       activation_scale=row.per)
        weights.file_offsets.pop(name, None)
    model = Model(float_model.model_dir, config, weights, float_model.tokenizer)
    encoder = FastEncoder(config, weights)  # float plans; int8 weights reach the linear engine as they are
    encoder.small_plan = encoder.small_plan._replace(linear=AblationLinear(encoder.small_plan.linear))
    encoder.large_plan = encoder.large_plan._replace(linear=AblationLinear(encoder.large_plan.linear))
    model._encoder = encoder
    return model


def ort_embeddings(engine_name: str, float_model) -> tuple[np.ndarray, str]:
    """ONNX Runtime (bench.py's "ort" or "ort-int8" engine) on the corpus: the token ids minie5 embeds.

    The texts get the model's own prompts for "query" and "passage" (as
    embed_corpus's encode(prefix=...) gives them) and are cut to the model's
    max_length (512 for e5, 256 for all-MiniLM-L6-v2), so both engines see the
    same ids. The "ort" float32 row checks that: its cosine to minie5 float32
    must be about 1.
    """
    sys.path.insert(0, str(REPO / "scripts"))
    import bench
    model_dir, tokenizer, config = Path(float_model.model_dir), float_model.tokenizer, float_model.config
    cache_root = Path(os.environ.get("MINIE5_BENCH_CACHE", Path.home() / ".cache" / "minie5-bench")).expanduser()
    onnx_path, note = bench.prepare_onnx(model_dir, cache_root, allow_export=True)
    if onnx_path is None:
        raise SystemExit(f"--ort: no ONNX model: {note}")
    engine = bench.make_engine(engine_name, onnx_path)
    engine.import_libs()
    engine.load(model_dir)
    lines = CORPUS.read_text(encoding="utf-8").split("\n")[:-1]
    texts = ([config.prompt("query") + t for t in lines[:SHORT_LINES]]
             + [config.prompt("passage") + t for t in lines[SHORT_LINES:]])
    ids, _ = tokenizer.encode(texts, tokenizer.max_length)
    out = np.empty((len(ids), config.hidden_size), np.float32)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # batches of similar lengths, as minie5's
    for start in range(0, len(order), 32):
        rows = order[start:start + 32]
        out[rows] = engine.embed_ids([ids[i] for i in rows])
    return out, engine.describe()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a float model (default: $MINIE5_MODEL, else the hub id)")
    parser.add_argument("--rows", default=None, help=f"comma-separated rows (default all: "
                                                      f"{', '.join(r.name for r in ROWS)})")
    parser.add_argument("--ort", action="store_true", help="add ONNX Runtime's dynamic int8 (needs the bench extra)")
    args = parser.parse_args(argv)
    float_model = minie5.load(args.model or os.environ.get("MINIE5_MODEL") or minie5.DEFAULT_MODEL)
    wanted = args.rows.split(",") if args.rows else [r.name for r in ROWS]
    unknown = set(wanted) - {r.name for r in ROWS}
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    t0 = time.perf_counter()
    fp32 = embed_corpus(float_model)
    base = translation_retrieval(fp32)
    print(f"model {float_model.model_dir}; corpus {CORPUS.name}: {len(fp32)} lines; translation queries "
          f"{base['queries']}; fp32 MRR {base['mrr']:.2f}, top-1 {base['top1']:.2f} ({time.perf_counter() - t0:.0f} s)")
    print("| activations x weights, int8 blocks | median cos | 1st pct | min | MRR (fp32 "
          f"{base['mrr']:.2f}) | top-1 (fp32 {base['top1']:.2f}) |")
    print("|---|---|---|---|---|---|")

    def report(label, embeddings):
        c, r = closeness(embeddings, fp32), translation_retrieval(embeddings)
        print(f"| {label} | {c['median']:.6f} | {c['p1']:.6f} | {c['min']:.6f} | {r['mrr']:.2f} "
              f"({r['mrr'] - base['mrr']:+.2f}) | {r['top1']:.2f} ({r['top1'] - base['top1']:+.2f}) |", flush=True)

    for row in ROWS:
        if row.name not in wanted:
            continue
        blocks = "all" if row.blocks == ALL else ", ".join(row.blocks)
        if row.name == "shipped":  # the real thing: minie5.load(quantize="int8") on the int8 kernels
            model = minie5.load(float_model.model_dir, quantize="int8")
        else:
            model = ablation_model(float_model, row)
        report(f"{row.label}; int8: {blocks}", embed_corpus(model))
    if args.ort:
        embeddings, described = ort_embeddings("ort", float_model)
        report(f"ONNX Runtime float32, the check that both engines embed the same ids ({described})", embeddings)
        embeddings, described = ort_embeddings("ort-int8", float_model)
        report(f"ONNX Runtime quantize_dynamic(per_channel=True, QInt8) ({described})", embeddings)
    print(f"({time.perf_counter() - t0:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
