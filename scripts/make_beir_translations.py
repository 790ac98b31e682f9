#!/usr/bin/env python3
"""Build tests/data/beir_translations/: a retrieval set in the BEIR layout from the translation groups.

tests/data/multilingual_groups.txt (scripts/make_translation_groups.py) lists
the lines of tests/data/multilingual.txt that translate one message. For each
group, its first line is a query and the group's other lines are the relevant
documents (score 1); every other line of the corpus is a document too, the
query lines excepted (a query must not find itself). So: 437 queries, 2,413
documents (among them the 150 long passages, which no query judges relevant),
741 judgements.

    beir_translations/corpus.jsonl     {"_id": "line-N", "title": "", "text": line N}
    beir_translations/queries.jsonl    {"_id": "query-N", "text": line N}
    beir_translations/qrels/test.tsv   query-id, corpus-id, score, after a header line

Ids name the line numbers (1-based) of tests/data/multilingual.txt.
Usage: python scripts/make_beir_translations.py [--out DIR]   (then: minie5 eval DIR)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_test_corpus import CORPUS_SHORT  # noqa: E402  (the first CORPUS_SHORT lines are the short ones)

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "multilingual.txt"
GROUPS = REPO / "tests" / "data" / "multilingual_groups.txt"
OUT = REPO / "tests" / "data" / "beir_translations"


def build(lines: list[str], groups: list[list[int]]):
    """(queries, corpus, qrels): lists of (id, text), (id, text) and (query id, corpus id, score)."""
    query_lines = {group[0] for group in groups}
    queries = [(f"query-{group[0]}", lines[group[0] - 1]) for group in groups]
    corpus = [(f"line-{n}", text) for n, text in enumerate(lines, start=1) if n not in query_lines]
    qrels = [(f"query-{group[0]}", f"line-{n}", 1) for group in groups for n in group[1:]]
    return queries, corpus, qrels


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    lines = CORPUS.read_text(encoding="utf-8").split("\n")[:-1][:CORPUS_SHORT]
    groups = [[int(n) for n in line.split()] for line in GROUPS.read_text(encoding="utf-8").splitlines()]
    queries, corpus, qrels = build(lines, groups)
    (args.out / "qrels").mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "corpus.jsonl", ({"_id": i, "title": "", "text": text} for i, text in corpus))
    write_jsonl(args.out / "queries.jsonl", ({"_id": i, "text": text} for i, text in queries))
    (args.out / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels), encoding="utf-8")
    print(f"wrote {len(queries)} queries, {len(corpus)} documents and {len(qrels)} judgements to {args.out}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
