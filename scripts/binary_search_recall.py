#!/usr/bin/env python3
"""Binary search against float search: recall@10 and speed, on a corpus of 12,000 lines (docs/cli.md quotes it).

    python scripts/binary_search_recall.py --model DIR                    # the corpus below, 12,000 + 200 lines
    python scripts/binary_search_recall.py --model DIR --corpus FILE --lines 2000 --queries 50

The corpus. Without --corpus it is built deterministically from the same source
as tests/data/multilingual.txt (scripts/make_test_corpus.py): the translated
strings of the gettext catalogs under /usr/share/locale, every locale's strings
shuffled with a fixed seed and taken round-robin over the locales, each string
once, at most 300 characters; the first --lines strings are the corpus (embedded
as passages), the next --queries the queries (embedded as queries). With
--corpus FILE, its first lines and the ones after them. The corpus, its float
index and the query embeddings are kept in --workdir and reused.

Recall@10 is the share of float search's 10 best rows (exact cosine over every
row) that a binary search returns, averaged over the queries, for:

    bits at 0       sign bits of the embeddings (quantize_embeddings' "ubinary", as
                    sentence-transformers' binary search uses them)
    bits at mean    sign bits of the embeddings minus their mean (minie5 search --binary)

each with the top 10 by Hamming distance alone and after float rescoring of
10 x M candidates (M = --multipliers). Speed: the time per query of float
search (rows @ query over the float index) and of binary search (Hamming scan +
rescoring of 10 x 100 candidates), interleaved query by query, on the corpus and
on its rows repeated to --scale-rows rows (times only: repeated rows have no
meaningful recall). The load average is printed alongside.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import minie5  # noqa: E402
from minie5.embedding_precision import hamming_distances  # noqa: E402
from minie5.cli.search import RESCORE_MULTIPLIER, BinaryIndex, binary_search, build_binary_index, top_k  # noqa: E402

K = 10
MAX_CHARS = 300
SEED = 20240531


def catalog_lines(locale_dir: Path, count: int) -> list[str]:
    """The first `count` distinct strings of the locales' catalogs, round-robin over locales (see the docstring)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import make_test_corpus

    catalog = make_test_corpus.collect(locale_dir)
    rng = random.Random(SEED)
    streams = [make_test_corpus.interleave(domains, rng) for _, domains in sorted(catalog.items())]
    positions = [0] * len(streams)
    seen, lines = set(), []
    while len(lines) < count and any(p < len(s) for p, s in zip(positions, streams)):
        for i, stream in enumerate(streams):
            while positions[i] < len(stream):
                text = stream[positions[i]]
                positions[i] += 1
                if text not in seen and len(text) <= MAX_CHARS:
                    seen.add(text)
                    lines.append(text)
                    break
            if len(lines) == count:
                break
    if len(lines) < count:
        raise SystemExit(f"only {len(lines)} distinct strings under {locale_dir}, {count} needed")
    return lines


def embeddings(model, workdir: Path, corpus: list[str], queries: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Float corpus index [n, dim] (memory-mapped, kept in workdir) and query embeddings [q, dim]."""
    corpus_file, index_file, queries_file = workdir / "corpus.txt", workdir / "corpus.npy", workdir / "queries.npy"
    text = "".join(line + "\n" for line in corpus)
    if not (corpus_file.is_file() and corpus_file.read_text(encoding="utf-8") == text and index_file.is_file()):
        corpus_file.write_text(text, encoding="utf-8")
        start = time.perf_counter()
        np.save(index_file, model.encode_passages(corpus, show_progress=5))
        print(f"embedded {len(corpus)} corpus lines in {time.perf_counter() - start:.0f} s")
        np.save(queries_file, model.encode_queries(queries))
    return np.load(index_file, mmap_mode="r"), np.load(queries_file)


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def recall_table(vectors: np.ndarray, queries: np.ndarray, truth, multipliers: list[int]) -> list[str]:
    dense = np.asarray(vectors)
    indexes = {"bits at 0": BinaryIndex(bits=minie5.quantize_embeddings(dense, "ubinary"),
                                        center=np.zeros(dense.shape[1], np.float32)),
               "bits at mean": build_binary_index(vectors)}
    rows = ["| bits | Hamming only | " + " | ".join(f"rescored {K} x {m}" for m in multipliers) + " |",
            "|---" * (2 + len(multipliers)) + "|"]
    for name, index in indexes.items():
        hamming_only = [hamming_top(index, bits) for bits in index.pack(queries)]
        cells = [f"{recall(hamming_only, truth):.3f}"]
        for m in multipliers:
            found = binary_search(index, vectors, queries, K, K * m)
            cells.append(f"{recall([[row for row, _ in f] for f in found], truth):.3f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def hamming_top(index: BinaryIndex, query_bits: np.ndarray) -> list[int]:
    """The K rows closest in Hamming distance, closest first (ties in corpus order)."""
    return np.argsort(hamming_distances(query_bits, index.bits), kind="stable")[:K].tolist()


def timings(vectors: np.ndarray, queries: np.ndarray, index: BinaryIndex, multiplier: int) -> dict:
    """Median ms per query of float search and binary search, interleaved query by query."""
    float_ms, binary_ms = [], []
    for query in queries:
        start = time.perf_counter()
        top_k(np.asarray(vectors) @ query, K)
        float_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        binary_search(index, vectors, query[None], K, K * multiplier)
        binary_ms.append((time.perf_counter() - start) * 1000)
    return {"float": float(np.median(float_ms)), "binary": float(np.median(binary_ms))}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("MINIE5_MODEL") or minie5.DEFAULT_MODEL)
    parser.add_argument("--corpus", type=Path, default=None, help="a text file instead of the catalogs")
    parser.add_argument("--locale-dir", type=Path, default=Path("/usr/share/locale"))
    parser.add_argument("--lines", type=int, default=12000, help="corpus lines (default 12000)")
    parser.add_argument("--queries", type=int, default=200, help="query lines, after the corpus (default 200)")
    parser.add_argument("--multipliers", type=int, nargs="+", default=[1, 5, 10, 20, 50, 100])
    parser.add_argument("--scale-rows", type=int, default=1_000_000, help="rows for the second timing (0: none)")
    parser.add_argument("--workdir", type=Path, default=Path("binary-search-recall"))
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    total = args.lines + args.queries
    if args.corpus:
        lines = args.corpus.read_text(encoding="utf-8").splitlines()[:total]
        if len(lines) < total:
            raise SystemExit(f"{args.corpus} has {len(lines)} lines, {total} needed")
    else:
        lines = catalog_lines(args.locale_dir, total)
    corpus, query_texts = lines[:args.lines], lines[args.lines:]
    vectors, queries = embeddings(minie5.load(args.model), args.workdir, corpus, query_texts)
    dense = np.asarray(vectors)
    truth = [top_k(dense @ q, K).tolist() for q in queries]
    print(f"corpus {len(corpus)} lines, {len(queries)} queries; model {args.model}; recall@{K} against float search")
    table = recall_table(vectors, queries, truth, args.multipliers)
    print("\n".join(table))

    index = build_binary_index(vectors)
    sizes = f"float index {dense.nbytes / 1e6:.1f} MB, binary index {index.bits.nbytes / 1e6:.2f} MB"
    results = {"table": table, "timings": {len(dense): timings(vectors, queries, index, RESCORE_MULTIPLIER)}}
    if args.scale_rows:
        repeats = -(-args.scale_rows // len(dense))
        big_vectors = np.tile(dense, (repeats, 1))[:args.scale_rows]
        big_index = BinaryIndex(bits=np.tile(index.bits, (repeats, 1))[:args.scale_rows], center=index.center)
        results["timings"][args.scale_rows] = timings(big_vectors, queries[:50], big_index, RESCORE_MULTIPLIER)
    print(f"ms per query, median (binary: Hamming over every row + float rescoring of {K} x {RESCORE_MULTIPLIER}); "
          f"{sizes}")
    for rows, t in results["timings"].items():
        print(f"  {rows:>9} rows: float search {t['float']:.2f} ms, binary search {t['binary']:.2f} ms "
              f"({t['float'] / t['binary']:.1f}x)")
    print(f"numpy {np.__version__}; load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    return results


if __name__ == "__main__":
    main()
