"""Odd and hostile inputs to encode(): defined behaviour, matching transformers where it has one.

See docs/behaviour.md for the table these tests pin down.
"""
from __future__ import annotations

import time
from pathlib import Path
import warnings

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer

import minie5
from helpers import ROUNDING
from minie5.tokenizer import first_lone_surrogate
from conftest import requires_torch

BAD_CONTAINERS = [None, 42, 3.5, b"bytes", {"a": "b"}, {"a", "b"}, np.array(["x"])]
BAD_ITEMS = [None, 1, 2.5, b"bytes", bytearray(b"x"), ["nested"], ("nested",), {"k": "v"}, np.float32(1)]


@pytest.fixture(scope="module")
def model(e5_dir):
    return minie5.load(e5_dir)


@pytest.mark.parametrize("texts", BAD_CONTAINERS, ids=lambda x: type(x).__name__)
def test_bad_container_is_a_type_error(model, texts):
    with pytest.raises(TypeError) as info:
        model.encode(texts)
    assert type(texts).__name__ in str(info.value)


@pytest.mark.parametrize("item", BAD_ITEMS, ids=lambda x: type(x).__name__)
def test_bad_item_names_index_and_type(model, item):
    with pytest.raises(TypeError) as info:
        model.encode(["fine", "also fine", item])
    assert "texts[2]" in str(info.value) and type(item).__name__ in str(info.value)


@pytest.mark.parametrize("text,position", [("\ud800", 0), ("abc\udfffdef", 3), ("ok \ud83d", 3)])
def test_lone_surrogate_is_a_value_error_naming_index_and_position(model, text, position):
    with pytest.raises(ValueError) as info:
        model.encode(["fine", text])
    message = str(info.value)
    assert "texts[1]" in message and f"position {position}" in message and "surrogate" in message


def test_a_valid_surrogate_pair_written_as_one_character_is_fine(model):
    assert model.encode("emoji \U0001F600").shape == (384,)


@pytest.mark.parametrize("text,position", [("\ud800", 0), ("abc\udfffdef", 3), ("ok \ud83d", 3), ("a\udc00\ud800", 1),
                                           ("plain ascii", None), ("", None), ("emoji \U0001F600 мир", None)])
def test_first_lone_surrogate(text, position):
    assert first_lone_surrogate(text) == position


@requires_torch
def test_nul_and_control_characters_match_transformers(model, e5_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer
    texts = ["a\x00b", "\x00", "\x01\x02\x1f", "tab\tand\x7fdel", "bell\x07", "\x1b[31mred\x1b[0m"]
    tokenizer = AutoTokenizer.from_pretrained(e5_dir)
    hf = AutoModel.from_pretrained(e5_dir).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        hidden = hf(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    got = model.encode(texts)
    assert model.tokenizer.encode(texts)[0] == [list(map(int, row[m.bool()])) for row, m in
                                                  zip(batch["input_ids"], batch["attention_mask"])]
    assert np.sum(got * expected, axis=1).min() >= 0.99999


def test_empty_and_whitespace_only_give_the_bos_eos_vector(model):
    vectors = model.encode(["", "   ", "\t\n", "\u3000", "\u00a0"])
    assert np.abs(vectors - vectors[0]).max() <= 1e-6
    assert np.isfinite(vectors).all()


@pytest.mark.slow
def test_ten_thousand_texts(model):
    texts = [f"text number {i}" for i in range(10_000)]
    vectors = model.encode(texts, batch_size=256)
    assert vectors.shape == (10_000, 384)
    np.testing.assert_allclose(vectors[1234], model.encode(texts[1234]), atol=ROUNDING)  # other batch-mates


def _tokenize_seconds(model, texts, repeats=5):
    """The fastest of `repeats` tokenizations of each text, the texts taken in turn (so that a busy
    machine slows them alike)."""
    best = [float("inf")] * len(texts)
    for _ in range(repeats):
        for i, text in enumerate(texts):
            start = time.perf_counter()
            ids, truncated = model.tokenizer.encode([text])
            best[i] = min(best[i], time.perf_counter() - start)
            assert len(ids[0]) == 512 and truncated == 1
    return best


@pytest.mark.parametrize("unit", ["word мир 世界 données ", "a"])
def test_truncating_a_million_characters_is_linear(model, unit):
    short = (unit * (100_000 // len(unit) + 1))[:100_000]
    long = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
    t_short, t_long = _tokenize_seconds(model, [short, long])
    print(f"parity tokenizer truncation {unit[:6]!r}: 100k chars {t_short * 1e3:.1f} ms, "
          f"1M chars {t_long * 1e3:.1f} ms, ratio {t_long / t_short:.1f}")
    # Linear is about 10x (12x for one 1M-character word); quadratic would be 100x.
    assert t_long <= 20 * t_short + 0.05


def test_a_million_characters_embed_like_their_first_512_tokens(model):
    text = "passage: " + "the quick brown fox jumps over the lazy dog " * 25_000
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        long_vector = model.encode(text)
    ids = model.tokenizer.encode([text])[0][0]
    head = model.tokenizer.backend.decode(ids[1:-1])
    assert len(ids) == 512
    assert np.sum(long_vector * model.encode(head)) >= 0.9999


def test_long_text_shortcut_gives_the_same_ids_as_the_whole_text(model):
    """Tokenizing a cut-down head of a long text == tokenizing all of it, then truncating."""
    corpus = (Path(__file__).parent / "data" / "multilingual.txt").read_text(encoding="utf-8").splitlines()
    texts = [" ".join(corpus[i:i + 1400]) for i in range(0, 2800, 700)]  # long multilingual texts
    texts += ["word мир 世界 données " * 5000, "x " * 50_000, "a" * 40_000 + " b" * 10]
    truncating = HFTokenizer.from_str(model.tokenizer.backend.to_str())
    truncating.enable_truncation(512)
    for text in texts:
        assert len(text) > 2 * 16 * 512
        whole = truncating.encode(text)  # the whole text, truncated by tokenizers itself
        ids, truncated = model.tokenizer.encode([text])
        assert ids[0] == whole.ids and truncated == 1
