#!/usr/bin/env python3
"""Build tests/data/multilingual_groups.txt: which lines of the test corpus translate the same message.

tests/data/multilingual.txt (scripts/make_test_corpus.py) holds translations
(msgstr) from the gettext catalogs under /usr/share/locale. This script looks
each of its short lines up in the same catalogs: a line whose text is the
translation of exactly one English message (msgid, with its context) belongs
to that message; a line that translates several messages, or none, is left
out. Messages with two or more lines in the corpus make a group: translations
of one message into different languages (or by different projects).

Output: one group per line, the 1-based line numbers of the corpus, separated
by spaces, groups in the order of their first line. The tests use the groups
for a retrieval score: a line "finds its translation" when the corpus line
most similar to it (itself excluded) is in its group (tests/test_int8_quality.py).

Usage: python scripts/make_translation_groups.py [--locale-dir /usr/share/locale]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_test_corpus import CORPUS_SHORT, read_mo  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "multilingual.txt"
OUT = REPO / "tests" / "data" / "multilingual_groups.txt"


def message_of_lines(lines: list[str], locale_dir: Path) -> dict[int, str]:
    """corpus line index -> the one msgid it translates (lines translating several, or none, left out)."""
    wanted = {text: i for i, text in enumerate(lines)}
    sources = defaultdict(set)  # line index -> msgids it is a translation of
    for lang_dir in sorted(p for p in locale_dir.iterdir() if p.is_dir()):
        for mo in sorted((lang_dir / "LC_MESSAGES").glob("*.mo")):
            for msgid, msgstr in read_mo(mo):
                for form in msgstr.split("\x00"):  # plural forms
                    if form in wanted:
                        sources[wanted[form]].add(msgid.split("\x00")[0])
    return {i: next(iter(ids)) for i, ids in sources.items() if len(ids) == 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--locale-dir", type=Path, default=Path("/usr/share/locale"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    lines = CORPUS.read_text(encoding="utf-8").split("\n")[:-1][:CORPUS_SHORT]  # the short lines
    by_message = defaultdict(list)
    for i, message in sorted(message_of_lines(lines, args.locale_dir).items()):
        by_message[message].append(i + 1)
    groups = sorted((g for g in by_message.values() if len(g) > 1), key=lambda g: g[0])
    args.out.write_text("".join(" ".join(map(str, g)) + "\n" for g in groups), encoding="utf-8")
    print(f"wrote {len(groups)} groups ({sum(map(len, groups))} lines) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
