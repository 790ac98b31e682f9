"""minie5: multilingual-e5-small embeddings from a readable NumPy/Numba BERT encoder.

    import minie5
    model = minie5.load("intfloat/multilingual-e5-small")      # or a local directory
    vectors = model.encode_passages(["Berlin is the capital of Germany."])
    query = model.encode_queries("capital of germany")
    scores = vectors @ query                                     # cosine similarities

Where things are (docs/architecture.md, "Where things are", has the full table):
    model.py              load() and Model: texts -> ids -> batches -> embeddings (the public API)
    reference.py          the NumPy textbook of the encoder, pooling and normalisation
    reference_int8.py     the NumPy textbook of the int8 model (weights and products on integers)
    tokenizer.py          the model's tokenizer.json through the `tokenizers` library
    embedding_precision.py  int8 / uint8 / binary embeddings (quantize_embeddings)
    errors.py, version.py the exceptions and warnings; the version number
    checkpoint/           the model files: config, hub download, safetensors, parameter table, int8 directories
    engine/               the fast path: FastEncoder on Numba kernels (float32, int8) and sgemm
    io/                   text inputs, .npy / .jsonl outputs, resumable files, the progress bar
    integrations/         sentence-transformers' API (SentenceTransformer), LangChain, LlamaIndex, mteb
    distributed/          Ray Data: minie5.distributed and `minie5 embed --ray` (the `ray` extra)
    cli/                  the `minie5` command and `minie5 serve`

Each folder imports only the ones listed above it in that table, and `import minie5` imports
no optional extra (integrations' frameworks, Ray) and neither Numba nor the engine until a model
is loaded.
"""
from .checkpoint.config import ModelConfig
from .embedding_precision import quantize_embeddings
from .errors import (InputError, Minie5Error, Minie5Warning, MissingExtraError, ModelFileError, TruncationWarning,
                     UnsupportedArgumentError, UnsupportedModelError)
from .integrations.sentence_transformers import SentenceTransformer, SimilarityFunction
from .model import DEFAULT_MODEL, ForwardOutput, Model, load
from .version import __version__

__all__ = ["load", "Model", "ForwardOutput", "ModelConfig", "Minie5Error", "ModelFileError", "UnsupportedModelError",
           "InputError", "Minie5Warning", "TruncationWarning", "DEFAULT_MODEL", "__version__",
           "SentenceTransformer", "SimilarityFunction", "quantize_embeddings", "UnsupportedArgumentError",
           "MissingExtraError"]
