"""The LangChain and LlamaIndex adapters, against the real packages (langchain-core, llama-index-core).

Each adapter is used the way a pipeline uses it: LangChain's InMemoryVectorStore
embeds documents and a query and returns the closest document; LlamaIndex's
VectorStoreIndex embeds nodes and its retriever returns the closest one, with
no LLM (Settings.llm is set to None, so no OpenAI default is ever built). The
vectors themselves must be minie5's encode_passages / encode_queries.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest

DOCUMENTS = [
    "Berlin is the capital of Germany.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "The Nile is the longest river in Africa.",
    "Kilimanjaro is the highest mountain in Africa.",
]
QUESTIONS = {  # question -> index of the document that answers it
    "how do plants make sugar": 1,
    "what is the tallest mountain of Africa": 3,
    "Welche Stadt ist die Hauptstadt Deutschlands?": 0,
}


@pytest.fixture(scope="module")
def langchain_embeddings(e5_dir):
    pytest.importorskip("langchain_core")
    from minie5.integrations.langchain import Minie5Embeddings
    return Minie5Embeddings(e5_dir)


@pytest.fixture(scope="module")
def llama_embedding(e5_dir):
    pytest.importorskip("llama_index.core")
    from minie5.integrations.llama_index import Minie5Embedding
    return Minie5Embedding(e5_dir)


# ---------------------------------------------------------------- LangChain
def test_langchain_vectors_are_minie5_passages_and_queries(langchain_embeddings, e5_model):
    from langchain_core.embeddings import Embeddings

    assert isinstance(langchain_embeddings, Embeddings)
    documents = langchain_embeddings.embed_documents(DOCUMENTS)
    assert isinstance(documents, list) and all(isinstance(v, list) and isinstance(v[0], float) for v in documents)
    np.testing.assert_allclose(documents, e5_model.encode_passages(DOCUMENTS), atol=1e-6)
    query = langchain_embeddings.embed_query("how do plants make sugar")
    np.testing.assert_allclose(query, e5_model.encode_queries("how do plants make sugar"), atol=1e-6)
    np.testing.assert_allclose(asyncio.run(langchain_embeddings.aembed_documents(DOCUMENTS)), documents, atol=1e-6)
    np.testing.assert_allclose(asyncio.run(langchain_embeddings.aembed_query("how do plants make sugar")), query,
                               atol=1e-6)


def test_langchain_in_memory_vector_store_finds_the_answer(langchain_embeddings):
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore(langchain_embeddings)
    ids = store.add_documents([Document(page_content=text, metadata={"row": i}) for i, text in enumerate(DOCUMENTS)])
    assert len(ids) == len(DOCUMENTS)
    for question, row in QUESTIONS.items():
        (found, score), = store.similarity_search_with_score(question, k=1)
        assert found.metadata["row"] == row, (question, found.page_content)
        print(f"langchain InMemoryVectorStore: {question!r} -> {found.page_content!r} ({score:.4f})")
    found = asyncio.run(store.asimilarity_search("what is the tallest mountain of Africa", k=1))
    assert found[0].metadata["row"] == 3


@pytest.mark.parametrize("call, message", [
    (lambda e: e.embed_documents("one text"), "embed_documents takes a list of str, got str"),
    (lambda e: e.embed_documents(["ok", None]), r"embed_documents: texts\[1\] is NoneType, expected str"),
    (lambda e: e.embed_documents([b"bytes"]), r"texts\[0\] is bytes"),
    (lambda e: e.embed_query(["a list"]), "embed_query takes a str, got list"),
    (lambda e: asyncio.run(e.aembed_query(3)), "embed_query takes a str, got int"),
])
def test_langchain_refuses_what_is_not_text(langchain_embeddings, call, message):
    with pytest.raises(TypeError, match=message):
        call(langchain_embeddings)


def test_langchain_load_options_reach_minie5_load(e5_dir):
    pytest.importorskip("langchain_core")
    from minie5.integrations.langchain import Minie5Embeddings

    assert Minie5Embeddings(e5_dir, backend="reference").model.backend == "reference"
    with pytest.raises(TypeError, match="unexpected keyword argument 'device'"):
        Minie5Embeddings(e5_dir, device="cuda")


# ---------------------------------------------------------------- LlamaIndex
def test_llama_index_vectors_are_minie5_passages_and_queries(llama_embedding, e5_model):
    from llama_index.core.embeddings import BaseEmbedding

    assert isinstance(llama_embedding, BaseEmbedding)
    passages = e5_model.encode_passages(DOCUMENTS)
    np.testing.assert_allclose(llama_embedding.get_text_embedding_batch(DOCUMENTS), passages, atol=1e-6)
    np.testing.assert_allclose(llama_embedding.get_text_embedding(DOCUMENTS[0]), passages[0], atol=1e-6)
    query = e5_model.encode_queries("how do plants make sugar")
    np.testing.assert_allclose(llama_embedding.get_query_embedding("how do plants make sugar"), query, atol=1e-6)
    np.testing.assert_allclose(asyncio.run(llama_embedding.aget_query_embedding("how do plants make sugar")), query,
                               atol=1e-6)
    np.testing.assert_allclose(asyncio.run(llama_embedding.aget_text_embedding(DOCUMENTS[1])), passages[1], atol=1e-6)
    np.testing.assert_allclose(asyncio.run(llama_embedding.aget_text_embedding_batch(DOCUMENTS)), passages, atol=1e-6)


def test_llama_index_retriever_finds_the_answer_without_an_llm(llama_embedding):
    from llama_index.core import Document, Settings, VectorStoreIndex

    Settings.llm = None  # a MockLLM: nothing may reach for OpenAI's default model
    Settings.embed_model = llama_embedding
    index = VectorStoreIndex.from_documents([Document(text=text, metadata={"row": i})
                                             for i, text in enumerate(DOCUMENTS)])
    retriever = index.as_retriever(similarity_top_k=1)
    for question, row in QUESTIONS.items():
        (found,) = retriever.retrieve(question)
        assert found.node.metadata["row"] == row, (question, found.node.get_content())
        print(f"llama_index VectorStoreIndex retriever: {question!r} -> {found.node.get_content()!r} "
              f"({found.score:.4f})")
    (found,) = asyncio.run(retriever.aretrieve("how do plants make sugar"))
    assert found.node.metadata["row"] == 1


@pytest.mark.parametrize("call, message", [
    (lambda e: e.get_query_embedding(["a list"]), "get_query_embedding takes a str, got list"),
    (lambda e: e.get_text_embedding(7), "get_text_embedding takes a str, got int"),
    (lambda e: e.get_text_embedding_batch(["ok", 7]), r"texts\[1\] is int"),
])
def test_llama_index_refuses_what_is_not_text(llama_embedding, call, message):
    with pytest.raises(TypeError, match=message):
        call(llama_embedding)


# ---------------------------------------------------------------- extras not installed
@pytest.mark.parametrize("module, blocked, command", [
    ("minie5.integrations.langchain", "langchain_core", 'pip install "minie5[langchain]"'),
    ("minie5.integrations.llama_index", "llama_index", 'pip install "minie5[llama-index]"'),
    ("minie5.integrations.mteb", "mteb", 'pip install "minie5[mteb]"'),
])
def test_a_missing_extra_names_its_pip_command(module, blocked, command):
    """Python without the framework (its import blocked with sys.modules[name] = None, as if not installed)."""
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            f"try:\n    import {module}\nexcept ImportError as e:\n    print(e)\nelse:\n    print('imported')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert command in result.stdout and "not installed" in result.stdout, result.stdout


def test_import_minie5_imports_no_framework():
    code = ("import sys, minie5, minie5.integrations; "
            "assert not {'langchain_core', 'llama_index', 'mteb'} & {m.split('.')[0] for m in sys.modules}")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
