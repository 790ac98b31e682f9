"""Streaming: encode_iter / encode_chunks read lazily and keep input order; progress bars.

References: model.encode() on the same texts.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

HIDDEN = 384
TOL = 1e-6

# Very different token lengths, not in length order (chunks sort internally).
TEXTS = [
    "passage: " + "The quick brown fox jumps over the lazy dog. " * 4,
    "a",
    "",
    "query: how much protein should a female eat",
    "passage: 南瓜的家常做法 " * 3,
    "hi",
    "x " * 30,
    "passage: Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
]


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


# ---------------------------------------------------------------- encode_iter / encode_chunks
@pytest.mark.parametrize("chunk_size, batch_size", [(3, 2), (1, 32), (100, 3)])
def test_encode_iter_equals_encode_in_input_order(e5_model, chunk_size, batch_size):
    expected = e5_model.encode(TEXTS)
    rows = list(e5_model.encode_iter(iter(TEXTS), batch_size=batch_size, chunk_size=chunk_size))
    assert len(rows) == len(TEXTS)
    assert all(r.shape == (HIDDEN,) and r.dtype == np.float32 for r in rows)
    assert max_diff(np.array(rows), expected) <= TOL


def test_encode_chunks_yields_blocks_of_chunk_size(e5_model):
    blocks = list(e5_model.encode_chunks(TEXTS, chunk_size=3, prefix="passage", normalize=False))
    assert [b.shape for b in blocks] == [(3, HIDDEN), (3, HIDDEN), (2, HIDDEN)]
    assert max_diff(np.concatenate(blocks), e5_model.encode(TEXTS, prefix="passage", normalize=False)) <= TOL


def test_encode_iter_reads_lazily(e5_model):
    """An endless iterable: the first vector comes after reading one chunk, not the whole input."""
    pulled = []

    def endless():
        for i in itertools.count():
            pulled.append(i)
            yield f"text number {i}"

    stream = e5_model.encode_iter(endless(), chunk_size=5)
    first = next(stream)
    assert len(pulled) == 5
    assert max_diff(first, e5_model.encode("text number 0")) <= TOL
    for _ in range(5):  # the rest of the first chunk, then one more chunk read
        next(stream)
    assert len(pulled) == 10


def test_encode_iter_of_nothing(e5_model):
    assert list(e5_model.encode_iter(iter([]))) == []
    assert list(e5_model.encode_chunks([])) == []


def test_encode_iter_names_the_index_of_a_non_str(e5_model):
    stream = e5_model.encode_iter(iter(["a", "b", "c", 5, "e"]), chunk_size=2)
    with pytest.raises(TypeError, match=r"texts\[3\] is int"):
        list(stream)


def test_encode_iter_checks_its_arguments_at_once(e5_model):
    with pytest.raises(ValueError, match="batch_size"):
        e5_model.encode_iter(TEXTS, batch_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        e5_model.encode_iter(TEXTS, chunk_size=0)
    with pytest.raises(TypeError, match="one str"):
        e5_model.encode_iter("a single string")
    with pytest.raises(TypeError, match="int"):
        e5_model.encode_iter(42)


# ---------------------------------------------------------------- progress
def test_encode_show_progress_draws_a_bar_on_stderr(e5_model, capsys):
    out = e5_model.encode(TEXTS, show_progress=True, batch_size=3)
    err = capsys.readouterr().err
    assert "8/8" in err and "texts/s" in err and "tokens/s" in err
    assert max_diff(out, e5_model.encode(TEXTS)) <= TOL
    capsys.readouterr()
    e5_model.encode(TEXTS)
    assert capsys.readouterr().err == ""  # no bar unless asked for


def test_encode_iter_show_progress_counts_the_texts(e5_model, capsys):
    list(e5_model.encode_iter(iter(TEXTS), show_progress=True, total=len(TEXTS), chunk_size=3))
    err = capsys.readouterr().err
    assert "8/8" in err and "tokens/s" in err


def test_show_progress_with_a_delay_stays_quiet_for_quick_jobs(e5_model, capsys):
    e5_model.encode(TEXTS[:2], show_progress=60.0)
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="show_progress"):
        e5_model.encode(TEXTS[:2], show_progress=-1)
