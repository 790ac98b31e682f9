"""minie5 as a LangChain embedding model: Minie5Embeddings implements langchain_core.embeddings.Embeddings.

    from langchain_core.vectorstores import InMemoryVectorStore
    from minie5.integrations.langchain import Minie5Embeddings

    embeddings = Minie5Embeddings("intfloat/multilingual-e5-small")   # or model_name="..."
    store = InMemoryVectorStore(embeddings)
    store.add_texts(["Berlin is the capital of Germany.", "Photosynthesis makes sugar from light."])
    store.similarity_search("how do plants make sugar", k=1)

Documents get the model's passage prompt and queries its query prompt (e5:
"passage: " / "query: "), as Model.encode_passages / encode_queries add them.
Needs langchain-core: pip install "minie5[langchain]".
"""
from __future__ import annotations

import os

from . import check_string, check_strings, model_to_load, require

Embeddings = require("langchain_core.embeddings", "langchain-core", "langchain",
                     "minie5.integrations.langchain").Embeddings

from ..model import DEFAULT_MODEL, load  # noqa: E402  (after the check that names the pip command)


class Minie5Embeddings(Embeddings):
    """A minie5 model behind LangChain's Embeddings interface.

    The async methods are Embeddings' own (aembed_documents / aembed_query run
    embed_documents / embed_query in the event loop's default executor, a worker
    thread): minie5 would do nothing else, so they are not written again here.
    """

    def __init__(self, model_name_or_path: str | os.PathLike | None = None, *,
                 model_name: str | os.PathLike | None = None, batch_size: int = 32, **load_options):
        """model_name_or_path (or model_name=, as in LangChain's HuggingFaceEmbeddings) and load_options
        (revision, backend, matmul) as minie5.load takes them; batch_size: texts per forward pass."""
        model = model_to_load(model_name_or_path, model_name, DEFAULT_MODEL, "Minie5Embeddings")
        self.model = load(model, **load_options)  # the minie5.Model doing the work
        self.model_name = str(model)  # the hub id or directory, as given
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"Minie5Embeddings({self.model_name!r})"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Texts -> one embedding (a list of floats) each, with the passage prompt."""
        texts = check_strings(texts, "embed_documents")
        return self.model.encode_passages(texts, batch_size=self.batch_size).tolist()  # [n][hidden]

    def embed_query(self, text: str) -> list[float]:
        """One text -> its embedding, with the query prompt."""
        return self.model.encode_queries(check_string(text, "embed_query"), batch_size=self.batch_size).tolist()
