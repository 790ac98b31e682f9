"""Model: texts in, embeddings out.

    tokenize -> encode (fast Numba path, or the NumPy reference) -> pool -> normalise

Everything below this file works on token ids and arrays; this is the only
place that knows about text, prefixes and batching.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import reference
from .config import ModelConfig, read_config
from .hub import resolve_model_dir
from .tokenizer import Tokenizer
from .weights import load_weights

DEFAULT_MODEL = "intfloat/multilingual-e5-small"
PREFIXES = {"query": "query: ", "passage": "passage: "}
BACKENDS = ("fast", "reference")


class Model:
    """A loaded embedding model. Build it with minie5.load()."""

    def __init__(self, model_dir: str | Path, config: ModelConfig, weights: dict, tokenizer: Tokenizer,
                 backend: str = "fast", matmul: str = "numba"):
        self.model_dir = Path(model_dir)
        self.config = config  # ModelConfig: sizes, pooling, normalisation, max_seq_length
        self.weights = weights  # {name: read-only float32 array}, memory-mapped from model.safetensors
        self.tokenizer = tokenizer  # minie5.tokenizer.Tokenizer
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.matmul = matmul  # the fast path's matmul: "numba" (kernels.linear) or "blas" (numpy sgemm)
        self._encoder = None  # the fast path's FastEncoder, built on first use

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({str(self.model_dir)!r}, layers={c.num_hidden_layers}, hidden={c.hidden_size}, "
                f"heads={c.num_attention_heads}, pooling={c.pooling!r}, backend={self.backend!r})")

    # ---------------------------------------------------------------- ids -> vectors
    def forward(self, input_ids, attention_mask=None, token_type_ids=None, backend: str | None = None) -> np.ndarray:
        """Run the encoder: input_ids [batch, seq] -> last hidden state [batch, seq, hidden] float32.

        attention_mask defaults to all ones. Padding positions of the output hold
        whatever the encoder computes there (like transformers); only positions
        where attention_mask is 1 are meaningful. token_type_ids must be absent
        or all zero: minie5 runs embedding models, which use type 0 throughout.
        """
        input_ids = np.asarray(input_ids)
        if input_ids.ndim != 2 or not np.issubdtype(input_ids.dtype, np.integer):
            raise ValueError(f"input_ids must be a 2-D integer array [batch, seq], got shape {input_ids.shape} "
                             f"dtype {input_ids.dtype}")
        attention_mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask shape {attention_mask.shape} != input_ids shape {input_ids.shape}")
        if token_type_ids is not None and np.any(np.asarray(token_type_ids) != 0):
            raise ValueError("token_type_ids must be all 0: minie5 embeds with token type 0 only")
        batch, seq = input_ids.shape
        if seq > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {seq} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            bad = int(input_ids.max() if input_ids.max() >= self.config.vocab_size else input_ids.min())
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.config.vocab_size})")
        input_ids = input_ids.astype(np.int64, copy=False)
        attention_mask = (attention_mask != 0).astype(np.int64)
        if batch == 0 or seq == 0:
            return np.zeros((batch, seq, self.config.hidden_size), dtype=np.float32)
        backend = backend or self.backend
        if backend == "reference":
            return reference.forward(self.config, self.weights, input_ids, attention_mask)
        if backend != "fast":
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        return self._fast().forward(input_ids, attention_mask)

    def _fast(self):
        if self._encoder is None:
            from .encoder import FastEncoder  # imports Numba kernels on first use
            self._encoder = FastEncoder(self.config, self.weights, matmul=self.matmul)
        return self._encoder

    # ---------------------------------------------------------------- text -> vectors
    def encode(self, texts, batch_size: int = 32, normalize: bool | None = None, prefix: str | None = None,
               backend: str | None = None) -> np.ndarray:
        """Embed texts: a list of str -> float32 [n, hidden]; one str -> [hidden].

        prefix: None (texts used as given), "query" / "passage" (adds "query: " /
        "passage: ", what e5 expects), or any other string to prepend.
        normalize: None follows the model's files (e5: L2-normalised).
        Texts longer than max_seq_length tokens are truncated, like transformers.
        """
        single = isinstance(texts, str)
        items = [texts] if single else texts
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if prefix is not None:
            if not isinstance(prefix, str):
                raise TypeError(f"prefix must be a str or None, got {type(prefix).__name__}")
            prefix = PREFIXES.get(prefix, prefix)
            items = [prefix + t for t in items]
        normalize = self.config.normalize if normalize is None else bool(normalize)

        out = np.zeros((len(items), self.config.hidden_size), dtype=np.float32)
        backend = backend or self.backend
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        ids, _ = self.tokenizer.encode(list(items)) if items else ([], 0)
        # Sort by length so texts of similar length share a batch (the reference path
        # pads less; the fast path packs tokens without padding); output keeps input order.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            pooled = self._embed_ids([ids[i] for i in rows], backend)  # [b, H]
            out[rows] = reference.l2_normalize(pooled) if normalize else pooled
        return out[0] if single else out

    def _embed_ids(self, ids: list, backend: str) -> np.ndarray:
        """Token id lists -> pooled vectors [b, H] (before normalisation)."""
        if backend == "fast":
            from .encoder import pack
            return self._fast().embed_packed(*pack(ids), self.config.pooling)
        input_ids, attention_mask = self.tokenizer.pad(ids)  # [b, T] each
        hidden = reference.forward(self.config, self.weights, input_ids, attention_mask)  # [b, T, H]
        return reference.POOLERS[self.config.pooling](hidden, attention_mask)  # [b, H]

    def encode_queries(self, texts, **kwargs) -> np.ndarray:
        """encode() with the "query: " prefix (for the search side of e5)."""
        return self.encode(texts, prefix="query", **kwargs)

    def encode_passages(self, texts, **kwargs) -> np.ndarray:
        """encode() with the "passage: " prefix (for the documents side of e5)."""
        return self.encode(texts, prefix="passage", **kwargs)


def load(name_or_path: str | os.PathLike = DEFAULT_MODEL, revision: str | None = None,
         backend: str = "fast", matmul: str = "numba") -> Model:
    """Load a model from a local directory or a Hugging Face repo id.

    backend: "fast" (Numba kernels, the default) or "reference" (plain NumPy).
    matmul: the fast path's matrix multiply, "numba" (minie5's own kernel) or
    "blas" (numpy's sgemm).
    """
    if matmul not in ("numba", "blas"):
        raise ValueError(f"matmul must be 'numba' or 'blas', got {matmul!r}")
    model_dir = resolve_model_dir(name_or_path, revision)
    config = read_config(model_dir)
    weights = load_weights(model_dir / "model.safetensors", config)
    tokenizer = Tokenizer(model_dir, max_length=config.max_seq_length)
    if tokenizer.vocab_size > config.vocab_size:
        from .errors import ModelFileError
        raise ModelFileError(model_dir / "tokenizer.json",
                             f"tokenizer has {tokenizer.vocab_size} ids but config.json vocab_size is "
                             f"{config.vocab_size}: ids past the embedding matrix cannot be embedded")
    return Model(model_dir, config, weights, tokenizer, backend=backend, matmul=matmul)
