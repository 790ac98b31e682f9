"""minie5: multilingual-e5-small embeddings from a readable NumPy/Numba BERT encoder.

    import minie5
    model = minie5.load("intfloat/multilingual-e5-small")      # or a local directory
    vectors = model.encode_passages(["Berlin is the capital of Germany."])
    query = model.encode_queries("capital of germany")
    scores = vectors @ query                                     # cosine similarities

The pipeline, one module per step:
    hub.py (repo id -> files) -> config.py, weights.py, tokenizer.py (read once)
    -> model.py (texts -> ids -> batches; the public API)
    -> reference.py (the NumPy textbook: encoder, pooling) or the fast path:
       encoder.py (packed tokens) on kernels.py (Numba) and blas.py (sgemm), chosen by matmul.py
    -> pooling (mean, cls or max: reference.py / kernels.py) -> L2 normalisation
int8 models: quantize.py (quantising, the int8 directory), reference_int8.py (the maths
in NumPy), int8.py (its Numba kernels). Around it: st.py (SentenceTransformer,
sentence-transformers' API), precision.py
(int8 / binary embeddings), search.py (binary search), integrations/ (LangChain,
LlamaIndex adapters; never imported here), distributed.py (Ray Data; with scaleout.py
and shards.py, `embed --ray`; never imported here). docs/architecture.md is the map.
"""
from .config import ModelConfig
from .errors import (InputError, Minie5Error, Minie5Warning, MissingExtraError, ModelFileError, TruncationWarning,
                     UnsupportedArgumentError, UnsupportedModelError)
from .model import DEFAULT_MODEL, ForwardOutput, Model, load
from .precision import quantize_embeddings
from .st import SentenceTransformer, SimilarityFunction

__version__ = "0.1.0"
__all__ = ["load", "Model", "ForwardOutput", "ModelConfig", "Minie5Error", "ModelFileError", "UnsupportedModelError",
           "InputError", "Minie5Warning", "TruncationWarning", "DEFAULT_MODEL", "__version__",
           "SentenceTransformer", "SimilarityFunction", "quantize_embeddings", "UnsupportedArgumentError",
           "MissingExtraError"]
