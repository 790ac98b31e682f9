"""Every intermediate of the forward pass against transformers' own.

Model.forward(..., output_hidden_states=True, output_attentions=True) returns the
embedding layer's output and each layer's hidden state (L + 1 arrays) and each
layer's attention probabilities (L arrays [batch, heads, seq, seq]). Here both
minie5 paths are compared with transformers' `hidden_states` / `attentions`
(eager attention, the implementation that returns the probabilities), layer by
layer, on real positions (attention: real query and real key):

a. the multilingual-e5-small fixture, a padded batch of short texts;
b. tiny random BERTs (built as in test_parity.py), random padded batches,
   one row left-padded (the fast path packs tokens from any mask).

Each comparison prints one "parity inspect ..." line with the per-layer figures.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import minie5
from conftest import requires_torch
from tiny_models import random_batch

HIDDEN_TOL = 1e-4
ATTENTION_TOL = 1e-5
BACKENDS = ["reference", "fast"]

E5_TEXTS = [
    "query: how much protein should a female eat",
    "passage: Die Zugspitze ist mit 2962 m ü. NN der höchste Gipfel des Wettersteingebirges.",
    "query: 富士山の高さは？",
    "ok",
]


def real_pairs(mask: np.ndarray, heads: int) -> np.ndarray:
    """[B, T] mask -> [B, heads, T, T] bool: query and key both real tokens."""
    real = np.asarray(mask) != 0
    pairs = real[:, None, :, None] & real[:, None, None, :]
    return np.broadcast_to(pairs, (real.shape[0], heads, real.shape[1], real.shape[1]))


def layer_diffs(ours, theirs, mask) -> tuple[list[float], list[float]]:
    """Per-layer max |diff|: hidden states on real tokens, attention probabilities on real (query, key)."""
    real = np.asarray(mask) != 0
    hidden = [float(np.abs(np.float64(a) - b)[real].max()) for a, b in zip(ours.hidden_states, theirs[0])]
    attn = []
    for a, b in zip(ours.attentions, theirs[1]):
        pairs = real_pairs(mask, a.shape[1])
        attn.append(float(np.abs(np.float64(a) - b)[pairs].max()))
    return hidden, attn


def figures(values: list[float]) -> str:
    return " ".join(f"{v:.1e}" for v in values)


def report(label: str, hidden: list[float], attn: list[float]) -> None:
    print(f"parity inspect {label}: hidden max|diff| {max(hidden):.1e}, attention max|diff| {max(attn):.1e}")
    print(f"parity inspect {label}: hidden per layer (embeddings, 1..{len(attn)}) [{figures(hidden)}]")
    print(f"parity inspect {label}: attention per layer (1..{len(attn)}) [{figures(attn)}]")


def hf_intermediates(hf_model, ids: np.ndarray, mask: np.ndarray):
    """transformers' (hidden_states, attentions) as float64 numpy arrays, eager attention."""
    import torch

    hf_model.set_attn_implementation("eager")
    t_mask = torch.from_numpy(np.asarray(mask, np.int64))
    with torch.no_grad():
        out = hf_model(input_ids=torch.from_numpy(np.asarray(ids, np.int64)), attention_mask=t_mask,
                       token_type_ids=torch.zeros_like(t_mask), output_hidden_states=True, output_attentions=True)
    return ([h.double().numpy() for h in out.hidden_states], [a.double().numpy() for a in out.attentions])


def check_structure(out, model: minie5.Model, mask: np.ndarray, backend: str) -> None:
    """Shapes, dtypes, rows that sum to 1, exact zeros at padding keys (and, fast path, padding everywhere)."""
    c = model.config
    B, T = mask.shape
    assert isinstance(out, minie5.ForwardOutput)
    assert len(out.hidden_states) == c.num_hidden_layers + 1 and len(out.attentions) == c.num_hidden_layers
    assert all(h.shape == (B, T, c.hidden_size) and h.dtype == np.float32 for h in out.hidden_states)
    assert all(a.shape == (B, c.num_attention_heads, T, T) and a.dtype == np.float32 for a in out.attentions)
    assert out.hidden_states[-1] is out.last_hidden_state
    real = mask != 0
    for a in out.attentions:
        rows = a.sum(axis=-1)  # [B, A, T]
        np.testing.assert_allclose(rows.transpose(0, 2, 1)[real], 1.0, atol=1e-5)
        assert not a.transpose(0, 3, 1, 2)[~real].any()  # a padding key gets weight exactly 0
        if backend == "fast":
            assert not a.transpose(0, 2, 1, 3)[~real].any()  # padding query rows: 0 on the fast path
    if backend == "fast":
        assert all(not h[~real].any() for h in out.hidden_states)


# =============================================================== the API, without transformers

def test_forward_without_flags_returns_the_array(e5_model):
    ids, mask = e5_model.tokenizer.pad(e5_model.tokenizer.encode(["query: hi", "ok"])[0])
    plain = e5_model.forward(ids, mask)
    assert isinstance(plain, np.ndarray)
    only_hidden = e5_model.forward(ids, mask, output_hidden_states=True)
    assert only_hidden.attentions is None and len(only_hidden.hidden_states) == 13
    only_attn = e5_model.forward(ids, mask, output_attentions=True)
    assert only_attn.hidden_states is None and len(only_attn.attentions) == 12
    real = mask != 0
    for out in (only_hidden, only_attn):
        np.testing.assert_array_equal(out.last_hidden_state[real], plain[real])


def test_forward_empty_batch_with_flags(e5_model):
    out = e5_model.forward(np.zeros((0, 3), np.int64), output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 13 and out.hidden_states[0].shape == (0, 3, 384)
    assert len(out.attentions) == 12 and out.attentions[0].shape == (0, 12, 3, 3)


# =============================================================== a. multilingual-e5-small

@pytest.fixture(scope="module")
def hf_e5_eager(e5_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(e5_dir, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def e5_batch(e5_model):
    ids, _ = e5_model.tokenizer.encode(E5_TEXTS)
    return e5_model.tokenizer.pad(ids)  # input_ids, attention_mask [4, T]


@requires_torch
@pytest.mark.parametrize("backend", BACKENDS)
def test_e5_intermediates_match_transformers(e5_model, hf_e5_eager, e5_batch, backend):
    ids, mask = e5_batch
    expected = hf_intermediates(hf_e5_eager, ids, mask)
    out = e5_model.forward(ids, mask, backend=backend, output_hidden_states=True, output_attentions=True)
    check_structure(out, e5_model, mask, backend)
    hidden, attn = layer_diffs(out, expected, mask)
    report(f"e5 {backend} ({len(E5_TEXTS)} texts, T={ids.shape[1]}, {int(mask.sum())} tokens)", hidden, attn)
    assert max(hidden) <= HIDDEN_TOL
    assert max(attn) <= ATTENTION_TOL


# =============================================================== b. tiny random BERTs

TINY_CASES = [("h24a2l2", 13), ("h44a4l3", 33), ("mlm-h36a3l2", 64)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from test_parity import _build_tiny

    root = tmp_path_factory.mktemp("tiny_inspect")
    built = {}

    def get(name):
        if name not in built:
            built[name] = _build_tiny(name, root)
        return built[name]

    return get


def tiny_batch(name: str, vocab: int, seq: int):
    """random_batch's rows (right-padded, mixed lengths) plus one left-padded row."""
    rng = np.random.default_rng(zlib.crc32(f"inspect/{name}/{seq}".encode()))
    ids, mask = random_batch(rng, vocab, seq, pad_garbage=True)
    n = max(seq // 3, 1)
    left_ids = rng.integers(0, vocab, (1, seq))
    left_mask = np.zeros((1, seq), np.int64)
    left_mask[0, seq - n:] = 1
    return np.concatenate([ids, left_ids]), np.concatenate([mask, left_mask])


@pytest.fixture(scope="module")
def tiny_xlmr(tmp_path_factory):
    """A tiny random XLMRobertaModel: positions numbered from pad_token_id + 1 over non-pad tokens."""
    import torch
    import transformers
    from test_parity import Tiny, _randomize
    from tiny_models import write_tokenizer

    config = transformers.XLMRobertaConfig(
        vocab_size=120, hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40,
        max_position_embeddings=66, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)
    torch.manual_seed(11)
    hf_model = transformers.XLMRobertaModel(config, add_pooling_layer=False).eval()
    _randomize(hf_model, 11)
    path = tmp_path_factory.mktemp("tiny_xlmr") / "xlmr-h24a2l2"
    hf_model.save_pretrained(path, safe_serialization=True)
    write_tokenizer(path, 120)
    return Tiny("xlmr-h24a2l2", path, hf_model, [], minie5.load(path))


@requires_torch
@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_xlmr_intermediates_match_transformers(tiny_xlmr, backend):
    t = tiny_xlmr
    assert t.model.config.model_type == "xlm-roberta" and t.model.config.position_offset == 2
    ids, mask = tiny_batch(t.name, t.vocab, 40)
    ids[0, 5] = ids[3, 2] = t.model.config.pad_token_id  # pad ids inside texts: they skip a position number
    expected = hf_intermediates(t.hf, ids, mask)
    out = t.model.forward(ids, mask, backend=backend, output_hidden_states=True, output_attentions=True)
    check_structure(out, t.model, mask, backend)
    hidden, attn = layer_diffs(out, expected, mask)
    report(f"tiny {t.name} T=40 {backend}", hidden, attn)
    assert max(hidden) <= HIDDEN_TOL
    assert max(attn) <= ATTENTION_TOL


@requires_torch
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,seq", TINY_CASES)
def test_tiny_intermediates_match_transformers(tiny, name, seq, backend):
    t = tiny(name)
    ids, mask = tiny_batch(name, t.vocab, seq)
    expected = hf_intermediates(t.hf, ids, mask)
    out = t.model.forward(ids, mask, backend=backend, output_hidden_states=True, output_attentions=True)
    check_structure(out, t.model, mask, backend)
    hidden, attn = layer_diffs(out, expected, mask)
    report(f"tiny {name} T={seq} {backend}", hidden, attn)
    assert max(hidden) <= HIDDEN_TOL
    assert max(attn) <= ATTENTION_TOL


def test_intermediates_and_info_load_no_heavy_module(e5_dir):
    """forward with intermediates and the info command import neither torch, transformers nor matplotlib."""
    import subprocess
    import sys

    code = (f"import sys, minie5, minie5.cli.main, minie5.checkpoint.parameter_table; m = minie5.load({str(e5_dir)!r}); "
            f"out = m.forward([[0, 33600, 2]], output_hidden_states=True, output_attentions=True); "
            f"assert len(out.attentions) == 12; "
            f"heavy = {{'torch', 'transformers', 'matplotlib'}} & set(sys.modules); assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
