"""Tokenizer parity: minie5's ids must equal transformers' AutoTokenizer ids.

Reference: transformers.AutoTokenizer.from_pretrained(e5_dir)(texts, truncation=True,
max_length=L)["input_ids"], i.e. transformers 5's XLMRobertaTokenizer, which rebuilds
the XLM-R pipeline (Precompiled normalizer, WhitespaceSplit + Metaspace, Unigram).

Inputs: tests/data/multilingual.txt (real translations from gettext catalogs in
~175 languages, built by scripts/make_test_corpus.py), the same lines with the e5
"query: " / "passage: " prefixes, long concatenations of them, and hand-written
edge cases (whitespace, control and format characters, emoji, combining marks...).

Run with -s to see how many strings were compared.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest

from minie5.tokenizer import Tokenizer

CORPUS = Path(__file__).resolve().parent / "data" / "multilingual.txt"
MAX_LENGTH = 512
BOS, PAD, EOS = 0, 1, 2

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    text = CORPUS.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return text[:-1].split("\n")


@pytest.fixture(scope="module")
def tok(e5_dir) -> Tokenizer:
    return Tokenizer(e5_dir, MAX_LENGTH)


@pytest.fixture(scope="module")
def tok16(e5_dir) -> Tokenizer:
    """Each Tokenizer build parses the 17 MB tokenizer.json (~2 s): only two are made."""
    return Tokenizer(e5_dir, 16)


@pytest.fixture(scope="module")
def stats():
    counts = {"compared": 0, "tests": 0}
    yield counts
    if counts["tests"]:
        print(
            f"\ntokenizer parity: {counts['compared']} strings compared with transformers' "
            f"AutoTokenizer in {counts['tests']} tests, all ids identical"
        )


@pytest.fixture(scope="module")
def hf(e5_dir):
    """transformers' AutoTokenizer on the fixture (loaded once per module)."""
    transformers = pytest.importorskip("transformers")
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        pytest.skip(f"reference is transformers 5's XLM-R tokenizer; found {transformers.__version__}")
    transformers.logging.set_verbosity_error()  # "sequence length is longer than..." warnings
    return transformers.AutoTokenizer.from_pretrained(str(e5_dir))


def hf_ids(hf, texts: list[str], max_length: int = MAX_LENGTH) -> list[list[int]]:
    return hf(texts, truncation=True, max_length=max_length)["input_ids"]


_FULL_LENGTH: dict[str, int] = {}  # text -> untruncated transformers length


def hf_full_lengths(hf, texts: list[str]) -> list[int]:
    todo = sorted({t for t in texts if t not in _FULL_LENGTH})
    if todo:
        _FULL_LENGTH.update(zip(todo, map(len, hf(todo, truncation=False)["input_ids"])))
    return [_FULL_LENGTH[t] for t in texts]


def assert_same(hf, tokenizer: Tokenizer, texts: list[str], stats, max_length: int = MAX_LENGTH) -> list[list[int]]:
    """minie5 ids == transformers ids for every text (and n_truncated is right); returns the ids."""
    assert texts
    got, n_truncated = tokenizer.encode(texts)
    want = hf_ids(hf, texts, max_length)
    assert len(got) == len(want) == len(texts)
    bad = [i for i in range(len(texts)) if list(got[i]) != list(want[i])]
    if bad:
        lines = []
        for i in bad[:5]:
            first = next(
                (k for k, (a, b) in enumerate(zip(got[i], want[i])) if a != b), min(len(got[i]), len(want[i]))
            )
            lines.append(
                f"  {texts[i][:80]!r}\n    first difference at position {first}\n"
                f"    minie5:       {got[i][max(0, first - 3): first + 5]} "
                f"{tokenizer.backend.encode(texts[i]).tokens[max(0, first - 3): first + 5]}\n"
                f"    transformers: {want[i][max(0, first - 3): first + 5]} "
                f"{hf.convert_ids_to_tokens(want[i][max(0, first - 3): first + 5])}"
            )
        pytest.fail(f"{len(bad)} of {len(texts)} texts tokenize differently:\n" + "\n".join(lines))
    assert n_truncated == sum(n > max_length for n in hf_full_lengths(hf, texts))
    stats["compared"] += len(texts)
    stats["tests"] += 1
    return got


# --------------------------------------------------------------------------- no transformers needed


def test_hello_world_literal(tok):
    """Trailing space: SentencePiece / transformers 5 ids, not tokenizer.json-as-written ids."""
    ids, n_truncated = tok.encode(["hello world "])
    assert ids == [[0, 33600, 31, 8999, 2]]
    assert n_truncated == 0
    assert tok.encode(["hello world"])[0] == [[0, 33600, 31, 8999, 2]]


def test_corpus_file_is_well_formed(corpus, tok):
    assert 2500 <= len(corpus) <= 4000
    assert CORPUS.stat().st_size < 420_000
    for line in corpus:
        assert line.strip(), "empty line in corpus"
        assert line.splitlines() == [line], f"line break inside {line!r}"
    assert len(set(corpus)) == len(corpus), "duplicate lines"
    # Many scripts are present.
    names = {"CJK UNIFIED", "HIRAGANA", "KATAKANA", "HANGUL", "ARABIC", "HEBREW", "DEVANAGARI",
             "BENGALI", "TAMIL", "THAI", "LAO", "KHMER", "MYANMAR", "CYRILLIC", "GREEK", "GEORGIAN",
             "ARMENIAN", "ETHIOPIC", "SINHALA", "TIBETAN"}
    seen = set()
    for ch in set("".join(corpus)):
        name = unicodedata.name(ch, "")
        seen.update(n for n in names if name.startswith(n))
    assert seen == names, f"scripts missing from corpus: {sorted(names - seen)}"
    assert any(c in "".join(corpus) for c in "ệốữặẫ"), "no Vietnamese stacked diacritics"
    # A good number of long lines (hundreds of tokens), some over the 512 limit.
    lengths = [len(ids) for ids in tok.encode(corpus)[0]]
    assert sum(n >= 200 for n in lengths) >= 100
    assert sum(n == MAX_LENGTH for n in lengths) >= 5


def test_batch_equals_single(tok, corpus):
    sample = corpus[::50] + ["", " ", "hello world "]
    batch, _ = tok.encode(sample)
    assert batch == [tok.encode([t])[0][0] for t in sample]


def test_pad_shapes_and_mask(tok):
    ids = [[0, 33600, 31, 8999, 2], [0, 2], [0, 10, 876, 2]]
    input_ids, mask = tok.pad(ids)
    assert tok.pad_token_id == PAD
    assert input_ids.dtype == np.int64 and mask.dtype == np.int64
    assert input_ids.tolist() == [[0, 33600, 31, 8999, 2], [0, 2, 1, 1, 1], [0, 10, 876, 2, 1]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]
    empty_ids, empty_mask = tok.pad([])
    assert empty_ids.shape == empty_mask.shape == (0, 0)


# --------------------------------------------------------------------------- parity with transformers


def test_corpus_matches_transformers(hf, tok, corpus, stats):
    ids = assert_same(hf, tok, corpus, stats)
    print(f"\ncorpus: {len(corpus)} lines, {sum(map(len, ids))} tokens compared")


@pytest.mark.parametrize("prefix", ["query: ", "passage: "])
def test_prefixed_corpus_matches_transformers(hf, tok, corpus, stats, prefix):
    subset = corpus[::3] + [line for line in corpus if len(line) > 500]
    assert_same(hf, tok, [prefix + line for line in subset], stats)


@pytest.mark.parametrize("sep", [" ", "\n", "  ", "\t| "])
def test_long_concatenations_match_transformers(hf, tok, corpus, stats, sep):
    """Groups of consecutive corpus lines joined into texts of hundreds of tokens."""
    size = 40 if sep == " " else 60
    texts = [sep.join(corpus[i: i + size]) for i in range(0, len(corpus), size)]
    ids = assert_same(hf, tok, texts, stats)
    assert sum(len(x) >= 200 for x in ids) >= 30
    for x in ids:
        assert len(x) <= MAX_LENGTH and x[0] == BOS and x[-1] == EOS


def test_truncation_at_512(hf, tok, stats):
    # "word " * n gives n + 2 ids: boundary on both sides of 512.
    texts = ["word " * n for n in range(505, 516)] + ["x" * 5000, "日本語" * 1000, "a " * 3000]
    ids, n_truncated = tok.encode(texts)
    lengths = [len(x) for x in ids]
    assert lengths[:5] == [507, 508, 509, 510, 511]
    assert all(n == MAX_LENGTH for n in lengths[5:])
    assert all(x[0] == BOS and x[-1] == EOS for x in ids)
    assert n_truncated == len(texts) - 6  # n = 505..510 fit (507..512 ids)
    assert_same(hf, tok, texts, stats)


def test_truncation_16_corpus(hf, tok16, corpus, stats):
    ids = assert_same(hf, tok16, corpus, stats, max_length=16)
    assert max(len(x) for x in ids) == 16
    assert all(x[0] == BOS and x[-1] == EOS for x in ids)


def test_truncation_16_counts(hf, tok16, corpus, stats):
    texts = ["hello world ", "word " * 13, "word " * 14, "word " * 15, "Ünïcödé " * 40]
    ids, n_truncated = tok16.encode(texts)
    assert [len(x) for x in ids] == [5, 15, 16, 16, 16]
    assert n_truncated == 2
    assert_same(hf, tok16, texts, stats, max_length=16)


def test_pad_matches_transformers_padding(hf, tok, corpus, stats):
    texts = corpus[:64] + ["", "hello world "]
    ids, _ = tok.encode(texts)
    input_ids, mask = tok.pad(ids)
    ref = hf(texts, truncation=True, max_length=MAX_LENGTH, padding=True)
    assert input_ids.tolist() == ref["input_ids"]
    assert mask.tolist() == ref["attention_mask"]
    assert (input_ids[mask == 0] == PAD).all()
    assert mask.sum(axis=1).tolist() == [len(x) for x in ids]
    stats["compared"] += len(texts)
    stats["tests"] += 1


EDGE_CASES = {
    # whitespace
    "hello_world_trailing": "hello world ",
    "empty": "",
    "space": " ",
    "spaces": "     ",
    "leading_spaces": "   leading",
    "trailing_spaces": "trailing   ",
    "inner_spaces": "a  b   c    d",
    "tab": "\t",
    "tabs_inside": "a\tb\t\tc",
    "newline": "\n",
    "newlines_inside": "line one\nline two\n\nline four\n",
    "crlf": "first\r\nsecond\r\n",
    "cr_only": "a\rb",
    "vt_ff": "a\x0bb\x0cc",
    "whitespace_mix": " \t\n\r\n \x0b\x0c ",
    "nbsp": "a\u00a0b",
    "nbsp_only": "\u00a0\u00a0",
    "ideographic_space": "日本\u3000語",
    "ideographic_space_only": "\u3000",
    "en_em_thin_spaces": "a\u2002b\u2003c\u2009d\u202fe\u205ff",
    "zwsp": "a\u200bb",
    "zwsp_only": "\u200b",
    "zwnj_persian": "می\u200cخواهم",
    "zwj": "a\u200db",
    "bom_leading": "\ufeffhello",
    "bom_inside": "hel\ufefflo",
    "nel": "a\u0085b",
    "line_separator": "a\u2028b",
    "paragraph_separator": "a\u2029b",
    "soft_hyphen": "co\u00adoperate",
    "word_joiner_bidi": "a\u2060b \u200eabc\u200f \u202aembedded\u202c",
    # control characters
    "controls_all": "".join(chr(i) for i in range(0x20)) + "\x7f",
    "controls_between": "a" + "b".join(chr(i) for i in range(0x20)) + "z\x7fq",
    "nul": "a\x00b",
    "del": "x\x7fy",
    "c1_controls": "a\x80b\x9fc",
    "info_separators": "a\x1cb\x1dc\x1ed\x1fe",
    # emoji
    "emoji": "I ❤️ Python 🐍🔥",
    "emoji_skin_tones": "👍🏽 👋🏿 👩🏻‍💻",
    "emoji_zwj_family": "👨‍👩‍👧‍👦",
    "emoji_flags": "🇯🇵🇫🇷🇧🇷 🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    "emoji_rainbow_flag": "🏳️‍🌈",
    "emoji_keycap": "1️⃣ #️⃣",
    "emoji_only_run": "😀😃😄😁😆😅😂🤣",
    # combining marks and normalization
    "e_acute_combining": "e\u0301",
    "cafe_nfd": "cafe\u0301 cafe\u0301",
    "cafe_nfc": "café",
    "lone_combining": "\u0301",
    "stacked_combining": "a\u0301\u0302\u0303\u0304\u0308",
    "vietnamese_nfc": "Tiếng Việt: Nguyễn Thị Hằng, ầ ẩ ẫ ậ ặ ữ ệ",
    "vietnamese_nfd": unicodedata.normalize("NFD", "Tiếng Việt: Nguyễn Thị Hằng, ầ ẩ ẫ ậ ặ ữ ệ"),
    "hebrew_niqqud": "שָׁלוֹם עֲלֵיכֶם בְּרֵאשִׁית",
    "arabic_harakat": "بِسْمِ ٱللَّٰهِ ٱلرَّحْمَٰنِ",
    "devanagari": "हिन्दी क्षत्रिय श्री",
    "thai": "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "hangul_nfd": unicodedata.normalize("NFD", "한국어 문장"),
    "hangul_jamo_compat": "ㄱㄴㄷ ㅏㅑ",
    # compatibility characters (NFKC in the charsmap)
    "fullwidth": "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３！",
    "halfwidth_katakana": "ﾊﾝｶｸ ｶﾀｶﾅ",
    "ligatures_circled": "ﬁ ﬂ ① ㈱ ㍿ Ⅻ ½ ²",
    "math_alnum": "𝐀𝐁𝐂 𝔸𝔹 𝟙𝟚",
    # odd characters
    "private_use": "\ue000\uf8ff\U000f0000",
    "replacement_char": "\ufffd\ufffd abc \ufffd",
    "noncharacters": "\ufdd0\uffff\U0010fffe",
    "high_plane": "\U00020000\U0002a6d6 𓀀 𐍈",
    "specials_text": "<s> </s> <pad> <unk> <mask>",
    "special_glued": "hello<mask>world</s>",
    "fake_specials": "<s >< /s> <MASK> ▁ ▁▁ ▁a",
    "metaspace_char": "▁hello ▁ world▁",
    "punctuation": "Hello, world! (Really?) \"quotes\" 'single' «guillemets» „low“ — – … ¿¡",
    "digits_mixed": "3.14159 1,000,000 ١٢٣ ۴۵۶ १२३ 一二三",
    "url_email": "https://example.com/path?q=1&x=%20 user@example.org",
    "code": "def f(x):\n\treturn x**2  # comment",
    "repeated_char": "a" * 300,
    "repeated_punct": "!" * 200 + "?" * 200,
    # mixed scripts
    "mixed_scripts": "English русский 中文 日本語 한국어 العربية עברית हिन्दी ไทย Ελληνικά ქართული Հայերեն",
    "mixed_no_spaces": "abcабв中文αβγ한글אבגابج",
    "rtl_ltr_numbers": "סעיף 12 من 34 part",
    # prefixes
    "query_prefix": "query: how much protein should a female eat",
    "passage_prefix": "passage: As a general guideline, the CDC's average requirement of protein",
    "query_empty": "query: ",
    "query_spaces": "query:    spaced   out   ",
    # long
    "long_ascii_words": "word " * 700,
    "long_no_spaces": "x" * 5000,
    "long_cjk": "日本語のテキスト。" * 300,
    "long_mixed": ("The quick brown fox 敏捷的棕色狐狸 быстрая лиса 🦊 " * 60).strip(),
}


@pytest.mark.parametrize("text", list(EDGE_CASES.values()), ids=list(EDGE_CASES))
def test_edge_case_matches_transformers(hf, tok, stats, text):
    ids = assert_same(hf, tok, [text], stats)[0]
    assert ids[0] == BOS and ids[-1] == EOS
    assert len(ids) <= MAX_LENGTH


def test_edge_cases_batched_and_truncated(hf, tok, tok16, stats):
    texts = list(EDGE_CASES.values())
    ids = assert_same(hf, tok, texts, stats)
    long = [k for k, x in zip(EDGE_CASES, ids) if len(x) == MAX_LENGTH]
    assert {"long_ascii_words", "long_no_spaces", "long_cjk", "long_mixed"} <= set(long)
    assert_same(hf, tok16, texts, stats, max_length=16)
    for prefix in ("query: ", "passage: "):
        assert_same(hf, tok, [prefix + t for t in texts], stats)


def test_whitespace_only_is_bos_eos(hf, tok, stats):
    texts = ["", " ", "  ", "\t", "\n", "\r\n", " \t\n ", "\u3000", "\u00a0", "\u2003"]
    ids = assert_same(hf, tok, texts, stats)
    assert all(x == [BOS, EOS] for x in ids), ids
