"""minie5 as a LlamaIndex embedding model: Minie5Embedding implements llama_index.core.embeddings.BaseEmbedding.

    from llama_index.core import Document, Settings, VectorStoreIndex
    from minie5.integrations.llama_index import Minie5Embedding

    Settings.embed_model = Minie5Embedding("intfloat/multilingual-e5-small")
    index = VectorStoreIndex.from_documents([Document(text="Berlin is the capital of Germany.")])
    index.as_retriever(similarity_top_k=1).retrieve("capital of Germany")

Texts (the nodes of documents) get the model's passage prompt and queries its
query prompt (e5: "passage: " / "query: "), as Model.encode_passages /
encode_queries add them. Needs llama-index-core: pip install "minie5[llama-index]".
"""
from __future__ import annotations

import asyncio
import os

from . import check_string, check_strings, model_to_load, require

BaseEmbedding = require("llama_index.core.embeddings", "llama-index-core", "llama-index",
                        "minie5.integrations.llama_index").BaseEmbedding

from pydantic import PrivateAttr  # noqa: E402  (a dependency of llama-index-core)

from ..model import DEFAULT_MODEL, load  # noqa: E402


class Minie5Embedding(BaseEmbedding):
    """A minie5 model behind LlamaIndex's BaseEmbedding interface (query and text methods, sync and async)."""

    _model = PrivateAttr()  # the minie5.Model doing the work

    def __init__(self, model_name_or_path: str | os.PathLike | None = None, *,
                 model_name: str | os.PathLike | None = None, embed_batch_size: int = 32, callback_manager=None,
                 num_workers: int | None = None, **load_options):
        """model_name_or_path (or model_name=, as in LlamaIndex's HuggingFaceEmbedding) and load_options
        (revision, backend, matmul) as minie5.load takes them; embed_batch_size: texts per encode call
        (LlamaIndex batches nodes by it). self.model_name is the hub id or directory as given."""
        name = model_to_load(model_name_or_path, model_name, DEFAULT_MODEL, "Minie5Embedding")
        model = load(name, **load_options)
        super().__init__(model_name=str(name), embed_batch_size=embed_batch_size,
                         callback_manager=callback_manager, num_workers=num_workers)
        self._model = model

    @classmethod
    def class_name(cls) -> str:
        return "Minie5Embedding"

    @property
    def model(self):
        """The minie5.Model doing the work."""
        return self._model

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._model.encode_queries(check_string(query, "get_query_embedding")).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._model.encode_passages(check_string(text, "get_text_embedding")).tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        texts = check_strings(texts, "get_text_embeddings")
        return self._model.encode_passages(texts, batch_size=self.embed_batch_size).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
