"""int8 models: quantising a float model's weights, and the int8 model directory.

    minie5.load(MODEL, quantize="int8")     quantise a float model's weights in memory at load
    minie5 quantize MODEL -o DIR            write an int8 model directory (about a quarter of the size)
    minie5.load(DIR)                        read it back: it is int8 whatever `quantize` says

What is int8 (reference_int8.py has the maths): the six linear layers of
every encoder layer (query, key, value, attention output, FFN up and down)
and the word-embedding table, each row with its own float32 scale. Everything
else stays float32: biases, LayerNorms, the position and token-type tables
(small), and the whole of attention, GELU and pooling, which run on float
activations.

The int8 directory is a model directory like any other:

    model.safetensors          int8 tensors under their usual names, each with "<name>_scale"
                               (float32, one per row) beside it; every other tensor float32
    minie5_quantization.json   what was quantised and how (DESCRIPTION_FIELDS below); its
                               presence is what makes a directory an int8 model
    config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json, modules.json,
    sentence_bert_config.json, 1_Pooling/config.json, config_sentence_transformers.json,
    README.md                  copied unchanged from the float model (those it has)
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .config import ModelConfig, read_config
from ..errors import InputError, ModelFileError
from .hub import OPTIONAL_FILES, REQUIRED_FILES, resolve_model_dir
from ..reference_int8 import QuantizedMatrix, activation_bound, quantize_weight_rows
from .weights import SCALE_SUFFIX, Weights, expected_shapes, load_weights, read_tensor

QUANTIZE_MODES = ("int8",)
DESCRIPTION = "minie5_quantization.json"
FORMAT = "minie5-int8"
FORMAT_VERSION = 1
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
BLOCKS = {  # the blocks an int8 model may store as int8 -> their weights' names within each encoder layer
    "qkv": ("attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight"),
    "attention-output": ("attention.output.dense.weight",),
    "ffn-up": ("intermediate.dense.weight",),
    "ffn-down": ("output.dense.weight",),
    "word-embeddings": (),  # WORD_EMBEDDINGS, not per layer
}
COPIED_FILES = tuple(f for f in REQUIRED_FILES + OPTIONAL_FILES if f not in ("model.safetensors", DESCRIPTION)) + (
    "README.md",)
ROWS_PER_STEP = 16384  # the word-embedding table is quantised this many rows at a time (bounded memory)


def check_quantize(quantize) -> None:
    """quantize must be None (the model as its files hold it) or one of QUANTIZE_MODES."""
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be None or one of {QUANTIZE_MODES}, got {quantize!r}")


def quantized_names(config: ModelConfig, keep_float=()) -> list[str]:
    """The tensors an int8 model stores as int8: the word-embedding table and every linear layer's weight.

    keep_float: names of BLOCKS left in float32 (the ablation in docs/performance.md
    measures what each costs: "ffn-down" is the one that matters most).
    """
    unknown = [block for block in keep_float if block not in BLOCKS]
    if unknown:
        raise InputError(f"--keep-float {unknown[0]}: not a block; choose from {', '.join(BLOCKS)}")
    names = [] if "word-embeddings" in keep_float else [WORD_EMBEDDINGS]
    for i in range(config.num_hidden_layers):
        names += [f"encoder.layer.{i}.{name}" for block, parts in BLOCKS.items() if block not in keep_float
                  for name in parts]
    if not names:
        raise InputError("--keep-float leaves nothing to quantise")
    return names


def read_description(model_dir: str | Path) -> dict | None:
    """minie5_quantization.json of a model directory, checked; None for a float model (no such file).

    Fields: format ("minie5-int8"), version (1), quantized (the names of the
    int8 tensors); the others are for people (DESCRIPTION_FIELDS). Errors name
    the file and the field.
    """
    path = Path(model_dir) / DESCRIPTION
    if not path.exists():
        return None
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(path, f"is not readable JSON ({e})") from None
    if not isinstance(description, dict):
        raise ModelFileError(path, "must hold a JSON object")
    if description.get("format") != FORMAT:
        raise ModelFileError(path, f"field 'format' is {description.get('format')!r}, expected {FORMAT!r}")
    if description.get("version") != FORMAT_VERSION:
        raise ModelFileError(path, f"field 'version' is {description.get('version')!r}; this minie5 reads "
                                   f"version {FORMAT_VERSION}")
    names = description.get("quantized")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelFileError(path, "field 'quantized' must be a non-empty list of tensor names")
    if len(set(names)) != len(names):
        raise ModelFileError(path, "field 'quantized' names a tensor twice")
    return description


def load_quantized(model_dir: Path, config: ModelConfig, quantize: str | None) -> tuple[Weights, str | None]:
    """The weights minie5.load runs, and whether they are int8: (Weights, None or "int8").

    An int8 directory (it has minie5_quantization.json) is read as int8; a
    float model is quantised in memory if quantize == "int8".
    """
    path = Path(model_dir) / "model.safetensors"
    description = read_description(model_dir)
    if description is None:
        weights = load_weights(path, config)
        return (quantize_weights(weights, config), "int8") if quantize == "int8" else (weights, None)
    names = description["quantized"]
    described_in = Path(model_dir) / DESCRIPTION
    for i in range(config.num_hidden_layers):  # the fast path stacks q, k and v: all int8, or none
        qkv = [f"encoder.layer.{i}.attention.self.{part}.weight" in names for part in ("query", "key", "value")]
        if any(qkv) and not all(qkv):
            raise ModelFileError(described_in, f"field 'quantized' lists some of layer {i}'s query, key and value "
                                               f"weights but not all three")
    return load_weights(path, config, quantized=names, described_in=described_in), "int8"


def quantize_weights(weights: Weights, config: ModelConfig) -> Weights:
    """A float model's weights, in place: quantized_names(config) become QuantizedMatrix (computed in memory).

    The other tensors stay views of the float file. Costs a second or two and
    the int8 copies (e5-small: 117 MB, most of it the word-embedding table);
    an int8 directory written once by write_quantized loads without either.
    """
    for name in quantized_names(config):
        weights[name] = QuantizedMatrix(*quantize_table(weights, name))
        weights.file_offsets.pop(name, None)  # its float bytes in the file are no longer what the model uses
    return weights


def quantize_table(weights: Weights, name: str) -> tuple[np.ndarray, np.ndarray]:
    """quantize_weight_rows on tensor `name` [N, K], ROWS_PER_STEP rows at a time: (int8 [N, K], float32 [N]).

    The rows are read with weights.read_tensor (pread), so quantising does not
    map the float file into resident memory.
    """
    rows = weights[name].shape[0]
    values = np.empty(weights[name].shape, np.int8)
    scales = np.empty(rows, np.float32)
    for start in range(0, rows, ROWS_PER_STEP):
        step = slice(start, start + ROWS_PER_STEP)
        values[step], scales[step] = quantize_weight_rows(read_tensor(weights, name, start, start + ROWS_PER_STEP))
    values.setflags(write=False)
    scales.setflags(write=False)
    return values, scales


def write_quantized(source: str | os.PathLike, out_dir: str | os.PathLike, revision: str | None = None,
                    keep_float=()) -> dict:
    """`minie5 quantize`: the float model `source` (directory or hub id) -> an int8 model directory out_dir.

    out_dir must not exist or be empty. Refuses a model that is already int8
    and any model minie5.load refuses (read_config, load_weights). keep_float:
    BLOCKS to leave in float32. Returns the description written to
    minie5_quantization.json, plus the two file sizes.
    """
    model_dir = resolve_model_dir(source, revision)
    if read_description(model_dir) is not None:
        raise ModelFileError(model_dir / DESCRIPTION, "the model is already quantised (int8); quantise the float "
                                                      "model it was made from")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"-o {out}: exists and is not an empty directory (the int8 model is written into a new "
                         f"directory)")
    if out.resolve() == model_dir.resolve():
        raise InputError(f"-o {out}: is the model directory itself")
    config = read_config(model_dir)  # refuses architectures minie5 does not run, naming the field
    names = quantized_names(config, keep_float)
    source_file = model_dir / "model.safetensors"
    weights = load_weights(source_file, config)  # every tensor present, shaped as config.json says
    tensors = {}
    for name in expected_shapes(config):
        if name in names:
            tensors[name], tensors[name + SCALE_SUFFIX] = quantize_table(weights, name)
        else:
            tensors[name] = np.ascontiguousarray(weights[name], dtype=np.float32)
    description = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "quantized": names,
        "weights": f"int8 in [-127, 127], one float32 scale per row in '<name>{SCALE_SUFFIX}': row r = "
                   f"scale[r] * values[r], scale[r] = max |row r| / 127",
        "activations": "linear layers round their input to int16 at run time, one scale per token row, within "
                       "[-B, B], B = min(32767, (2^31 - 1) // (127 K)) for K inputs "
                       f"(this model: {activation_bound(config.hidden_size)} for K = {config.hidden_size}, "
                       f"{activation_bound(config.intermediate_size)} for K = {config.intermediate_size})",
        "float32": "biases, LayerNorms, position and token-type embeddings"
                   + "".join(f", {block}" for block in keep_float),
        "source": str(source),
    }
    from safetensors.numpy import save_file  # a runtime dependency; imported only to write
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "model.safetensors.partial"
    save_file(tensors, str(partial), metadata={"format": "np", "minie5": FORMAT})
    umask = os.umask(0)
    os.umask(umask)
    partial.chmod(0o666 & ~umask)  # as any file the user writes (safetensors creates it private)
    partial.rename(out / "model.safetensors")
    for name in COPIED_FILES:
        if (model_dir / name).is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model_dir / name, out / name)
    (out / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")  # last: complete
    return dict(description, source_bytes=source_file.stat().st_size,
                bytes=(out / "model.safetensors").stat().st_size)
