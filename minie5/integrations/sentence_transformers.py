"""minie5.SentenceTransformer: the common part of sentence-transformers' API, on minie5's encoder.

    from minie5 import SentenceTransformer     # instead of: from sentence_transformers import SentenceTransformer
    model = SentenceTransformer("intfloat/multilingual-e5-small")
    query = model.encode_query("how much protein should a female eat")            # "query: " prepended
    docs = model.encode_document(["Women need about 46 grams of protein a day."])   # "passage: "
    model.similarity(query, docs)                                                  # [1, 1] cosine, NumPy

The methods take sentence-transformers' arguments (version 6; the `sentences=`
keyword of earlier versions too), in the same order and with the same meaning,
and return what sentence-transformers returns with convert_to_numpy=True.
Arguments that need torch or another device (convert_to_tensor=True,
device="cuda", multi-process pools, token embeddings...) raise
UnsupportedArgumentError naming them: nothing is silently ignored.

Prompts follow sentence-transformers: the names "query" and "document" always
exist (empty unless set), the model's config_sentence_transformers.json fills
them in, and `prompts=` given here wins. e5 models declare no prompts in their
files, so for a model whose name says e5 (intfloat/multilingual-e5-small,
e5-small-v2...) minie5 supplies e5's own: query -> "query: ", document and
passage -> "passage: ". Pass prompts= to change them.
"""
from __future__ import annotations

import contextlib
import os
import re
import warnings
from enum import Enum
from pathlib import Path

import numpy as np

from ..checkpoint.config import read_json_object
from ..errors import ModelFileError, UnsupportedArgumentError
from ..model import check_texts, load
from ..embedding_precision import check_precision, quantize_embeddings
from ..reference import l2_normalize

# sentence-transformers' prompt names that always exist ("" until a file or the caller sets them).
DEFAULT_PROMPT_NAMES = ("query", "document")
# The prompts of e5 models, whose files declare none (see the module docstring).
E5_PROMPTS = {"query": "query: ", "document": "passage: ", "passage": "passage: "}
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")  # encode_document takes the first the model has
E5_NAME = re.compile(r"(^|[^a-z0-9])e5([^a-z0-9]|$)")  # "multilingual-e5-small", "e5-small-v2", "e5-base"
SIMILARITY_FN_NAMES = ("cosine", "dot", "euclidean", "manhattan")
BACKENDS = ("torch",)  # sentence-transformers' default; its "onnx" / "openvino" engines are not minie5's


class SimilarityFunction(Enum):
    """The values of similarity_fn_name, as sentence_transformers.SimilarityFunction names them."""
    COSINE = "cosine"
    DOT_PRODUCT = "dot"
    DOT = "dot"  # an alias of DOT_PRODUCT
    EUCLIDEAN = "euclidean"  # minus the euclidean distance
    MANHATTAN = "manhattan"  # minus the manhattan distance


def is_e5_name(name_or_path) -> bool:
    """Whether a hub id or directory names an e5 model (its last part holds the word "e5")."""
    return bool(E5_NAME.search(Path(str(name_or_path)).name.lower()))


def unsupported(argument: str, value, why: str) -> UnsupportedArgumentError:
    """The error for an argument minie5 cannot honour: names it, its value and what to do instead."""
    return UnsupportedArgumentError(f"{argument}={value!r} is not supported by minie5.SentenceTransformer: {why}")


def check_device(device, where: str) -> None:
    """None or "cpu" (a str or a torch.device): minie5 runs on the CPU only."""
    if device is not None and str(device) != "cpu":
        raise unsupported(f"{where}device", device, "minie5 runs on the CPU only (use device=None or 'cpu')")


def as_matrix(embeddings, what: str) -> np.ndarray:
    """Embeddings (NumPy array, list, or a CPU torch tensor) -> a float array [n, dim]; one vector -> [1, dim]."""
    array = np.asarray(embeddings)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{what} must hold numbers (embeddings), got {array.dtype}")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{what} must be [n, dim] or [dim], got shape {list(array.shape)}")
    if array.dtype.kind != "f" or array.dtype.itemsize < 4:  # integers, float16: float32, as sentence-transformers
        array = array.astype(np.float32)
    return array


def similarity_matrix(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, dim] x [m, dim] -> [n, m] scores: cosine, dot product, or minus the euclidean / manhattan distance.

    The distances never build the [n, m, dim] array of differences (10,000 x 10,000
    texts at 384 dimensions would be 150 GB): besides the [n, m] result, memory
    holds one block of rows (euclidean) or nothing (manhattan).
    """
    if name == "cosine":
        return l2_normalize(a) @ l2_normalize(b).T
    if name == "dot":
        return a @ b.T
    if name == "euclidean":
        return -euclidean_distances(a, b)
    from ..engine.kernels import manhattan_distances  # Numba: imported on first use, not by `import minie5`
    distances = np.empty((len(a), len(b)), dtype=score_dtype(a, b))  # [n, m]
    manhattan_distances(np.ascontiguousarray(a), np.ascontiguousarray(b), distances)
    return np.negative(distances, out=distances)


def score_dtype(a: np.ndarray, b: np.ndarray) -> np.dtype:
    """float32 for float32 (or narrower) embeddings, float64 if either is float64, as sentence-transformers."""
    return np.result_type(a, b, np.float32)


DISTANCE_BLOCK_BYTES = 16 << 20  # euclidean_distances' float64 work per block of rows: 16 MB


def euclidean_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, dim] x [m, dim] -> [n, m]: |a_i - b_j| = sqrt(|a_i|^2 + |b_j|^2 - 2 a_i.b_j), a block of rows at a time.

    In float64: in float32 the three terms cancel for close vectors (|a - b|^2 of
    unit vectors 1e-4 apart is 1e-8, below float32's rounding of 2), and the
    square root would turn that rounding into an error of 3e-4. Rounding can still
    leave a tiny negative square, hence the clip at 0.
    """
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    a_squares = (a64 * a64).sum(axis=1)  # [n]
    b_squares = (b64 * b64).sum(axis=1)  # [m]
    distances = np.empty((len(a), len(b)), dtype=score_dtype(a, b))  # [n, m]
    rows = max(1, DISTANCE_BLOCK_BYTES // (8 * max(1, len(b))))
    for start in range(0, len(a), rows):
        stop = min(len(a), start + rows)
        squares = a64[start:stop] @ b64.T  # [rows, m]: a_i.b_j
        squares *= -2.0
        squares += a_squares[start:stop, None]
        squares += b_squares[None, :]
        np.maximum(squares, 0.0, out=squares)
        distances[start:stop] = np.sqrt(squares, out=squares)
    return distances


def similarity_pairs(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, dim] x [n, dim] -> [n] scores of each pair (a[i], b[i]), as similarity_matrix scores them."""
    if name == "cosine":
        return (l2_normalize(a) * l2_normalize(b)).sum(axis=-1)
    if name == "dot":
        return (a * b).sum(axis=-1)
    if name == "euclidean":
        return -np.sqrt(((a - b) ** 2).sum(axis=-1))
    return -np.abs(a - b).sum(axis=-1)


class SentenceTransformer:
    """sentence_transformers.SentenceTransformer's inference API on a minie5 model (see the module docstring)."""

    def __init__(self, model_name_or_path: str | os.PathLike, *, modules=None, device=None,
                 prompts: dict | None = None, default_prompt_name: str | None = None, cache_folder=None,
                 trust_remote_code: bool = False, revision: str | None = None, local_files_only: bool = False,
                 token=None, use_auth_token=None, model_kwargs=None, processor_kwargs=None, tokenizer_kwargs=None,
                 config_kwargs=None, model_card_data=None, backend: str = "torch", similarity_fn_name=None,
                 truncate_dim: int | None = None):
        """Load the model as minie5.load(model_name_or_path, revision=revision) does.

        trust_remote_code is accepted either way: minie5 never runs code from a
        model repo (a model that needs it is refused at load by its model_type).
        """
        if model_name_or_path is None:
            raise unsupported("model_name_or_path", None, "an empty model to fill with modules needs "
                              "sentence-transformers; give a hub id or a model directory")
        refusals = {
            "modules": (modules, "minie5 builds the model from the files of model_name_or_path"),
            "cache_folder": (cache_folder, "set HF_HUB_CACHE (or HF_HOME) to choose the hub cache"),
            "token": (token, "set HF_TOKEN (huggingface_hub reads it)"),
            "use_auth_token": (use_auth_token, "set HF_TOKEN (huggingface_hub reads it)"),
            "model_kwargs": (model_kwargs or None, "minie5 loads no transformers model"),
            "processor_kwargs": (processor_kwargs or None, "minie5 builds the tokenizer from tokenizer.json"),
            "tokenizer_kwargs": (tokenizer_kwargs or None, "minie5 builds the tokenizer from tokenizer.json"),
            "config_kwargs": (config_kwargs or None, "minie5 reads config.json as it is"),
            "model_card_data": (model_card_data, "minie5 writes no model cards"),
        }
        for argument, (value, why) in refusals.items():
            if value is not None:
                raise unsupported(argument, value, why)
        check_device(device, "")
        if backend not in BACKENDS:
            raise unsupported("backend", backend, "minie5 is its own engine (the default backend='torch' "
                                                  "stands for it)")
        if local_files_only and not Path(model_name_or_path).expanduser().is_dir():
            raise unsupported("local_files_only", True, "for a hub id, set HF_HUB_OFFLINE=1 to use only the hub cache")
        self.model_name_or_path = str(model_name_or_path)
        self.model = load(model_name_or_path, revision=revision)  # the minie5.Model doing the work
        saved = self._saved_settings()
        self.prompts = self._merge_prompts(prompts, saved)
        self.default_prompt_name = default_prompt_name if default_prompt_name is not None else saved["default"]
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(f"Default prompt name '{self.default_prompt_name}' not found in the configured prompts "
                             f"dictionary with keys {list(self.prompts)!r}.")
        self.similarity_fn_name = similarity_fn_name or saved["similarity"] or "cosine"
        self.truncate_dim = self._check_truncate_dim(truncate_dim if truncate_dim is not None else saved["truncate"],
                                                     "truncate_dim")
        self._max_seq_length = self.model.config.max_seq_length

    def __repr__(self) -> str:
        return (f"minie5.SentenceTransformer({self.model_name_or_path!r}, dim={self.get_embedding_dimension()}, "
                f"max_seq_length={self.max_seq_length}, prompts={self.prompts!r})")

    # ---------------------------------------------------------------- settings
    def _saved_settings(self) -> dict:
        """What config_sentence_transformers.json declares: prompts, default prompt, similarity, truncate_dim."""
        path = self.model.model_dir / "config_sentence_transformers.json"
        raw = read_json_object(path) if path.is_file() else {}  # read_config has checked prompts and default
        similarity = raw.get("similarity_fn_name")
        if similarity is not None and similarity not in SIMILARITY_FN_NAMES:
            raise ModelFileError(path, f"field 'similarity_fn_name' is {similarity!r}; minie5.SentenceTransformer "
                                       f"computes {', '.join(SIMILARITY_FN_NAMES)}")
        truncate = raw.get("truncate_dim")
        if truncate is not None and (isinstance(truncate, bool) or not isinstance(truncate, int) or truncate < 1):
            raise ModelFileError(path, f"field 'truncate_dim' must be a positive integer, got {truncate!r}")
        declared = dict(self.model.config.prompts) if raw.get("prompts") is not None else None
        if declared is None and is_e5_name(self.model_name_or_path):
            declared = dict(E5_PROMPTS)
        return {"prompts": declared or {}, "default": raw.get("default_prompt_name"), "similarity": similarity,
                "truncate": truncate}

    @staticmethod
    def _merge_prompts(given: dict | None, saved: dict) -> dict:
        """sentence-transformers' rule: query/document placeholders, the caller's prompts, then the files' for the
        names still unset; placeholders left unset become ""."""
        if given is not None and not (isinstance(given, dict) and all(isinstance(k, str) and isinstance(v, str)
                                                                     for k, v in given.items())):
            raise TypeError(f"prompts must be a dict of prompt name -> prompt text, got {given!r}")
        prompts = {name: None for name in DEFAULT_PROMPT_NAMES}
        prompts.update(given or {})
        for name, text in saved["prompts"].items():
            if prompts.get(name) is None:
                prompts[name] = text
        return {name: "" if text is None else text for name, text in prompts.items()}

    def _check_truncate_dim(self, truncate_dim, where: str) -> int | None:
        if truncate_dim is None:
            return None
        if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int) or truncate_dim < 1:
            raise ValueError(f"{where} must be a positive integer or None, got {truncate_dim!r}")
        return truncate_dim

    @property
    def similarity_fn_name(self) -> str:
        """How similarity() scores: "cosine" (the default), "dot", "euclidean" or "manhattan"."""
        return self._similarity_fn_name

    @similarity_fn_name.setter
    def similarity_fn_name(self, name) -> None:
        name = getattr(name, "value", name)  # a SimilarityFunction member (minie5's or sentence-transformers')
        if name not in SIMILARITY_FN_NAMES:
            raise ValueError(f"similarity_fn_name must be one of {SIMILARITY_FN_NAMES}, got {name!r}")
        self._similarity_fn_name = name

    @property
    def max_seq_length(self) -> int:
        """Tokens per text, special tokens included; longer texts are truncated (with a TruncationWarning)."""
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        least, most = self.model.tokenizer.num_special_tokens, self.model.config.max_positions
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
            raise ValueError(f"max_seq_length must be an integer from {least} to {most} (the positions the model "
                             f"can embed), got {value!r}")
        self._max_seq_length = value

    def get_max_seq_length(self) -> int:
        return self.max_seq_length

    def get_embedding_dimension(self) -> int:
        """Width of encode()'s float output: the model's hidden size, or truncate_dim if smaller."""
        hidden = self.model.config.hidden_size
        return hidden if self.truncate_dim is None else min(hidden, self.truncate_dim)

    def get_sentence_embedding_dimension(self) -> int:
        """get_embedding_dimension() under its name before sentence-transformers 6."""
        return self.get_embedding_dimension()

    @property
    def device(self) -> str:
        return "cpu"

    @contextlib.contextmanager
    def truncate_embeddings(self, truncate_dim: int | None):
        """Within this block, encode() truncates its output to truncate_dim dimensions."""
        previous = self.truncate_dim
        self.truncate_dim = self._check_truncate_dim(truncate_dim, "truncate_dim")
        try:
            yield
        finally:
            self.truncate_dim = previous

    # ---------------------------------------------------------------- encoding
    def encode(self, inputs=None, prompt_name: str | None = None, prompt: str | None = None, batch_size: int = 32,
               show_progress_bar: bool | None = None, output_value: str | None = "sentence_embedding",
               precision: str = "float32", convert_to_numpy: bool = True, convert_to_tensor: bool = False,
               device=None, normalize_embeddings: bool = False, truncate_dim: int | None = None, pool=None,
               chunk_size: int | None = None, **kwargs) -> np.ndarray:
        """Texts -> embeddings: a list of str -> [n, dim] (float32, or the precision's dtype); one str -> [dim].

        prompt / prompt_name: the text prepended to each input (prompt wins;
        prompt_name looks it up in self.prompts; with neither, the default prompt).
        normalize_embeddings: L2-normalise after truncate_dim (the model's own
        normalisation, e5's, always applies). precision: as quantize_embeddings,
        calibrated on this call's embeddings. An empty list gives np.array([]).
        """
        if "sentences" in kwargs:  # sentence-transformers < 6 named the first argument `sentences`
            if inputs is not None:
                raise TypeError("encode() got both inputs and sentences; give one")
            inputs = kwargs.pop("sentences")
        if kwargs:
            raise unsupported(", ".join(sorted(kwargs)), kwargs[sorted(kwargs)[0]],
                              "minie5's models take no extra keyword arguments")
        self._check_encode_arguments(output_value, convert_to_numpy, convert_to_tensor, device, pool, chunk_size)
        check_precision(precision)
        if inputs is None:
            raise TypeError("encode() needs the texts to embed (inputs)")
        single = isinstance(inputs, str)
        texts = [inputs] if single else (inputs.tolist() if isinstance(inputs, np.ndarray) else list(inputs))
        check_texts(texts)
        truncate_dim = self._check_truncate_dim(truncate_dim, "truncate_dim") or self.truncate_dim
        prompt_text = self._resolve_prompt(prompt, prompt_name)
        if not texts:
            return np.array([])  # what sentence-transformers returns for no inputs
        if prompt_text:
            texts = [prompt_text + text for text in texts]
        embeddings = self.model.encode(texts, batch_size=batch_size, prefix="", max_length=self.max_seq_length,
                                       show_progress=bool(show_progress_bar))  # [n, hidden], the model's normalisation
        if truncate_dim is not None:
            embeddings = embeddings[:, :truncate_dim]  # [n, truncate_dim]
        if normalize_embeddings:
            embeddings = l2_normalize(embeddings)
        if precision != "float32":
            embeddings = quantize_embeddings(embeddings, precision)
        return embeddings[0] if single else embeddings

    def encode_query(self, inputs=None, prompt_name: str | None = None, prompt: str | None = None, *args, **kwargs):
        """encode() with the "query" prompt when neither prompt_name nor prompt is given."""
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(inputs, prompt_name, prompt, *args, **kwargs)

    def encode_document(self, inputs=None, prompt_name: str | None = None, prompt: str | None = None, *args, **kwargs):
        """encode() with the first of the "document", "passage", "corpus" prompts the model has, when neither
        prompt_name nor prompt is given."""
        if prompt_name is None and prompt is None:
            prompt_name = next((name for name in DOCUMENT_PROMPT_NAMES if name in self.prompts), None)
        return self.encode(inputs, prompt_name, prompt, *args, **kwargs)

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        """The text to prepend: prompt, else prompts[prompt_name], else the default prompt, else None."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
            if prompt_name is not None:
                warnings.warn("Provide either a `prompt`, a `prompt_name`, or neither, but not both. "
                              "Ignoring the `prompt_name` in favor of `prompt`.", stacklevel=3)
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ValueError(f"Prompt name '{prompt_name}' not found in the configured prompts dictionary "
                                 f"with keys {list(self.prompts)!r}.")
            return self.prompts[prompt_name]
        if self.default_prompt_name is not None:
            return self.prompts.get(self.default_prompt_name)
        return None

    @staticmethod
    def _check_encode_arguments(output_value, convert_to_numpy, convert_to_tensor, device, pool, chunk_size) -> None:
        """Refuse, by name, what only sentence-transformers' torch engine can do."""
        if output_value != "sentence_embedding":
            raise unsupported("output_value", output_value, "minie5 returns sentence embeddings only "
                              "(Model.forward gives token states)")
        if convert_to_tensor:
            raise unsupported("convert_to_tensor", convert_to_tensor, "minie5 returns NumPy arrays "
                              "(torch.from_numpy makes a tensor of one)")
        if not convert_to_numpy:
            raise unsupported("convert_to_numpy", convert_to_numpy, "minie5 returns one NumPy array, "
                              "not a list of torch tensors")
        if isinstance(device, (list, tuple)):
            raise unsupported("device", device, "multi-process encoding is not supported")
        check_device(device, "encode(): ")
        if pool is not None:
            raise unsupported("pool", pool, "multi-process encoding is not supported")
        if chunk_size is not None:
            raise unsupported("chunk_size", chunk_size, "it sizes multi-process chunks, which minie5 does not run")

    # ---------------------------------------------------------------- scores
    def similarity(self, embeddings1, embeddings2) -> np.ndarray:
        """[n, dim] x [m, dim] (or single vectors) -> [n, m] scores, by similarity_fn_name (cosine by default)."""
        a, b = as_matrix(embeddings1, "embeddings1"), as_matrix(embeddings2, "embeddings2")
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"embeddings1 have {a.shape[1]} dimensions, embeddings2 {b.shape[1]}")
        return similarity_matrix(self.similarity_fn_name, a, b)

    def similarity_pairwise(self, embeddings1, embeddings2) -> np.ndarray:
        """[n, dim] x [n, dim] -> [n]: the score of each pair (embeddings1[i], embeddings2[i])."""
        a, b = as_matrix(embeddings1, "embeddings1"), as_matrix(embeddings2, "embeddings2")
        if a.shape != b.shape:
            raise ValueError(f"embeddings1 {list(a.shape)} and embeddings2 {list(b.shape)} must have the same shape")
        return similarity_pairs(self.similarity_fn_name, a, b)
