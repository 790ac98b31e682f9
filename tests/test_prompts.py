"""encode(prefix=...), encode_queries and encode_passages take their prompts from the model's files.

Against sentence-transformers on the same directory: a small random BERT whose
config_sentence_transformers.json declares bge's query instruction (and no
passage prompt), with and without a default prompt, and one declaring e5's
"query: " / "passage: ".
"""
from __future__ import annotations

import numpy as np
import pytest

import minie5
from conftest import requires_torch
from family_models import BGE_SMALL_CONFIG, build_hf_model, shrink, write_sentence_transformers, write_wordpiece_tokenizer

pytestmark = requires_torch

SMALL = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 128}
BGE_QUERY = "Represent this sentence for searching relevant passages: "
TEXTS = ["how much protein should a female eat", "Berlin is the capital of Germany.", "", "query: already"]
CASES = {  # name: (prompts, default_prompt_name)
    "bge prompts": ({"query": BGE_QUERY}, None),
    "bge prompts, default query": ({"query": BGE_QUERY}, "query"),
    "e5 prompts": ({"query": "query: ", "passage": "passage: "}, None),
    "document prompt": ({"query": "q: ", "document": "d: "}, None),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory, minilm_dir):
    from sentence_transformers import SentenceTransformer

    prompts, default = CASES[request.param]
    tmp_path = tmp_path_factory.mktemp("prompts")
    build_hf_model(shrink(BGE_SMALL_CONFIG, **SMALL), tmp_path, seed=11)
    write_wordpiece_tokenizer(tmp_path, minilm_dir)
    write_sentence_transformers(tmp_path, SMALL["hidden_size"], pooling="cls", prompts=prompts,
                                default_prompt_name=default)
    return minie5.load(tmp_path), SentenceTransformer(str(tmp_path), device="cpu")


def close(a, b) -> None:
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_encode_queries_is_sentence_transformers_encode_query(case):
    model, st = case
    close(model.encode_queries(TEXTS), st.encode_query(TEXTS, convert_to_numpy=True))


def test_encode_passages_uses_the_declared_passage_prompt(case):
    """The first of passage / document / corpus the model declares, else none."""
    model, st = case
    declared = [name for name in ("passage", "document", "corpus") if name in model.config.prompts]
    expected = st.encode(TEXTS, prompt_name=declared[0] if declared else None, prompt="" if not declared else None,
                         convert_to_numpy=True)
    close(model.encode_passages(TEXTS), expected)


def test_encode_without_prefix_applies_the_default_prompt(case):
    model, st = case
    close(model.encode(TEXTS), st.encode(TEXTS, convert_to_numpy=True))


def test_explicit_prefix_overrides_the_files(case):
    model, st = case
    close(model.encode(TEXTS, prefix="title: "), st.encode(TEXTS, prompt="title: ", convert_to_numpy=True))
    close(model.encode(TEXTS, prefix=""), st.encode(TEXTS, prompt="", convert_to_numpy=True))
