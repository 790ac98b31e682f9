"""minie5 in MTEB: Minie5Encoder is an encoder for mteb 2.x (mteb.evaluate runs it like any model).

    import mteb
    from minie5.integrations.mteb import Minie5Encoder

    model = Minie5Encoder("intfloat/multilingual-e5-small")              # quantize="int8" for the int8 model
    results = mteb.evaluate(model, mteb.get_tasks(tasks=["MrTidyRetrieval"]))

Prompts: queries get the model's query prompt and documents its passage
prompt (e5: "query: " / "passage: "), as minie5's encode(prefix="query" /
"passage") adds them; texts of tasks without queries and documents (STS,
classification...) get none. model_prompts= replaces them, in mteb's format
(keys "query", "document", a task type or a task name: mteb picks the most
specific), as for mteb's SentenceTransformerEncoderWrapper.
Embeddings are scored by cosine similarity. Needs mteb: pip install "minie5[mteb]".
"""
from __future__ import annotations

import os

import numpy as np

from . import require

require("mteb", "mteb", "mteb", "minie5.integrations.mteb")
from mteb.models.abs_encoder import AbsEncoder  # noqa: E402  (after the check that names the pip command)
from mteb.models.model_meta import ModelMeta, ScoringFunction  # noqa: E402

from ..errors import UnsupportedArgumentError  # noqa: E402
from ..model import DEFAULT_MODEL, load  # noqa: E402


class Minie5Encoder(AbsEncoder):
    """A minie5 model behind mteb's encoder protocol (see the module docstring)."""

    def __init__(self, model_name: str | os.PathLike = DEFAULT_MODEL, revision: str | None = None,
                 device: str | None = None, *, quantize: str | None = None, max_length: int | None = None,
                 model_prompts: dict[str, str] | None = None, **kwargs):
        """Load the model as minie5.load(model_name, revision=revision, quantize=quantize) does.

        max_length: tokens per text (default: the model's max_seq_length). Other keyword
        arguments (mteb passes a loader's settings through) are refused by name."""
        if device is not None and str(device) != "cpu":
            raise UnsupportedArgumentError(f"device={device!r}: minie5 runs on the CPU only")
        if kwargs:
            raise UnsupportedArgumentError(f"Minie5Encoder does not take {', '.join(sorted(kwargs))}")
        self.model = load(model_name, revision=revision, quantize=quantize)
        self.max_length = max_length
        config = self.model.config
        if model_prompts is None:
            model_prompts = {"query": config.prompt("query"), "document": config.prompt("passage")}
        self.model_prompts = self.validate_task_to_prompt_name(
            {key: text for key, text in model_prompts.items() if text})  # None when no prompt is left
        self.mteb_model_meta = ModelMeta.create_empty(overwrites=dict(
            name=str(model_name) + (" (int8)" if quantize else ""), revision=revision, loader=type(self),
            embed_dim=config.hidden_size, max_tokens=config.max_seq_length,
            similarity_fn_name=ScoringFunction.COSINE, framework=["NumPy"]))

    def prompt_for(self, task_metadata, prompt_type) -> str:
        """The text prepended to this task's inputs of this type ("" for none), by mteb's order of precedence."""
        if not self.model_prompts:
            return ""
        name = self.get_prompt_name(task_metadata, prompt_type)
        return self.model_prompts.get(name, "") if name else ""

    def encode(self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None,
               **kwargs) -> np.ndarray:
        """mteb's batches of {"text": [...]} -> float32 [n, hidden], L2-normalised as the model's files say."""
        prompt = self.prompt_for(task_metadata, prompt_type)
        texts = [prompt + text for batch in inputs for text in batch["text"]]
        # prefix="" adds nothing more: the prompt is already in the texts (and no default prompt applies)
        return self.model.encode(texts, prefix="", batch_size=kwargs.get("batch_size", 32),
                                 max_length=self.max_length)
