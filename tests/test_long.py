"""Long inputs: truncation (the default, with a warning), other max_length values, and long="window".

References are independent of minie5's long-text code: ids truncated by the
tokenizers library itself (as transformers does; tests/test_tokenizer.py checks
minie5's truncation against transformers), windows cut by hand from the
tokenizers library's untruncated ids, hidden states from model.forward() (the
padded path) pooled and weighted in NumPy here.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer

import minie5
from minie5.errors import TruncationWarning
from minie5.model import combine_windows

HIDDEN = 384
TOL = 1e-6
CORPUS = Path(__file__).resolve().parent / "data" / "multilingual.txt"

SHORT_TEXTS = [
    "query: how much protein should a female eat",
    "",
    "   ",
    "passage: 南瓜的家常做法",
    "passage: Der schnelle braune Fuchs springt über den faulen Hund. " * 5,
    "hi",
]
# About 1,100 pieces: three 512-token windows, the last one shorter.
LONG_TEXT = "passage: " + " ".join(f"Sentence {i} says something about the river and the city." for i in range(85))


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return CORPUS.read_text(encoding="utf-8").splitlines()


def truncating_tokenizer(model, max_length: int) -> HFTokenizer:
    """A copy of the model's tokenizers pipeline that truncates by itself, as transformers has it do."""
    tokenizer = HFTokenizer.from_str(model.tokenizer.backend.to_str())
    tokenizer.enable_truncation(max_length)
    return tokenizer


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def mean_pooled(model, ids: list[int]) -> np.ndarray:
    """The mean of the last hidden state over one sequence of ids, computed by model.forward."""
    hidden = model.forward(np.array([ids]))[0]  # [T, H]
    return hidden.astype(np.float64).mean(axis=0)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------- window mode
def test_window_equals_plain_for_texts_that_fit(e5_model):
    """A text within max_length has one window equal to its plain ids: exactly the plain result."""
    assert np.array_equal(e5_model.encode(SHORT_TEXTS, long="window"), e5_model.encode(SHORT_TEXTS))
    assert np.array_equal(e5_model.encode(SHORT_TEXTS, long="window", normalize=False),
                          e5_model.encode(SHORT_TEXTS, normalize=False))
    fit_in_64 = [t for t in SHORT_TEXTS if len(e5_model.tokenizer.encode([t])[0][0]) <= 64]
    assert len(fit_in_64) == len(SHORT_TEXTS) - 1
    assert np.array_equal(e5_model.encode(fit_in_64, long="window", max_length=64),
                          e5_model.encode(fit_in_64, max_length=64))


def test_window_ids_of_texts_that_fit_are_the_plain_ids(e5_model, corpus):
    """On 2,850 real multilingual lines (and prefixed copies): one window, the tokenizer's own ids."""
    texts = corpus + ["query: " + t for t in corpus[:500]]
    plain, truncated = e5_model.tokenizer.encode(texts)
    contents = e5_model.tokenizer.content_ids(texts)
    fitting = [i for i, ids in enumerate(plain) if len(ids) < 512]
    assert len(fitting) > 0.99 * len(texts)
    for i in fitting:
        assert e5_model.tokenizer.windows(contents[i], 512) == [plain[i]], f"text {i}: {texts[i]!r}"


@pytest.mark.filterwarnings("ignore::minie5.errors.TruncationWarning")
@pytest.mark.parametrize("max_length", [512, 64])
def test_window_mode_by_hand(e5_model, max_length):
    """Windows of max_length - 2 pieces, each <s> ... </s>, token-count-weighted mean, normalised."""
    ids = e5_model.tokenizer.backend.encode(LONG_TEXT).ids  # the tokenizers library: all of the text
    bos, content, eos = ids[0], ids[1:-1], ids[-1]
    size = max_length - 2
    windows = [[bos] + content[s:s + size] + [eos] for s in range(0, len(content), size)]
    assert len(windows) >= 3 and len(windows[-1]) < max_length  # several windows, the last one shorter
    pooled = np.array([mean_pooled(e5_model, w) for w in windows])  # [W, H]
    weights = np.array([len(w) for w in windows], dtype=np.float64)
    expected_raw = weights @ pooled / weights.sum()

    got = e5_model.encode(LONG_TEXT, long="window", max_length=max_length)
    assert max_diff(got, unit(expected_raw)) <= 1e-5
    if max_length == 64:  # the cheaper case: also without normalisation, and against truncation
        got_raw = e5_model.encode(LONG_TEXT, long="window", max_length=max_length, normalize=False)
        assert max_diff(got_raw, expected_raw) <= 1e-5
        # ... it is not the truncated embedding, which sees only the first window.
        assert max_diff(got, e5_model.encode(LONG_TEXT, max_length=max_length)) > 1e-3


def test_window_mode_in_a_batch_with_short_texts(e5_model):
    texts = [SHORT_TEXTS[0], LONG_TEXT[:400], SHORT_TEXTS[3], LONG_TEXT[:300]]
    together = e5_model.encode(texts, long="window", batch_size=3, max_length=32)
    for i, text in enumerate(texts):
        assert max_diff(together[i], e5_model.encode(text, long="window", max_length=32)) <= TOL, f"row {i}"
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_combine_windows_is_the_token_weighted_mean():
    pooled = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [4.0, 8.0], [0.5, 0.5]], dtype=np.float32)
    owner = np.array([0, 0, 1, 2, 2])  # text 0: two windows; text 1: one; text 2: two
    lengths = np.array([3, 1, 7, 2, 6])
    out = combine_windows(pooled, owner, lengths, 3)
    np.testing.assert_allclose(out, [[0.75, 0.25], [2.0, 2.0], [(8 + 3) / 8, (16 + 3) / 8]], rtol=1e-7)
    assert np.array_equal(out[1], pooled[2])  # one window: its row, unchanged


# ---------------------------------------------------------------- truncation
def test_other_max_length_truncates_like_the_tokenizers_library(e5_model, corpus):
    """max_length=16: the ids are those the tokenizers library truncates to (as transformers has it do)."""
    tok16 = truncating_tokenizer(e5_model, 16)
    texts = corpus[:400] + [LONG_TEXT, "", "a"]
    expected = tok16.encode_batch(texts)
    ids, truncated = e5_model.tokenizer.encode(texts, 16)
    assert ids == [e.ids for e in expected]
    assert truncated == sum(1 for e in expected if e.overflowing) > 0

    sample = [LONG_TEXT, SHORT_TEXTS[4], SHORT_TEXTS[0]]
    by_hand = np.array([unit(mean_pooled(e5_model, e.ids)) for e in tok16.encode_batch(sample)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        got = e5_model.encode(sample, max_length=16)
    assert max_diff(got, by_hand) <= 1e-5


def test_default_truncation_is_to_512_tokens(e5_model):
    ids, truncated = e5_model.tokenizer.encode([LONG_TEXT])
    assert len(ids[0]) == 512 and truncated == 1
    messages = caught_truncation_warnings(lambda: e5_model.encode([LONG_TEXT, "short"]))
    assert len(messages) == 1 and "1 of 2 texts were longer than 512 tokens" in messages[0], messages
    with pytest.warns(TruncationWarning):
        got = e5_model.encode(LONG_TEXT)
    assert max_diff(got, unit(mean_pooled(e5_model, ids[0]))) <= 1e-5


def caught_truncation_warnings(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, TruncationWarning)]


def test_truncation_warns_once_per_call_with_the_count(e5_model):
    # max_length=32 keeps this cheap; the 512 default is checked above.
    long_text = LONG_TEXT[:300]  # about 70 tokens
    texts = [long_text, "short", long_text + " more", "hi"]
    messages = caught_truncation_warnings(lambda: e5_model.encode(texts, max_length=32))
    assert len(messages) == 1, messages
    assert "2 of 4 texts" in messages[0] and "32 tokens" in messages[0] and "window" in messages[0]
    assert caught_truncation_warnings(lambda: e5_model.encode(SHORT_TEXTS[:4])) == []
    assert caught_truncation_warnings(lambda: e5_model.encode(texts, long="window", max_length=32)) == []
    # A stream of several chunks still warns once, when it ends, with the total count.
    stream = e5_model.encode_iter(iter(texts * 2), chunk_size=3, max_length=32)
    messages = caught_truncation_warnings(lambda: list(stream))
    assert len(messages) == 1 and "4 of 8 texts" in messages[0], messages


def test_truncation_warning_is_a_user_warning():
    assert issubclass(TruncationWarning, UserWarning) and issubclass(TruncationWarning, minie5.Minie5Warning)


# ---------------------------------------------------------------- option checks
@pytest.mark.parametrize("kwargs, message", [
    ({"max_length": 513}, r"max_length 513 exceeds the 512 positions the model can embed "
                          r"\(max_position_embeddings 512\)"),  # e5-small is a BertModel: 512 rows, all usable
    ({"max_length": 0}, "max_length"),
    ({"max_length": 2, "long": "window"}, "at least 3"),
    ({"max_length": "64"}, "max_length must be an integer"),
    ({"max_length": True}, "max_length must be an integer"),
    ({"long": "split"}, r"long must be one of \('truncate', 'window'\)"),
])
def test_bad_long_options_are_rejected(e5_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        e5_model.encode("hello", **kwargs)
    with pytest.raises(ValueError, match=message):
        e5_model.encode_iter(["hello"], **kwargs)  # checked at the call, not at the first next()


def test_max_length_two_embeds_only_the_special_tokens(e5_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        a, b = e5_model.encode(["hello world", "something else entirely"], max_length=2)
    assert max_diff(a, b) <= TOL  # the same ids [<s>, </s>] for both texts
    assert max_diff(a, unit(mean_pooled(e5_model, [0, 2]))) <= 1e-5
