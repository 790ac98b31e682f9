"""minie5 behind other libraries' APIs.

    sentence_transformers.py  SentenceTransformer: sentence-transformers' API, no extra needed
                              (exported as minie5.SentenceTransformer)
    langchain.py              Minie5Embeddings, a langchain_core Embeddings   pip install "minie5[langchain]"
    llama_index.py            Minie5Embedding, a llama_index BaseEmbedding    pip install "minie5[llama-index]"
    mteb.py                   Minie5Encoder, a model for mteb 2.x             pip install "minie5[mteb]"

The LangChain, LlamaIndex and mteb adapters need their extra each, and `import minie5` imports none of
those frameworks. May import minie5.model and what it stands on. docs/integrations.md has an example of
each (mteb: docs/evaluation.md).
"""
from __future__ import annotations


def require(module: str, package: str, extra: str, adapter: str):
    """Import an adapter's framework, or raise ImportError naming the pip command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{adapter} needs {package}, which is not installed ({e}): "
                          f"pip install \"minie5[{extra}]\"") from e


def model_to_load(model_name_or_path, model_name, default: str, adapter: str):
    """The model an adapter loads: its positional argument or model_name= (the keyword of LangChain's and
    LlamaIndex's own embedding classes), not both; neither gives the default."""
    if model_name_or_path is not None and model_name is not None:
        raise TypeError(f"{adapter}() got the model twice ({str(model_name_or_path)!r} and "
                        f"model_name={str(model_name)!r}); give one")
    chosen = model_name_or_path if model_name_or_path is not None else model_name
    return default if chosen is None else chosen


def check_strings(texts, what: str) -> list:
    """A list (or tuple) of str -> a list; TypeError naming the first item that is not a str."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"{what} takes a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}: texts[{i}] is {type(text).__name__}, expected str")
    return list(texts)


def check_string(text, what: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} takes a str, got {type(text).__name__}")
    return text
