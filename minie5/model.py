"""Model: texts in, embeddings out.

    tokenize -> encode (fast Numba path, or the NumPy reference) -> pool -> normalise

Everything below this file works on token ids and arrays; this is the only
place that knows about text, prefixes and batching.
"""
from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import reference
from .checkpoint.config import ModelConfig, read_config
from .errors import InputError, ModelFileError, TruncationWarning
from .checkpoint.hub import resolve_model_dir
from .io.progress import Progress
from .embedding_precision import check_precision, quantize_embeddings
from .tokenizer import Tokenizer, first_lone_surrogate

DEFAULT_MODEL = "intfloat/multilingual-e5-small"
BACKENDS = ("fast", "reference")
LONG_MODES = ("truncate", "window")  # what encode() does with a text longer than max_length tokens
DEFAULT_CHUNK_SIZE = 4096  # texts read, sorted by length and embedded together by encode_chunks / encode_iter


@dataclass(frozen=True)
class EncodeOptions:
    """The checked options of one encode call (see Model.encode)."""
    batch_size: int
    normalize: bool
    prefix: str  # "" for none
    backend: str
    long: str  # "truncate" or "window"
    max_length: int  # tokens per sequence, <s> and </s> included


@dataclass(frozen=True)
class ForwardOutput:
    """What Model.forward returns when asked for intermediates (output_hidden_states / output_attentions).

    last_hidden_state: [batch, seq, hidden] float32, as Model.forward returns without flags.
    hidden_states: L + 1 arrays [batch, seq, hidden]: the embedding layer's output,
        then the output of each of the L layers (the last one is last_hidden_state);
        None unless output_hidden_states. transformers' `hidden_states`.
    attentions: L arrays [batch, heads, seq, seq]: each layer's attention
        probabilities, attentions[l][b, a, i, j] = how much query token i reads
        from key token j in head a (each real query's row sums to 1, and is 0
        at padding keys); None unless output_attentions. transformers' `attentions`.
    At padding positions (attention_mask 0) the reference path holds whatever
    it computes there (like transformers: padded queries still attend to the
    real keys); the fast path holds 0. Compare on real positions only.
    Memory: attentions take layers x batch x heads x seq^2 x 4 bytes (e5-small,
    32 texts of 512 tokens: 4.8 GB), so ask for them on small batches.
    """
    last_hidden_state: np.ndarray
    hidden_states: tuple | None = None
    attentions: tuple | None = None


def check_texts(texts, first_index: int = 0) -> None:
    """Every item must be a str of valid Unicode: the error names the index of the first that is not."""
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{first_index + i}] is {type(t).__name__}, expected str")
        position = first_lone_surrogate(t)
        if position is not None:
            raise ValueError(f"texts[{first_index + i}] has a lone surrogate {t[position]!r} at position "
                             f"{position}: it is not valid Unicode text and cannot be tokenized")


def warn_truncated(truncated: int, total: int, max_length: int) -> None:
    """One TruncationWarning for a whole call, with the count (nothing if no text was cut)."""
    if truncated:
        warnings.warn(f"{truncated} of {total} texts were longer than {max_length} tokens and were truncated "
                      f"to their first {max_length} (long='window' embeds all of a text)",
                      TruncationWarning, stacklevel=3)


def combine_windows(pooled: np.ndarray, owner: np.ndarray, lengths: np.ndarray, n_texts: int) -> np.ndarray:
    """The windows' pooled vectors -> one vector per text: their token-count-weighted mean.

    pooled [W, H]: one row per window; owner [W]: the text of each window (a
    text's windows consecutive); lengths [W]: ids in each window, <s> and </s>
    included. With mean pooling this is the mean of every token state of every
    window. A text with a single window gets that window's row unchanged, bit for bit.
    """
    counts = np.bincount(owner, minlength=n_texts)  # windows per text
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)  # each text's first window
    out = pooled[first].copy()  # already the answer for every one-window text
    for i in np.flatnonzero(counts > 1):
        rows = slice(first[i], first[i] + counts[i])
        weights = lengths[rows].astype(np.float64)
        out[i] = (weights @ pooled[rows].astype(np.float64)) / weights.sum()
    return out


class Model:
    """A loaded embedding model. Build it with minie5.load()."""

    def __init__(self, model_dir: str | Path, config: ModelConfig, weights: dict, tokenizer: Tokenizer,
                 backend: str = "fast", matmul: str = "auto", quantize: str | None = None):
        self.model_dir = Path(model_dir)
        self.config = config  # ModelConfig: sizes, pooling, normalisation, max_seq_length
        self.weights = weights  # {name: read-only float32 array}, memory-mapped from model.safetensors
        self.tokenizer = tokenizer  # minie5.tokenizer.Tokenizer
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.matmul = matmul  # the fast path's matmul: "auto", "numba" or "blas" (see load)
        self.quantize = quantize  # None (float weights) or "int8": the weights hold QuantizedMatrix (checkpoint/quantize_model.py)
        self._encoder = None  # the fast path's FastEncoder, built on first use

    def __repr__(self) -> str:
        c = self.config
        return (f"Model({str(self.model_dir)!r}, layers={c.num_hidden_layers}, hidden={c.hidden_size}, "
                f"heads={c.num_attention_heads}, pooling={c.pooling!r}, backend={self.backend!r}"
                + (f", quantize={self.quantize!r})" if self.quantize else ")"))

    # ---------------------------------------------------------------- ids -> vectors
    def forward(self, input_ids, attention_mask=None, token_type_ids=None, backend: str | None = None, *,
                output_hidden_states: bool = False, output_attentions: bool = False):
        """Run the encoder: input_ids [batch, seq] -> last hidden state [batch, seq, hidden] float32.

        attention_mask defaults to all ones. Padding positions of the output hold
        whatever the encoder computes there (like transformers); only positions
        where attention_mask is 1 are meaningful. token_type_ids must be absent
        or all zero: minie5 runs embedding models, which use type 0 throughout.
        With output_hidden_states and/or output_attentions, returns a
        ForwardOutput instead: the last hidden state plus every layer's hidden
        state and/or attention probabilities (see ForwardOutput).
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
        if seq > self.config.max_positions:
            raise ValueError(f"sequence length {seq} exceeds the {self.config.max_positions} positions "
                             f"the model can embed")
        if input_ids.size and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            bad = int(input_ids.max() if input_ids.max() >= self.config.vocab_size else input_ids.min())
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.config.vocab_size})")
        input_ids = input_ids.astype(np.int64, copy=False)
        attention_mask = (attention_mask != 0).astype(np.int64)
        backend = backend or self.backend
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not (output_hidden_states or output_attentions):
            if batch == 0 or seq == 0:
                return np.zeros((batch, seq, self.config.hidden_size), dtype=np.float32)
            if backend == "reference":
                return reference.forward(self.config, self.weights, input_ids, attention_mask)
            return self._fast().forward(input_ids, attention_mask)
        return self._forward_with_intermediates(input_ids, attention_mask, backend,
                                                output_hidden_states, output_attentions)

    def _forward_with_intermediates(self, input_ids, attention_mask, backend: str, output_hidden_states: bool,
                                    output_attentions: bool) -> ForwardOutput:
        """Model.forward with output_hidden_states / output_attentions (inputs already checked)."""
        c = self.config
        batch, seq = input_ids.shape
        if batch == 0 or seq == 0:
            hidden = tuple(np.zeros((batch, seq, c.hidden_size), np.float32) for _ in range(c.num_hidden_layers + 1))
            attentions = tuple(np.zeros((batch, c.num_attention_heads, seq, seq), np.float32)
                               for _ in range(c.num_hidden_layers))
            last = hidden[-1]
        elif backend == "reference":
            hidden, attentions = reference.forward_with_intermediates(c, self.weights, input_ids, attention_mask)
            last = hidden[-1]
        else:
            last, hidden, attentions = self._fast().forward_with_intermediates(
                input_ids, attention_mask, hidden_states=output_hidden_states, attentions=output_attentions)
            last = hidden[-1] if hidden else last  # the same values; one array when both are returned
        return ForwardOutput(last_hidden_state=last,
                             hidden_states=tuple(hidden) if output_hidden_states else None,
                             attentions=tuple(attentions) if output_attentions else None)

    def _fast(self):
        if self._encoder is None:
            from .engine.encoder import FastEncoder  # imports Numba kernels on first use
            self._encoder = FastEncoder(self.config, self.weights, matmul=self.matmul, quantize=self.quantize)
        return self._encoder

    # ---------------------------------------------------------------- text -> vectors
    def encode(self, texts, batch_size: int = 32, normalize: bool | None = None, prefix: str | None = None,
               backend: str | None = None, *, long: str = "truncate", max_length: int | None = None,
               show_progress=False, precision: str = "float32") -> np.ndarray:
        """Embed texts: a list of str -> float32 [n, hidden]; one str -> [hidden].

        prefix: None (texts used as given, unless the model declares a default
        prompt), a prompt name: "query" / "passage" (e5: adds "query: " /
        "passage: ") or any name the model's config_sentence_transformers.json
        declares, or any other string to prepend. See ModelConfig.prompt.
        normalize: None follows the model's files (e5: L2-normalised).
        max_length: tokens per text, <s> and </s> included; None is the model's
        max_seq_length (512 for e5), at most config.max_positions (the positions
        the model can embed: 512 for e5).
        long: what happens to a text longer than max_length tokens:
          "truncate" (default) keeps its first max_length tokens, exactly like
            transformers, and warns once per call (TruncationWarning) with the count;
          "window" embeds all of it: the text's tokens are cut into windows of
            max_length - 2, each embedded as <s> window </s>, and the windows'
            vectors averaged weighted by their token counts, then normalised.
            A text that fits in max_length gives exactly the "truncate" result.
        show_progress: True draws a progress bar on stderr (texts/s, tokens/s);
        a number of seconds draws it only once the job has run that long.
        precision: "float32", or "int8" / "uint8" / "binary" / "ubinary": the
        embeddings quantised for storage as sentence-transformers does it, int8 /
        uint8 calibrated on this call's embeddings (embedding_precision.py; for fixed ranges,
        minie5.quantize_embeddings(embeddings, precision, ranges=...)).
        """
        check_precision(precision)
        single = isinstance(texts, str)
        items = [texts] if single else texts
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"texts must be a str or a list of str, got {type(texts).__name__}")
        out, truncated = self.encode_counted(list(items), batch_size, normalize, prefix, backend, long=long,
                                             max_length=max_length, show_progress=show_progress)
        warn_truncated(truncated, len(items), max_length or self.tokenizer.max_length)
        if precision != "float32":
            out = quantize_embeddings(out, precision)  # [n, hidden] int8 / uint8, or [n, hidden / 8] bits
        return out[0] if single else out

    def encode_counted(self, texts: list, batch_size: int = 32, normalize: bool | None = None,
                       prefix: str | None = None, backend: str | None = None, *, long: str = "truncate",
                       max_length: int | None = None, show_progress=False) -> tuple[np.ndarray, int]:
        """A list of str -> (float32 [n, hidden], how many texts were truncated), without a warning.

        encode() for a caller that reports the truncations itself (the Ray
        actors add them up over a job); options as in encode().
        """
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
        check_texts(texts)
        options = self._options(batch_size, normalize, prefix, backend, long, max_length)
        with Progress(show_progress, total=len(texts)) as progress:
            return self._embed_texts(list(texts), options, progress)

    def encode_chunks(self, texts, batch_size: int = 32, normalize: bool | None = None, prefix: str | None = None,
                      backend: str | None = None, *, long: str = "truncate", max_length: int | None = None,
                      show_progress=False, chunk_size: int = DEFAULT_CHUNK_SIZE, total: int | None = None):
        """Embed any iterable of str lazily: yields float32 [k, hidden] blocks, in input order.

        Reads chunk_size texts, embeds them (sorted by length into batches of
        batch_size inside the chunk), yields the chunk's rows in input order,
        then reads the next chunk: memory is bounded by chunk_size, whatever
        the number of texts. The blocks, stacked, equal encode(list(texts)) up
        to float rounding. Options as in encode(); total (default: len(texts)
        if it has one) is only for the progress bar. The truncation warning
        comes once, when the iteration ends, with the count over all chunks.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of str, got one str (use encode(text) for one text)")
        try:
            iterator = iter(texts)
        except TypeError:
            raise TypeError(f"texts must be an iterable of str, got {type(texts).__name__}") from None
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        options = self._options(batch_size, normalize, prefix, backend, long, max_length)
        if total is None and hasattr(texts, "__len__"):
            total = len(texts)
        return self._chunks(iterator, options, chunk_size, show_progress, total)

    def encode_iter(self, texts, batch_size: int = 32, **options):
        """Embed any iterable of str lazily: yields one float32 [hidden] vector per text, in input order.

        encode_chunks() one row at a time; same options. For example, a file
        of one text per line, with memory independent of its length:

            with open("docs.txt", encoding="utf-8") as f:
                for vector in model.encode_iter(line.rstrip("\\n") for line in f):
                    ...
        """
        blocks = self.encode_chunks(texts, batch_size, **options)  # checks the options now, not at first next()
        return (row for block in blocks for row in block)

    def _chunks(self, iterator, options: "EncodeOptions", chunk_size: int, show_progress, total: int | None):
        """The generator behind encode_chunks (options already checked)."""
        seen = truncated = 0
        progress = Progress(show_progress, total=total)
        try:
            while True:
                chunk = list(itertools.islice(iterator, chunk_size))
                if not chunk:
                    return
                check_texts(chunk, first_index=seen)
                block, n_truncated = self._embed_texts(chunk, options, progress)
                seen += len(chunk)
                truncated += n_truncated
                yield block
        finally:  # also when the caller stops early: say what was truncated so far
            progress.close()
            warn_truncated(truncated, seen, options.max_length)

    def encode_ids(self, ids, batch_size: int = 32, normalize: bool | None = None,
                   backend: str | None = None) -> np.ndarray:
        """Embed texts already tokenized: a list of token id lists -> float32 [n, hidden].

        Each list is one text's complete model input, special tokens included,
        exactly as the tokenizer gives it (e5: [0, ..., 2], <s> ... </s>); no
        prefix is added and nothing is truncated, so each list must hold 1 to
        config.max_positions ids, each in [0, vocab_size). For the ids of a
        text, encode_ids(ids) equals encode([text]) up to float rounding.
        normalize: None follows the model's files (e5: L2-normalised).
        """
        if not isinstance(ids, (list, tuple)):
            raise TypeError(f"ids must be a list of lists of token ids, got {type(ids).__name__}")
        limit, vocab = self.config.max_positions, self.config.vocab_size
        for i, row in enumerate(ids):
            if not isinstance(row, (list, tuple)):
                raise TypeError(f"ids[{i}] is {type(row).__name__}, expected a list of token ids")
            if not 1 <= len(row) <= limit:
                raise InputError(f"ids[{i}] has {len(row)} tokens; the model embeds 1 to {limit}")
            for token in row:
                if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < vocab:
                    raise InputError(f"ids[{i}] holds {token!r}, not a token id in [0, {vocab})")
        options = self._options(batch_size, normalize, None, backend, "truncate", None)
        if not ids:
            return np.zeros((0, self.config.hidden_size), dtype=np.float32)
        pooled = self._embed_sorted([list(row) for row in ids], options, lambda rows, tokens: None)
        return reference.l2_normalize(pooled) if options.normalize else pooled

    def _options(self, batch_size, normalize, prefix, backend, long, max_length) -> "EncodeOptions":
        """Check encode()'s options; fill in the model's defaults."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str or None, got {type(prefix).__name__}")
        backend = backend or self.backend
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if long not in LONG_MODES:
            raise InputError(f"long must be one of {LONG_MODES}, got {long!r}")
        max_length = self.tokenizer.max_length if max_length is None else max_length
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise InputError(f"max_length must be an integer, got {max_length!r}")
        if max_length < 1:
            raise InputError(f"max_length must be a positive number of tokens, got {max_length}")
        if max_length > self.config.max_positions:
            raise InputError(f"max_length {max_length} exceeds the {self.config.max_positions_explained()}")
        specials = self.tokenizer.num_special_tokens
        least = specials + 1 if long == "window" else specials
        if max_length < least:
            what = "and at least one token of text per window" if long == "window" else "tokens"
            raise InputError(f"max_length must be at least {least} (room for {specials} special {what}), "
                             f"got {max_length}")
        return EncodeOptions(batch_size=batch_size,
                             normalize=self.config.normalize if normalize is None else bool(normalize),
                             prefix=self.config.prompt(prefix),  # prompt name -> its text (checkpoint/config.py)
                             backend=backend, long=long, max_length=max_length)

    def _embed_texts(self, texts: list, options: "EncodeOptions", progress: Progress) -> tuple[np.ndarray, int]:
        """Texts -> (embeddings [n, hidden] in input order, how many texts were truncated)."""
        if options.prefix:
            texts = [options.prefix + t for t in texts]
        if not texts:
            return np.zeros((0, self.config.hidden_size), dtype=np.float32), 0
        if options.long == "window":
            pooled, truncated = self._embed_windows(texts, options, progress), 0
        else:
            ids, truncated = self.tokenizer.encode(texts, options.max_length)  # cut like transformers
            pooled = self._embed_sorted(ids, options, lambda rows, tokens: progress.update(len(rows), tokens))
        return (reference.l2_normalize(pooled) if options.normalize else pooled), truncated

    def _embed_sorted(self, ids: list, options: "EncodeOptions", on_batch) -> np.ndarray:
        """Token id lists -> pooled vectors [n, hidden] in input order, not normalised.

        Sorts by length so that texts of similar length share a batch (the
        reference path pads less; the fast path packs tokens without padding).
        on_batch(rows, n_tokens) is called after each batch, for progress.
        """
        out = np.empty((len(ids), self.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), options.batch_size):
            rows = order[start:start + options.batch_size]
            batch = [ids[i] for i in rows]
            out[rows] = self._embed_ids(batch, options.backend)  # [b, H]
            on_batch(rows, sum(len(x) for x in batch))
        return out

    def _embed_windows(self, texts: list, options: "EncodeOptions", progress: Progress) -> np.ndarray:
        """long="window": every token of every text -> [n, hidden], not normalised.

        Each text's pieces are cut into windows of max_length - 2 (Tokenizer.windows),
        each embedded as <s> window </s>; combine_windows joins a text's window vectors.
        """
        per_text = [self.tokenizer.windows(content, options.max_length)
                    for content in self.tokenizer.content_ids(texts)]  # all of each text
        windows = [w for text_windows in per_text for w in text_windows]
        owner = np.repeat(np.arange(len(texts)), [len(w) for w in per_text])  # [windows]: the text of each
        remaining = np.bincount(owner, minlength=len(texts))  # windows not yet embedded, per text

        def on_batch(rows, n_tokens):  # progress counts a text once its last window is done
            texts_in_batch = np.unique(owner[rows])
            np.subtract.at(remaining, owner[rows], 1)
            progress.update(int(np.count_nonzero(remaining[texts_in_batch] == 0)), n_tokens)

        pooled = self._embed_sorted(windows, options, on_batch)  # [windows, H]
        lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=len(windows))
        return combine_windows(pooled, owner, lengths, len(texts))

    def _embed_ids(self, ids: list, backend: str) -> np.ndarray:
        """Token id lists -> pooled vectors [b, H] (before normalisation)."""
        if backend == "fast":
            from .engine.encoder import pack
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
         backend: str = "fast", matmul: str = "auto", quantize: str | None = None) -> Model:
    """Load a model from a local directory or a Hugging Face repo id.

    backend: "fast" (Numba kernels, the default) or "reference" (plain NumPy).
    matmul: the engine of the fast path's matrix products: "auto" (the default:
    minie5's Numba matmul below 64 tokens per batch, numpy's sgemm from there),
    "numba" (the Numba matmul always) or "blas" (sgemm always); see engine/matmul_plan.py.
    All three give the same results to float32 rounding (docs/behaviour.md).
    quantize: None (the weights as the files hold them) or "int8": quantise a
    float model's linear layers and word embeddings to int8 at load (checkpoint/quantize_model.py,
    docs/quantization.md). A directory written by `minie5 quantize` is int8 either way.
    """
    from .engine.matmul_plan import MATMULS  # imports Numba and its kernels (compiled on first use)
    from .checkpoint.quantize_model import check_quantize, load_quantized
    if matmul not in MATMULS:
        raise ValueError(f"matmul must be one of {MATMULS}, got {matmul!r}")
    check_quantize(quantize)
    model_dir = resolve_model_dir(name_or_path, revision)
    config = read_config(model_dir)
    weights, quantize = load_quantized(model_dir, config, quantize)
    tokenizer = Tokenizer(model_dir, max_length=config.max_seq_length)
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelFileError(model_dir / "tokenizer.json",
                             f"tokenizer has {tokenizer.vocab_size} ids but config.json vocab_size is "
                             f"{config.vocab_size}: ids past the embedding matrix cannot be embedded")
    return Model(model_dir, config, weights, tokenizer, backend=backend, matmul=matmul, quantize=quantize)
