"""Small helpers shared by several test files."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# docs/behaviour.md, "Determinism": how far a text's normalised vector may move (max |diff| of a
# component) with its batch-mates, its row in the batch, the batch size and NUMBA_NUM_THREADS.
ROUNDING = 1e-5


def load_script(name: str):
    """scripts/<name> imported as a module (the scripts are not a package)."""
    path = REPO / "scripts" / name
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def blas_kernel() -> str:
    """numpy's BLAS and the kernel threadpoolctl reports ("openblas SkylakeX"), for printed figures."""
    return load_script("invariance.py").blas_kernel()


def sentence_transformers_quantize():
    """sentence-transformers' quantize_embeddings (sentence_transformers.util.quantization since version 6)."""
    try:
        from sentence_transformers.util.quantization import quantize_embeddings
    except ImportError:
        from sentence_transformers.quantization import quantize_embeddings
    return quantize_embeddings
