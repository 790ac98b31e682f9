"""Where a model's parameters are: counted per block from the safetensors header alone.

A .safetensors file is

    8 bytes     N, the header length (unsigned 64-bit little-endian)
    N bytes     JSON: {tensor name: {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}, ...}
                (and an optional "__metadata__" entry)
    the rest    the tensors' bytes, back to back; offsets count from the end of the header

so the size of every tensor is known without reading a single weight. This
module groups the tensors into the blocks of the encoder (see reference.py):

    embeddings     word / position / token type tables, LayerNorm
    layer i        attention (Q, K, V, output projection), FFN (up, down), LayerNorm (2 per layer)
    pooler         the [CLS] dense layer BertModel checkpoints carry (minie5 does not use it)
    other          anything else: MLM heads, position_ids buffers...

and is what `minie5 info` prints.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import weights
from .weights import canonical_name

LAYER_PARTS = ("attention", "FFN", "LayerNorm")  # the columns of the per-layer table
EMBEDDING_PARTS = ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the header: name, dtype, shape and its byte range in the data section."""
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int  # data_offsets end - begin

    @property
    def parameters(self) -> int:
        count = 1
        for n in self.shape:
            count *= n
        return count


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    header_length: int  # N, the JSON header's length in bytes
    tensors: tuple[TensorInfo, ...]

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def file_bytes(self) -> int:
        return self.path.stat().st_size


def read_header(path: str | Path) -> SafetensorsHeader:
    """The tensors a .safetensors file holds, from its header only (no weight is read)."""
    path = Path(path)
    header, data_start = weights.read_header(path)
    tensors = []
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        tensors.append(TensorInfo(name, entry["dtype"], tuple(entry["shape"]), end - begin))
    tensors.sort(key=lambda t: header[t.name]["data_offsets"][0])  # file order
    return SafetensorsHeader(path, data_start - 8, tuple(tensors))


_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.*)$")


def block_of(name: str) -> tuple[str, str]:
    """A tensor name -> (block, part), e.g.

    embeddings.word_embeddings.weight                    -> ("embeddings", "word_embeddings")
    encoder.layer.3.attention.self.query.weight          -> ("layer 3", "attention")
    encoder.layer.3.attention.output.LayerNorm.weight    -> ("layer 3", "LayerNorm")
    encoder.layer.3.intermediate.dense.bias              -> ("layer 3", "FFN")
    pooler.dense.weight                                  -> ("pooler", "dense")
    """
    name = canonical_name(name)
    if name.startswith("embeddings."):
        part = name.split(".")[1]
        return "embeddings", "position_ids" if part == "position_ids" else part
    layer = _LAYER.match(name)
    if layer:
        index, rest = layer.groups()
        if "LayerNorm" in rest:
            return f"layer {index}", "LayerNorm"
        if rest.startswith("attention."):
            return f"layer {index}", "attention"
        if rest.startswith(("intermediate.", "output.dense")):
            return f"layer {index}", "FFN"
    if name.startswith("pooler."):
        return "pooler", "dense"
    return "other", name


@dataclass(frozen=True)
class Count:
    parameters: int = 0
    nbytes: int = 0

    def __add__(self, other: "Count") -> "Count":
        return Count(self.parameters + other.parameters, self.nbytes + other.nbytes)


def count_blocks(header: SafetensorsHeader) -> dict[str, dict[str, Count]]:
    """{block: {part: Count}}, blocks in model order (see block_order), parts in file order."""
    blocks: dict[str, dict[str, Count]] = {}
    for t in header.tensors:
        block, part = block_of(t.name)
        parts = blocks.setdefault(block, {})
        parts[part] = parts.get(part, Count()) + Count(t.parameters, t.nbytes)
    return {b: blocks[b] for b in sorted(blocks, key=block_order)}


def block_order(block: str) -> tuple[int, int]:
    """Sort key: embeddings, layer 0, 1, ..., pooler, other."""
    if block.startswith("layer "):
        return 1, int(block.split()[1])
    return {"embeddings": 0, "pooler": 2}.get(block, 3), 0


def total(parts: dict[str, Count]) -> Count:
    result = Count()
    for c in parts.values():
        result = result + c
    return result


def megabytes(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


def parameter_table(header: SafetensorsHeader) -> list[str]:
    """The lines `minie5 info` prints under "parameters": per block, per layer, total, file check."""
    blocks = count_blocks(header)
    grand = total({b: total(parts) for b, parts in blocks.items()})
    share = lambda c: f"{100 * c.parameters / max(grand.parameters, 1):5.1f} %"  # noqa: E731
    row = lambda label, c: f"  {label:<34}{c.parameters:>13,}{c.nbytes:>15,}{share(c):>9}"  # noqa: E731
    lines = [f"  {'block':<34}{'parameters':>13}{'bytes':>15}{'share':>9}"]
    if "embeddings" in blocks:
        embeddings = blocks["embeddings"]
        lines.append(row("embeddings", total(embeddings)))
        order = [p for p in EMBEDDING_PARTS if p in embeddings] + [p for p in embeddings if p not in EMBEDDING_PARTS]
        lines += [row("  " + part, embeddings[part]) for part in order]
    layers = [b for b in blocks if b.startswith("layer ")]
    if layers:
        encoder = {part: sum((blocks[b].get(part, Count()) for b in layers), Count()) for part in LAYER_PARTS}
        lines.append(row(f"encoder ({len(layers)} layers)", total(encoder)))
        lines += [row("  " + part, c) for part, c in encoder.items()]
    for block in ("pooler", "other"):
        if block in blocks:
            lines.append(row(block + (" (not used by minie5)" if block == "pooler" else ""), total(blocks[block])))
            if block == "other":
                lines += [row("  " + part, c) for part, c in blocks[block].items()]
    lines.append(row("total", grand))
    lines.append(f"  file: {header.file_bytes:,} bytes ({megabytes(header.file_bytes)}) = 8-byte length "
                 f"+ {header.header_length:,}-byte JSON header + {header.data_bytes:,} bytes of tensors")
    if layers:
        lines.append("")
        lines.append(f"  {'layer':<8}" + "".join(f"{p:>13}" for p in LAYER_PARTS) + f"{'total':>13}{'bytes':>15}")
        for b in layers:
            parts = blocks[b]
            c = total(parts)
            lines.append(f"  {b.split()[1]:<8}" + "".join(f"{parts.get(p, Count()).parameters:>13,}"
                                                          for p in LAYER_PARTS) + f"{c.parameters:>13,}{c.nbytes:>15,}")
    return lines


def architecture_lines(raw: dict, config) -> list[str]:
    """config.json (raw dict) and the ModelConfig read from it -> the architecture summary lines."""
    c = config
    rows = [
        ("architecture", f"{', '.join(raw.get('architectures') or ['?'])} (model_type {c.model_type})"),
        ("layers", c.num_hidden_layers),
        ("hidden size", c.hidden_size),
        ("attention heads", f"{c.num_attention_heads} (head_dim {c.head_dim})"),
        ("feed-forward size", f"{c.intermediate_size} ({c.hidden_act})"),
        ("vocabulary", f"{c.vocab_size:,} tokens"),
        ("positions", f"{c.max_position_embeddings} (texts up to {c.max_positions} tokens; "
                      f"max_seq_length {c.max_seq_length})"),
        ("token types", c.type_vocab_size),
        ("layer_norm_eps", c.layer_norm_eps),
        ("pooling", f"{c.pooling}, {'L2-normalised' if c.normalize else 'not normalised'}"),
        ("prompts", ", ".join(f"{k}={v!r}" for k, v in c.prompts.items()) or "none"),
    ]
    return [f"  {label:<20}{value}" for label, value in rows]
