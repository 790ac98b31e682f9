"""Tiny BERT model directories for the parity and golden tests.

Everything here needs only numpy, safetensors and tokenizers (no torch), so
that tests/test_golden.py can rebuild the golden model without torch and
scripts/make_golden.py (which does use transformers) builds the very same one.

    tiny_config(...)         a config.json dictionary for a small BertModel
    numpy_weights(cfg, seed) every BertModel tensor, float32, from a fixed seed
    write_model_dir(...)     config.json + model.safetensors + tokenizer.json
    write_tokenizer(...)     a minimal WordLevel tokenizer.json: <s> w4 w5 ... </s>
    random_batch(...)        right-padded random ids with a heavy-padding mask
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0, 1, 2, 3
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def tiny_config(hidden: int, heads: int, layers: int, intermediate: int, vocab: int,
                max_positions: int = 64, type_vocab: int = 2) -> dict:
    """A config.json dictionary for a BertModel (loadable by transformers and minie5)."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": max_positions,
        "type_vocab_size": type_vocab,
        "initializer_range": 0.02,
        "pad_token_id": PAD_ID,
        "position_embedding_type": "absolute",
    }


def tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of a BertModel checkpoint (pooler included), HF names without prefix."""
    h, f = config["hidden_size"], config["intermediate_size"]
    shapes = {
        "embeddings.word_embeddings.weight": (config["vocab_size"], h),
        "embeddings.position_embeddings.weight": (config["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            shapes[p + f"attention.self.{proj}.weight"] = (h, h)
            shapes[p + f"attention.self.{proj}.bias"] = (h,)
        shapes[p + "attention.output.dense.weight"] = (h, h)
        shapes[p + "attention.output.dense.bias"] = (h,)
        shapes[p + "attention.output.LayerNorm.weight"] = (h,)
        shapes[p + "attention.output.LayerNorm.bias"] = (h,)
        shapes[p + "intermediate.dense.weight"] = (f, h)
        shapes[p + "intermediate.dense.bias"] = (f,)
        shapes[p + "output.dense.weight"] = (h, f)
        shapes[p + "output.dense.bias"] = (h,)
        shapes[p + "output.LayerNorm.weight"] = (h,)
        shapes[p + "output.LayerNorm.bias"] = (h,)
    shapes["pooler.dense.weight"] = (h, h)
    shapes["pooler.dense.bias"] = (h,)
    return shapes


def init_scale(name: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(centre, standard deviation) of the random init of one tensor.

    Larger than BERT's init (std 0.02) on purpose: with std 0.02 attention is
    almost uniform and LayerNorm hides most mistakes; these scales give peaked
    attention, non-trivial biases and LayerNorm parameters away from (1, 0).
    """
    if name.endswith("LayerNorm.weight"):
        return 1.0, 0.2
    if name.endswith("LayerNorm.bias") or name.endswith(".bias"):
        return 0.0, 0.1
    if name.startswith("embeddings."):
        return 0.0, 1.0
    fan_in = shape[1]
    gain = 1.6 if (".query." in name or ".key." in name) else 1.0
    return 0.0, gain / np.sqrt(fan_in)


def numpy_weights(config: dict, seed: int) -> dict[str, np.ndarray]:
    """Deterministic float32 weights for every BertModel tensor, from numpy only.

    Uses the legacy RandomState (its stream is frozen by NumPy's compatibility
    policy) and only uniform draws transformed by exact IEEE arithmetic, so the
    same seed gives the same bits on every platform and NumPy version.
    """
    rng = np.random.RandomState(seed)
    weights = {}
    for name, shape in tensor_shapes(config).items():  # fixed order: the stream depends on it
        centre, std = init_scale(name, shape)
        u = rng.random_sample(shape)  # float64 in [0, 1)
        weights[name] = (centre + (2.0 * u - 1.0) * (std * np.sqrt(3.0))).astype(np.float32)
    return weights


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    """sha256 over names, shapes and bytes: detects any drift in numpy_weights."""
    h = hashlib.sha256()
    for name in sorted(weights):
        a = np.ascontiguousarray(weights[name], dtype="<f4")
        h.update(name.encode())
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_tokenizer(model_dir: str | Path, n_tokens: int) -> Path:
    """A WordLevel tokenizer.json: <pad> <s> </s> <unk>, then words w4 .. w{n-1}.

    Whitespace-split, "<s> $A </s>" around every text: the text "w5 w9" is
    [1, 5, 9, 2]. n_tokens must not exceed the config's vocab_size.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIAL_TOKENS), n_tokens)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", BOS_ID), ("</s>", EOS_ID)],
    )
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    path = Path(model_dir) / "tokenizer.json"
    tok.save(str(path))
    return path


def write_config(model_dir: str | Path, config: dict) -> Path:
    path = Path(model_dir) / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def write_model_dir(model_dir: str | Path, config: dict, weights: dict[str, np.ndarray],
                    prefix: str = "", tokenizer_size: int | None = None) -> Path:
    """config.json + model.safetensors (keys prefixed with `prefix`) + tokenizer.json."""
    from safetensors.numpy import save_file

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    write_config(model_dir, config)
    tensors = {prefix + name: np.ascontiguousarray(a) for name, a in weights.items()}
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(model_dir, tokenizer_size or min(config["vocab_size"], 200))
    return model_dir


def random_batch(rng: np.random.Generator, vocab: int, seq: int, pad_garbage: bool = False):
    """input_ids, attention_mask [rows, seq] int64: right-padded rows of mixed lengths.

    Row lengths: seq, 1, 2, seq // 2, seq - 1, 3 (clipped to 1..seq), in that
    (unsorted) order, so most rows are heavily padded. Padding positions hold
    PAD_ID, or random ids when pad_garbage (the mask alone must exclude them).
    """
    lengths = [seq, 1, 2, seq // 2, seq - 1, 3]
    lengths = [min(max(n, 1), seq) for n in lengths]
    ids = rng.integers(0, vocab, size=(len(lengths), seq), dtype=np.int64)
    mask = np.zeros((len(lengths), seq), dtype=np.int64)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        if not pad_garbage:
            ids[row, n:] = PAD_ID
    return ids, mask


def max_abs_diff_on_mask(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """max |a - b| over the positions where mask == 1 (a, b: [batch, seq, hidden])."""
    keep = np.asarray(mask) != 0
    if not keep.any():
        return 0.0
    return float(np.max(np.abs(np.asarray(a, np.float64)[keep] - np.asarray(b, np.float64)[keep])))
