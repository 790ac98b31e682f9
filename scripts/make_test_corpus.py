#!/usr/bin/env python3
"""Build tests/data/multilingual.txt, the tokenizer parity corpus.

Source: the compiled gettext message catalogs (.mo files) installed under
/usr/share/locale on a Debian/Ubuntu system (iso-codes country, language,
currency and script names; glib, gtk, coreutils, Linux-PAM, PackageKit,
xkeyboard-config, shared-mime-info, ... UI messages). Only the translations
(msgstr) are used, across every installed language: CJK, Arabic, Hebrew,
Devanagari and other Indic scripts, Thai, Lao, Khmer, Cyrillic, Greek,
Georgian, Armenian, Ethiopic, Korean, Vietnamese, Latin-script languages...

Licence: these catalogs are translation data of free software projects,
distributed under the LGPL/GPL (iso-codes: LGPL-2.1+; glib/gtk: LGPL;
coreutils, grep, ...: GPL-3+). The corpus is a small sample of short
translated strings, used here only as test input for the tokenizer; the
copyright stays with the translators of those projects.

Output: one string per line, UTF-8, "\n" line endings. Strings containing any
character that str.splitlines() treats as a line boundary are skipped, so
the file reads back identically with read_text().split("\n") or splitlines().
About CORPUS_SHORT short strings are followed by CORPUS_LONG long lines, each
a concatenation of strings of one language (hundreds of tokens), to exercise
truncation at 512 tokens.

The output is deterministic for a given set of installed catalogs: files are
read in sorted order and the selection uses a fixed-seed random generator.

Usage: python scripts/make_test_corpus.py [--locale-dir /usr/share/locale] [--out tests/data/multilingual.txt]
"""
from __future__ import annotations

import argparse
import random
import struct
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS_SHORT = 2700
CORPUS_LONG = 150
MAX_SHORT_CHARS = 300
LONG_MIN_CHARS, LONG_MAX_CHARS = 700, 1400
MAX_BYTES = 400_000
SEED = 20240531

# Characters str.splitlines() splits on: never inside a corpus line.
LINE_BREAKS = set("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")

# Locales whose scripts we want well represented: drawn from three times as often.
PRIORITY = {
    "ja", "zh_CN", "zh_TW", "zh_HK", "ko", "ar", "fa", "ur", "ug", "ckb", "he", "yi",
    "hi", "mr", "ne", "bn", "pa", "gu", "ta", "te", "kn", "ml", "si", "or",
    "th", "lo", "km", "my", "ru", "uk", "be", "bg", "sr", "mk", "kk", "el",
    "ka", "hy", "am", "ti", "vi", "tr", "pl", "cs", "de", "fr", "es", "pt_BR",
    "dz", "iu", "chr",
}


def read_mo(path: Path) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a compiled gettext catalog, decoded with its charset."""
    data = path.read_bytes()
    if len(data) < 28:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0x950412DE:
        order = "<"
    elif magic == 0xDE120495:
        order = ">"
    else:
        return []
    _, count, orig_off, trans_off = struct.unpack(order + "4I", data[4:20])
    raw = []
    for i in range(count):
        olen, ooff = struct.unpack(order + "2I", data[orig_off + 8 * i: orig_off + 8 * i + 8])
        tlen, toff = struct.unpack(order + "2I", data[trans_off + 8 * i: trans_off + 8 * i + 8])
        raw.append((data[ooff: ooff + olen], data[toff: toff + tlen]))
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":
            for line in msgstr.decode("ascii", "replace").split("\n"):
                if line.lower().startswith("content-type:") and "charset=" in line:
                    charset = line.split("charset=", 1)[1].strip() or "utf-8"
    pairs = []
    for msgid, msgstr in raw:
        if msgid == b"":
            continue  # header
        try:
            pairs.append((msgid.decode(charset), msgstr.decode(charset)))
        except (UnicodeDecodeError, LookupError):
            continue
    return pairs


def usable(s: str) -> bool:
    return bool(s.strip()) and not (LINE_BREAKS & set(s)) and "\x00" not in s


def collect(locale_dir: Path) -> dict[str, dict[str, list[str]]]:
    """locale -> domain -> sorted unique translated strings."""
    out: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for lang_dir in sorted(p for p in locale_dir.iterdir() if p.is_dir()):
        lang = lang_dir.name
        if lang == "en" or lang.startswith("en_") or lang.startswith("en@"):
            continue  # translations into English are mostly identical to the msgids
        for mo in sorted((lang_dir / "LC_MESSAGES").glob("*.mo")):
            strings = set()
            for msgid, msgstr in read_mo(mo):
                for form in msgstr.split("\x00"):  # plural forms
                    if usable(form) and form != msgid.split("\x00")[0]:
                        strings.add(form)
            if strings:
                out[lang][mo.stem] = sorted(strings)
    return out


def interleave(domains: dict[str, list[str]], rng: random.Random) -> list[str]:
    """A locale's strings, shuffled per domain and then taken round-robin over the domains."""
    queues = []
    for name in sorted(domains):
        items = list(domains[name])
        rng.shuffle(items)
        queues.append(items)
    out = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop())
    return out


def build(catalog: dict[str, dict[str, list[str]]]) -> list[str]:
    rng = random.Random(SEED)
    streams = {lang: interleave(domains, rng) for lang, domains in sorted(catalog.items())}

    # Short strings: weighted round-robin over locales.
    short_streams = {lang: [s for s in st if len(s) <= MAX_SHORT_CHARS] for lang, st in streams.items()}
    seen: set[str] = set()
    short: list[str] = []
    langs = sorted(short_streams)
    while len(short) < CORPUS_SHORT and any(short_streams.values()):
        for lang in langs:
            for _ in range(3 if lang in PRIORITY else 1):
                stream = short_streams[lang]
                while stream:
                    s = stream.pop(0)
                    if s not in seen:
                        seen.add(s)
                        short.append(s)
                        break
            if len(short) >= CORPUS_SHORT:
                break

    # Long lines: strings of one locale joined with spaces (priority locales first, cycling).
    rich = [lang for lang in langs if sum(len(s) for s in streams[lang]) > 20 * LONG_MAX_CHARS]
    order = [lang for lang in rich if lang in PRIORITY] + [lang for lang in rich if lang not in PRIORITY]
    pools = {lang: [s for s in streams[lang] if s not in seen] or list(streams[lang]) for lang in order}
    long_lines: list[str] = []
    i = 0
    while len(long_lines) < CORPUS_LONG and order:
        lang = order[i % len(order)]
        i += 1
        target = rng.randint(LONG_MIN_CHARS, LONG_MAX_CHARS)
        parts: list[str] = []
        size = 0
        pool = pools[lang]
        while size < target and pool:
            s = pool.pop(0).strip()
            parts.append(s)
            size += len(s) + 1
        if size >= LONG_MIN_CHARS:
            long_lines.append(" ".join(parts))
        if not pool:
            order.remove(lang)

    lines = short + long_lines
    # Stay under the size budget: drop long lines from the end if needed.
    while sum(len(s.encode("utf-8")) + 1 for s in lines) > MAX_BYTES and long_lines:
        long_lines.pop()
        lines = short + long_lines
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--locale-dir", type=Path, default=Path("/usr/share/locale"))
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "multilingual.txt")
    args = ap.parse_args(argv)
    catalog = collect(args.locale_dir)
    lines = build(catalog)
    for s in lines:
        assert usable(s), repr(s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(s + "\n" for s in lines), encoding="utf-8", newline="\n")
    n_bytes = args.out.stat().st_size
    print(f"wrote {len(lines)} lines ({n_bytes} bytes) from {len(catalog)} locales to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
