"""minie5 against stored transformers outputs, without torch.

tests/data/golden_tiny.npz was written by scripts/make_golden.py: a tiny BERT
whose weights come from a fixed numpy seed (tiny_models.numpy_weights), run
through transformers.BertModel. Here the same weights are regenerated with
numpy, written to a model directory, loaded with minie5 and compared.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import minie5
from minie5 import reference
from tiny_models import max_abs_diff_on_mask, numpy_weights, weights_digest, write_model_dir

GOLDEN = Path(__file__).resolve().parent / "data" / "golden_tiny.npz"
BACKENDS = ["reference", "fast"]
TOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.is_file():
        pytest.fail(f"{GOLDEN} missing: run scripts/make_golden.py")
    with np.load(GOLDEN, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def golden_dir(golden, tmp_path_factory):
    config = json.loads(str(golden["config_json"]))
    weights = numpy_weights(config, int(golden["seed"]))
    assert weights_digest(weights) == str(golden["weights_sha256"]), (
        "numpy_weights no longer reproduces the weights the golden file was made from "
        "(tiny_models.py or numpy's RandomState stream changed): rerun scripts/make_golden.py")
    return write_model_dir(tmp_path_factory.mktemp("golden_tiny"), config, weights,
                           tokenizer_size=int(golden["tokenizer_size"]))


def test_golden_file_is_small():
    assert GOLDEN.stat().st_size < 100_000


def test_golden_tokenizer_ids(golden, golden_dir):
    model = minie5.load(golden_dir, backend="reference")
    ids, truncated = model.tokenizer.encode([str(t) for t in golden["texts"]])
    input_ids, mask = model.tokenizer.pad(ids)
    np.testing.assert_array_equal(input_ids, golden["input_ids"])
    np.testing.assert_array_equal(mask, golden["attention_mask"])
    assert truncated == 1  # the 40-word text exceeds max_position_embeddings = 32


@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_last_hidden_state(golden, golden_dir, backend):
    model = minie5.load(golden_dir, backend=backend)
    ids, mask = golden["input_ids"].astype(np.int64), golden["attention_mask"].astype(np.int64)
    t0 = time.perf_counter()
    hidden = model.forward(ids, mask)
    elapsed = time.perf_counter() - t0
    assert hidden.shape == golden["last_hidden_state"].shape and hidden.dtype == np.float32
    diff = max_abs_diff_on_mask(hidden, golden["last_hidden_state"], mask)
    print(f"golden tiny h36a3l2 {backend}: last hidden max|diff| {diff:.2e} ({elapsed * 1e3:.1f} ms)")
    assert diff <= TOL

    # pooling + normalisation of minie5's own hidden state, vs the stored embedding
    emb = reference.l2_normalize(reference.mean_pool(hidden, mask))
    diff = float(np.abs(emb - golden["embeddings"]).max())
    print(f"golden tiny h36a3l2 {backend}: pooled embedding max|diff| {diff:.2e}")
    assert diff <= TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_encode(golden, golden_dir, backend):
    """Texts in, embeddings out: tokenizer + forward + pooling + normalisation."""
    model = minie5.load(golden_dir, backend=backend)
    assert model.config.pooling == "mean" and model.config.normalize  # the e5 defaults (no ST files here)
    texts = [str(t) for t in golden["texts"]]
    for batch_size in (1, 4, 32):
        emb = model.encode(texts, batch_size=batch_size)
        diff = float(np.abs(emb - golden["embeddings"]).max())
        cos = float(np.min(np.sum(emb.astype(np.float64) * golden["embeddings"], axis=1)))
        print(f"golden tiny h36a3l2 {backend} encode batch {batch_size}: max|diff| {diff:.2e}, min cos {cos:.8f}")
        assert diff <= TOL
        assert cos >= 0.99999
