"""model.safetensors -> {tensor name: float32 array}, checked against the config.

The names are the Hugging Face BertModel names without any prefix (an
XLMRobertaModel uses the very same names), e.g.

    embeddings.word_embeddings.weight            [vocab, hidden]
    encoder.layer.0.attention.self.query.weight  [hidden, hidden]   (out, in)
    encoder.layer.0.intermediate.dense.weight    [ffn, hidden]

A checkpoint saved from BertForMaskedLM, XLMRobertaForMaskedLM or similar
carries a prefix ("bert.", "roberta.", "model.") and extra heads (pooler, MLM
head): the prefix is stripped and tensors the encoder does not use are ignored.

Memory: float32 tensors are memory-mapped straight from the file (np.memmap,
read-only), so loading costs no copy and the 250k-row word-embedding matrix
is only paged in where token ids point. The safetensors library parses and
validates the header (a truncated or corrupted file fails here); minie5 then
maps the byte ranges the header describes. float16 / bfloat16 tensors are
upcast to float32 (that one does cost a copy).

An int8 model (written by `minie5 quantize`, see quantize_model.py) stores some
tensors as int8, each with a float32 tensor of one scale per row beside it,
named with "_scale" appended; load_weights returns those as
reference_int8.QuantizedMatrix (both arrays memory-mapped).
"""
from __future__ import annotations

import json
import os
import struct
import weakref
from pathlib import Path

import numpy as np
from safetensors import safe_open

from .config import ModelConfig
from ..errors import ModelFileError
from ..reference_int8 import QuantizedMatrix

PREFIXES = ("bert.", "roberta.", "model.")  # stripped from checkpoint keys
SCALE_SUFFIX = "_scale"  # an int8 tensor's per-row float32 scales: "<name>_scale" [rows]


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor the encoder reads, with the shape the config implies."""
    h, f = config.hidden_size, config.intermediate_size
    shapes = {
        "embeddings.word_embeddings.weight": (config.vocab_size, h),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for i in range(config.num_hidden_layers):
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
    return shapes


def canonical_name(key: str) -> str:
    """A checkpoint key without its "bert." / "roberta." / "model." prefix."""
    for prefix in PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def read_header(path: str | Path) -> tuple[dict, int]:
    """A .safetensors file's header and the byte offset where its tensor data starts.

    The file is 8 bytes N (unsigned 64-bit little-endian), N bytes of JSON
    {name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...,
    "__metadata__": ...}, then the tensors' bytes, offsets counting from the
    end of the header. Returns ({name: entry} without "__metadata__", 8 + N);
    reads no tensor. A file that has no such header raises ModelFileError.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            first = f.read(8)
            if len(first) != 8:
                raise ModelFileError(path, "is too short to be a safetensors file")
            (length,) = struct.unpack("<Q", first)
            if length > path.stat().st_size - 8:
                raise ModelFileError(path, f"header length {length} exceeds the file size")
            header = json.loads(f.read(length))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(path, f"has no readable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise ModelFileError(path, "has no readable safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    return header, 8 + length


_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


class Weights(dict):
    """{canonical name: read-only float32 array}: a plain dict, which also says where it came from.

    path: the safetensors file; file_offsets: {name: byte offset in the file}
    of the float32 tensors that are views into the memory-mapped file (not of
    those converted from float16 / bfloat16 or copied); fd: the file, kept open
    from loading on (None where os.pread does not exist, as on Windows).
    encoder.WordRows reads single rows of the word-embedding matrix through
    it, encoder.fused_qkv the query, key and value weights. Reading through
    the descriptor opened at load, not the path, reads the very file that is
    mapped, even if the path is later deleted or replaced by another file.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.file_offsets: dict[str, int] = {}
        self.fd: int | None = None

    def pread(self, name: str, nbytes: int, offset: int) -> bytes:
        """nbytes of the file at offset (within tensor `name`); a short read raises ModelFileError."""
        data = os.pread(self.fd, nbytes, offset)
        if len(data) != nbytes:  # the mapped file was truncated in place
            raise ModelFileError(self.path, f"tensor '{name}' is cut short (the file was truncated after loading)")
        return data


def read_tensor(weights, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows start .. stop of tensor `name` (int8 values, for a QuantizedMatrix), as a new array.

    Read from the file with pread where the tensor is a view of it (so its
    mapped pages are never touched and do not count in resident memory, as in
    encoder.WordRows), else copied from the array. weights: a Weights dict, or
    any dict of arrays.
    """
    array = weights[name]
    array = array.values if isinstance(array, QuantizedMatrix) else array
    stop = array.shape[0] if stop is None else min(stop, array.shape[0])
    offsets = getattr(weights, "file_offsets", {})
    if getattr(weights, "fd", None) is None or name not in offsets:
        return np.array(array[start:stop])
    row_bytes = array[0].nbytes
    data = weights.pread(name, (stop - start) * row_bytes, offsets[name] + start * row_bytes)
    return np.frombuffer(data, array.dtype).reshape((stop - start,) + array.shape[1:]).copy()


def load_weights(path: str | Path, config: ModelConfig, quantized=(),
                 described_in: str | Path | None = None) -> Weights:
    """Read model.safetensors into {canonical name: read-only array} (a Weights dict).

    Checks that every tensor in expected_shapes(config) is present, exactly
    once, with that shape and a float dtype; raises ModelFileError naming the
    file and tensor otherwise. quantized: names of an int8 model's int8
    tensors (from its minie5_quantization.json, named by described_in for the
    errors): each must be I8 with its "<name>_scale" [rows] beside it, and is
    returned as a QuantizedMatrix.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "not found (the model's weights)")
    try:
        # Parses and validates the header against the file size; maps, does not read.
        with safe_open(str(path), framework="numpy") as f:
            keys = list(f.keys())
    except Exception as e:  # safetensors raises its own SafetensorError / OSError
        raise ModelFileError(path, f"is not a valid safetensors file ({e})") from None
    header, data_start = read_header(path)

    expected = expected_shapes(config)
    unknown = [name for name in quantized if name not in expected]
    if unknown:
        raise ModelFileError(described_in or path, f"lists '{unknown[0]}' as quantized, which is not a tensor "
                                                   f"of this model (config.json)")
    expected.update({name + SCALE_SUFFIX: expected[name][:1] for name in quantized})  # one scale per row
    by_name: dict[str, str] = {}
    for key in keys:
        name = canonical_name(key)
        if name not in expected:
            continue  # pooler, MLM head, position_ids buffers...: not used by the encoder
        if name in by_name:
            raise ModelFileError(path, f"tensor '{name}' appears twice (as '{by_name[name]}' and '{key}')")
        by_name[name] = key
    missing = [name for name in expected if name not in by_name]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        if missing[0].endswith(SCALE_SUFFIX):
            raise ModelFileError(path, f"missing tensor '{missing[0]}'{more}: the scales of int8 tensor "
                                       f"'{missing[0][:-len(SCALE_SUFFIX)]}'")
        raise ModelFileError(path, f"missing tensor '{missing[0]}'{more} required by config.json")

    weights = Weights(path)
    with open(path, "rb") as f:
        # A plain ndarray over the mapped file (np.asarray drops the memmap subclass).
        file_bytes = np.asarray(np.memmap(f, dtype=np.uint8, mode="r"))
        if hasattr(os, "pread"):  # the same open file, for reads (os.dup: not inherited by child programs)
            weights.fd = os.dup(f.fileno())
            weakref.finalize(weights, os.close, weights.fd)
    for name, want_shape in expected.items():
        key = by_name[name]
        info = header[key]
        dtype, shape = info["dtype"], tuple(info["shape"])
        if shape != want_shape:
            raise ModelFileError(path, f"tensor '{key}' has shape {list(shape)}, expected {list(want_shape)}")
        begin, end = info["data_offsets"]
        raw = file_bytes[data_start + begin:data_start + end]
        if name in quantized:
            if dtype != "I8":
                raise ModelFileError(path, f"tensor '{key}' has dtype {dtype}, expected I8 ({described_in} "
                                           f"lists it as int8)")
            array = raw.view(np.int8).reshape(shape)  # a view into the mapped file: no copy
            weights.file_offsets[name] = data_start + begin
        elif dtype == "I8":
            raise ModelFileError(path, f"tensor '{key}' has dtype I8 and no minie5_quantization.json says how to "
                                       f"read it (an int8 model directory is written by `minie5 quantize`)")
        elif dtype not in _NUMPY_DTYPES:
            raise ModelFileError(path, f"tensor '{key}' has dtype {dtype}, expected F32, F16 or BF16")
        elif dtype == "F32" and (data_start + begin) % 4 == 0:
            array = raw.view(np.float32).reshape(shape)  # a view into the mapped file: no copy
            weights.file_offsets[name] = data_start + begin
        elif dtype == "F32":
            array = np.frombuffer(raw.tobytes(), dtype=np.float32).reshape(shape)  # misaligned: copy once
        elif dtype == "F16":
            array = np.frombuffer(raw.tobytes(), dtype=np.float16).astype(np.float32).reshape(shape)
        else:  # BF16 is the top half of a float32
            bits = np.frombuffer(raw.tobytes(), dtype=np.uint16).astype(np.uint32) << 16
            array = bits.view(np.float32).reshape(shape)
        array.setflags(write=False)  # one array type for Numba, and nobody edits a weight by accident
        weights[name] = array
    for name in quantized:  # values and scales -> one QuantizedMatrix under the tensor's name
        scales = weights.pop(name + SCALE_SUFFIX)
        if not np.all(np.isfinite(scales)) or np.any(scales < 0):
            raise ModelFileError(path, f"tensor '{name + SCALE_SUFFIX}' holds negative or non-finite scales")
        weights[name] = QuantizedMatrix(weights[name], scales)
    return weights
