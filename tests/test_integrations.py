"""The LangChain and LlamaIndex adapters, against the real packages (langchain-core, llama-index-core).

The vectors each adapter gives, sync and async, must be Model.encode's for the
same texts with e5's prompts written out ("passage: " + text, "query: " + text).
Each adapter is then used the way a pipeline uses it, on a corpus of 154
documents: the four that answer QUESTIONS among 150 lines of
tests/data/multilingual.txt (messages of software in many languages).
LangChain's InMemoryVectorStore and LlamaIndex's VectorStoreIndex retriever
(with no LLM: Settings.llm is set to None, so no OpenAI default is ever built)
must return the document that answers each question, and for queries taken
from the corpus, the document a brute-force cosine over Model.encode's vectors
ranks first, with its score.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO

ANSWERS = [
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
CORPUS_LINES = [line for line in (REPO / "tests" / "data" / "multilingual.txt").read_text(encoding="utf-8")
                .splitlines() if len(line) >= 30][:150]
DOCUMENTS = ANSWERS + CORPUS_LINES  # 154 documents; row i is DOCUMENTS[i]
CORPUS_QUERIES = [CORPUS_LINES[i][:40] for i in (0, 17, 42, 99, 149)]  # the start of a line as a query


def passages(e5_model, texts) -> np.ndarray:
    return e5_model.encode(["passage: " + text for text in texts])  # [n, 384]


def queries(e5_model, texts) -> np.ndarray:
    return e5_model.encode(["query: " + text for text in texts])  # [n, 384]


@pytest.fixture(scope="module")
def expected(e5_model):
    """Model.encode's vectors for the corpus and every query, and the row a brute-force cosine ranks first."""
    corpus = passages(e5_model, DOCUMENTS)
    asked = list(QUESTIONS) + CORPUS_QUERIES
    query_vectors = queries(e5_model, asked)
    scores = query_vectors.astype(np.float64) @ corpus.T.astype(np.float64)  # unit rows: cosine
    best = {question: (int(scores[i].argmax()), float(scores[i].max())) for i, question in enumerate(asked)}
    return {"corpus": corpus, "queries": dict(zip(asked, query_vectors)), "best": best}


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


def test_the_corpus_answers_each_question_by_model_encode(expected):
    """The premise of the retrieval tests: by Model.encode's vectors, each question's best document is its answer."""
    for question, row in QUESTIONS.items():
        assert expected["best"][question][0] == row, question


# ---------------------------------------------------------------- LangChain
def test_langchain_vectors_are_model_encode_with_e5_prompts(langchain_embeddings, expected):
    from langchain_core.embeddings import Embeddings

    assert isinstance(langchain_embeddings, Embeddings)
    documents = langchain_embeddings.embed_documents(DOCUMENTS[:20])  # the whole corpus: the store below
    assert isinstance(documents, list) and all(isinstance(v, list) and isinstance(v[0], float) for v in documents)
    np.testing.assert_allclose(documents, expected["corpus"][:20], atol=1e-6)
    question = "how do plants make sugar"
    np.testing.assert_allclose(langchain_embeddings.embed_query(question), expected["queries"][question], atol=1e-6)


def test_langchain_async_methods_are_the_inherited_ones_and_give_model_encode(langchain_embeddings, expected):
    """aembed_documents / aembed_query are langchain_core's (embed_* in a worker thread), not rewritten."""
    from langchain_core.embeddings import Embeddings
    from minie5.integrations.langchain import Minie5Embeddings

    assert Minie5Embeddings.aembed_documents is Embeddings.aembed_documents
    assert Minie5Embeddings.aembed_query is Embeddings.aembed_query

    async def both():
        return await asyncio.gather(langchain_embeddings.aembed_documents(DOCUMENTS[:20]),
                                    langchain_embeddings.aembed_query("how do plants make sugar"))

    documents, query = asyncio.run(both())
    np.testing.assert_allclose(documents, expected["corpus"][:20], atol=1e-6)
    np.testing.assert_allclose(query, expected["queries"]["how do plants make sugar"], atol=1e-6)


def test_langchain_in_memory_vector_store_finds_the_answer(langchain_embeddings, expected):
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore(langchain_embeddings)
    ids = store.add_documents([Document(page_content=text, metadata={"row": i}) for i, text in enumerate(DOCUMENTS)])
    assert len(ids) == len(DOCUMENTS) == 154
    for question, (row, score) in expected["best"].items():
        (found, found_score), = store.similarity_search_with_score(question, k=1)
        assert found.metadata["row"] == row, (question, found.page_content)
        assert abs(found_score - score) <= 1e-5, (question, found_score, score)
        print(f"langchain InMemoryVectorStore, 154 documents: {question!r} -> {found.page_content!r} "
              f"({found_score:.4f})")
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


def adapter_class(name: str):
    if name == "langchain":
        pytest.importorskip("langchain_core")
        from minie5.integrations.langchain import Minie5Embeddings
        return Minie5Embeddings
    pytest.importorskip("llama_index.core")
    from minie5.integrations.llama_index import Minie5Embedding
    return Minie5Embedding


@pytest.mark.parametrize("framework", ["langchain", "llama_index"])
def test_the_model_can_be_given_as_model_name(framework, e5_dir, e5_model, request):
    """model_name= as LangChain's HuggingFaceEmbeddings / FastEmbedEmbeddings and LlamaIndex's
    HuggingFaceEmbedding take it, or positionally (the module's fixtures); model_name reports it as given."""
    adapter = adapter_class(framework)
    by_position = request.getfixturevalue("langchain_embeddings" if framework == "langchain" else "llama_embedding")
    by_keyword = adapter(model_name=e5_dir)  # a Path
    assert by_keyword.model_name == by_position.model_name == str(e5_dir)
    assert by_keyword.model.model_dir == by_position.model.model_dir == e5_model.model_dir
    text = "Berlin is the capital of Germany."
    vector = by_keyword.embed_documents([text])[0] if framework == "langchain" else by_keyword.get_text_embedding(text)
    np.testing.assert_allclose(vector, passages(e5_model, [text])[0], atol=1e-6)
    with pytest.raises(TypeError, match="got the model twice"):
        adapter(e5_dir, model_name=str(e5_dir))


# ---------------------------------------------------------------- LlamaIndex
def test_llama_index_vectors_are_model_encode_with_e5_prompts(llama_embedding, expected):
    from llama_index.core.embeddings import BaseEmbedding

    assert isinstance(llama_embedding, BaseEmbedding)
    corpus, question = expected["corpus"], "how do plants make sugar"
    query = expected["queries"][question]
    np.testing.assert_allclose(llama_embedding.get_text_embedding_batch(DOCUMENTS[:20]), corpus[:20], atol=1e-6)
    np.testing.assert_allclose(llama_embedding.get_text_embedding(DOCUMENTS[0]), corpus[0], atol=1e-6)
    np.testing.assert_allclose(llama_embedding.get_query_embedding(question), query, atol=1e-6)
    np.testing.assert_allclose(asyncio.run(llama_embedding.aget_query_embedding(question)), query, atol=1e-6)
    np.testing.assert_allclose(asyncio.run(llama_embedding.aget_text_embedding(DOCUMENTS[1])), corpus[1], atol=1e-6)
    np.testing.assert_allclose(asyncio.run(llama_embedding.aget_text_embedding_batch(DOCUMENTS[:20])), corpus[:20],
                               atol=1e-6)


def test_llama_index_retriever_finds_the_answer_without_an_llm(llama_embedding, expected):
    from llama_index.core import Document, Settings, VectorStoreIndex

    Settings.llm = None  # a MockLLM: nothing may reach for OpenAI's default model
    Settings.embed_model = llama_embedding
    # the row stays out of the embedded text (LlamaIndex would otherwise embed "row: i" with each document)
    index = VectorStoreIndex.from_documents([
        Document(text=text, metadata={"row": i}, excluded_embed_metadata_keys=["row"])
        for i, text in enumerate(DOCUMENTS)])
    retriever = index.as_retriever(similarity_top_k=1)
    for question, (row, score) in expected["best"].items():
        (found,) = retriever.retrieve(question)
        assert found.node.metadata["row"] == row, (question, found.node.get_content())
        assert abs(found.score - score) <= 1e-5, (question, found.score, score)
        print(f"llama_index VectorStoreIndex retriever, 154 documents: {question!r} -> "
              f"{found.node.get_content()!r} ({found.score:.4f})")
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
