"""The fast forward: the reference encoder's steps, run as Numba kernels on packed tokens.

    ids of B texts -> pack into one [N] array (N = total real tokens, no padding)
    -> position_rows -> kernels.embed -> L x layer -> [N, H] hidden states -> kernels.*_pool -> [B, H]

One layer, with the workspace arrays it writes (all [N, *], reused by every layer;
ffn takes the memory of qkv and context, see _Workspace):

    qkv       = linear(x, [Wq; Wk; Wv])       [N, 3H]  (q, k, v: its three column blocks)
    context   = attention(q, k, v)            [N, H]
    attn_out  = linear(context, Wo)           [N, H]
    x         = LayerNorm(x + attn_out)       [N, H]   (in place)
    ffn       = GELU(linear(x, W1))           [N, F]   (GELU in place)
    ffn_out   = linear(ffn, W2)               [N, H]
    x         = LayerNorm(x + ffn_out)        [N, H]   (in place)

Which engine runs each step (Numba or sgemm, serial or parallel) depends on the
`matmul` setting and the batch's token count: the plan is in matmul_plan.py.

Numba's parallel kernels must not be entered from two Python threads at once
(its workqueue threading layer aborts the process), so every call into this
module goes through one process-wide lock: concurrent encode() calls are
serialised, and each uses all of Numba's threads.
"""
from __future__ import annotations

import dataclasses
import threading
from typing import NamedTuple

import numpy as np

from . import kernels_int8 as int8
from .. import reference
from .blas import one_blas_thread
from ..checkpoint.config import ModelConfig
from . import kernels_panel as panel
from .layer_loop import StackedLayers
from .matmul_plan import SERIAL_TOKENS, plans
from ..reference_int8 import QuantizedMatrix, dequantize_rows
from ..checkpoint.weights import read_tensor

_NUMBA_LOCK = threading.Lock()


class _Workspace:
    """Activation buffers for up to `capacity` tokens, grown on demand and reused by every layer.

    views(N) -> x [N, H], qkv [N, 3H], context [N, H], proj [N, H], ffn [N, F].
    qkv and context (the attention half of a layer) and ffn (the FFN half) are
    never needed at the same time, so they share one buffer: ffn overwrites
    q, k, v and the context once the attention output has been projected, and
    the next layer's q, k, v overwrite ffn once it has been projected down.
    """

    def __init__(self, config: ModelConfig):
        self.config = config
        self.capacity = 0

    def views(self, n_tokens: int):
        H, F = self.config.hidden_size, self.config.intermediate_size
        if n_tokens > self.capacity:
            cap = max(n_tokens, 2 * self.capacity)
            self.x = np.empty((cap, H), np.float32)  # the residual stream
            self.proj = np.empty((cap, H), np.float32)  # attention / FFN output projection
            self.shared = np.empty(cap * max(4 * H, F), np.float32)  # qkv + context, or ffn
            self.capacity = cap
        N = n_tokens
        qkv = self.shared[:N * 3 * H].reshape(N, 3 * H)  # q | k | v side by side
        context = self.shared[N * 3 * H:N * 4 * H].reshape(N, H)
        ffn = self.shared[:N * F].reshape(N, F)
        return self.x[:N], qkv, context, self.proj[:N], ffn


def fused_qkv(weights, prefix: str):
    """One layer's query, key and value projections stacked: (weight [3H, H], bias [3H]).

    x @ weight.T + bias is then q | k | v side by side, [N, 3H]: one product
    instead of three, one hand-over to the threads instead of three. The stacked
    weight is a copy (1.8 MB per e5-small layer), read from the file
    (weights.pread) straight into place where possible, so the mapped pages of
    the originals are never touched and do not count twice in resident memory.
    An int8 model's three QuantizedMatrix stack the same way (values and scales
    alike: each output channel keeps its own scale).
    """
    names = [prefix + f"attention.self.{part}.weight" for part in ("query", "key", "value")]
    bias = np.concatenate([weights[name[:-len("weight")] + "bias"] for name in names])  # [3H]
    bias.setflags(write=False)
    if all(isinstance(weights[name], QuantizedMatrix) for name in names):  # int8: [3H, H] values, [3H] scales
        values = np.concatenate([read_tensor(weights, name) for name in names])  # read, not mapped
        scales = np.concatenate([weights[name].scales for name in names])
        values.setflags(write=False)
        scales.setflags(write=False)
        return dataclasses.replace(weights[names[0]], values=values, scales=scales), bias  # same activation scheme
    H = weights[names[0]].shape[1]
    weight = np.empty((3 * H, H), np.float32)  # rows: query's, key's, value's (each [H, H], checked at load)
    offsets = getattr(weights, "file_offsets", {})
    readable = getattr(weights, "fd", None) is not None
    for i, name in enumerate(names):
        block = weight[i * H:(i + 1) * H]  # a view: filled in place
        if readable and name in offsets:
            block[...] = np.frombuffer(weights.pread(name, block.nbytes, offsets[name]), np.float32).reshape(H, H)
        else:
            block[...] = weights[name]  # converted from float16 / bfloat16, or not from a file
    weight.setflags(write=False)
    return weight, bias


class LayerLinears(NamedTuple):
    """The (weight, bias) of one layer's four products, as the plan's linear engine takes them."""
    qkv: tuple  # query | key | value stacked (fused_qkv): [3H, H], [3H]
    attention_output: tuple  # [H, H], [H]
    ffn_up: tuple  # [F, H], [F]
    ffn_down: tuple  # [H, F], [H]


def layer_linears(weights, prefix: str) -> LayerLinears:
    """One layer's linear weights and biases as read: float32 [N, K] arrays, or QuantizedMatrix.

    Each weight is a new array read with read_tensor (pread), so the mapped
    file pages it came from are not touched (fused_qkv does the same); an int8
    weight's values likewise.
    """
    def pair(name):
        weight = weights[name]
        if isinstance(weight, QuantizedMatrix):
            weight = dataclasses.replace(weight, values=read_tensor(weights, name))
        else:
            weight = read_tensor(weights, name).astype(np.float32, copy=False)
        return weight, weights[name[:-len("weight")] + "bias"]
    return LayerLinears(qkv=fused_qkv(weights, prefix),
                        attention_output=pair(prefix + "attention.output.dense.weight"),
                        ffn_up=pair(prefix + "intermediate.dense.weight"),
                        ffn_down=pair(prefix + "output.dense.weight"))


def packed_layers(weights, config: ModelConfig, quantize: str | None) -> tuple[list, StackedLayers]:
    """Every layer's linear weights in the engines' layouts, stacked: (per-layer LayerLinears, StackedLayers).

    A float32 weight [N, K] is stored transposed (kernels_panel.pack_into), an
    int8 one (quantize="int8") in the int8 micro-kernel's panels
    (kernels_int8.prepare). Each kind of weight goes into one [L, ...] array
    for layer_loop.run_layers, filled layer by layer as the weights are read,
    so there is only ever one copy of them (plus one layer's in passing). The
    LayerLinears are views of the stacks: a float32 weight as the [N, K] view
    kernels_panel.pack returns, an int8 one as a PackedMatrix. Biases and
    LayerNorm parameters are stacked too (small copies).
    """
    L = config.num_hidden_layers
    stacks = {}  # name -> [L, ...] array, made when layer 0 gives its shape
    layers = []

    def put(name, i, array, dtype=np.float32):
        if name not in stacks:
            stacks[name] = np.empty((L,) + array.shape, dtype)
        target = stacks[name][i]
        if target.shape != array.shape:
            raise ValueError(f"layer {i}: {name} has shape {array.shape}, layer 0's is {target.shape}")
        target[...] = array
        return target

    for i in range(L):
        p = f"encoder.layer.{i}."
        read = layer_linears(weights, p)
        kept = {}
        for field, short, (weight, bias) in zip(LayerLinears._fields, ("qkv", "out", "up", "down"), read):
            bias = put("b_" + short, i, bias)
            if isinstance(weight, QuantizedMatrix):
                if quantize != "int8":
                    raise ValueError(f"{p}{field}: an int8 weight, but the encoder was made with quantize={quantize!r}")
                packed = int8.prepare(weight)
                kept[field] = (int8.PackedMatrix(put("w_" + short, i, packed.panels, np.int8),
                                                 put("s_" + short, i, packed.scales), packed.shape), bias)
            else:
                N, K = weight.shape
                target = put("w_" + short, i, np.empty((K, panel.padded_columns(N)), np.float32))
                panel.pack_into(weight, target)  # in place: no packed copy in between
                put("s_" + short, i, np.empty(0, np.float32))
                kept[field] = (target[:, :N].T, bias)
        del read, weight  # this layer's weights as read: only the stacks keep them
        layers.append(LayerLinears(**kept))
        for name, key in (("gamma1", "attention.output.LayerNorm.weight"), ("beta1", "attention.output.LayerNorm.bias"),
                          ("gamma2", "output.LayerNorm.weight"), ("beta2", "output.LayerNorm.bias")):
            put(name, i, weights[p + key])
    for array in stacks.values():
        array.setflags(write=False)
    stacked = StackedLayers(**{name: stacks[name] for name in StackedLayers._fields})
    return layers, stacked


class WordRows:
    """The rows of the word-embedding matrix that a batch's token ids point at.

    word_rows(token_ids [N]) -> (table [U, H] float32, ids [N] into table), U = distinct ids.

    Why not index the memory-mapped matrix: it is 384 MB (82 % of e5-small's
    file), a batch reads a few thousand scattered rows, and reading a mapped page
    maps its neighbours too ("fault-around"), so after a few batches most of it
    counts in the process's resident memory. Each needed row is read instead with
    weights.pread (from the very file that is mapped) into a small table, freed
    after the batch; the file stays in the OS page cache, shared and reclaimable.

    Where that is not possible (a float16 / bfloat16 file, converted in memory;
    no os.pread, as on Windows) the table is the matrix itself. An int8 table
    (reference_int8.QuantizedMatrix) gives its rows dequantised, as
    QuantizedMatrix's own indexing does.
    """

    NAME = "embeddings.word_embeddings.weight"

    def __init__(self, weights):
        self.matrix = weights[self.NAME]  # [V, H], used as is when rows cannot be read from the file
        self.quantized = isinstance(self.matrix, QuantizedMatrix)
        offsets = getattr(weights, "file_offsets", {})
        self.weights = weights
        self.offset = offsets.get(self.NAME) if getattr(weights, "fd", None) is not None else None

    def __call__(self, token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.offset is None and not self.quantized:
            return self.matrix, token_ids
        distinct, ids = np.unique(token_ids, return_inverse=True)  # [U] sorted, [N] positions in it
        if self.quantized and self.offset is None:  # int8 rows in memory
            table = self.matrix[distinct]
        elif self.quantized:  # int8 rows read from the file, then dequantised: [U, H]
            table = dequantize_rows(self._read_rows(distinct, np.int8), self.matrix.scales[distinct])
        else:
            table = self._read_rows(distinct, np.float32)
        return table, ids.astype(np.int64, copy=False)

    def _read_rows(self, rows: np.ndarray, dtype) -> np.ndarray:
        """The given rows of the matrix as stored in the file: [U, H] of dtype."""
        H = self.matrix.shape[1]
        row_bytes = np.dtype(dtype).itemsize * H
        table = np.empty((rows.shape[0], H), dtype)
        for i, token in enumerate(rows.tolist()):
            table[i] = np.frombuffer(self.weights.pread(self.NAME, row_bytes, self.offset + token * row_bytes), dtype)
        return table


class FastEncoder:
    """The default forward pass. Same contract as reference.forward, different layout.

    matmul: "auto", "numba" or "blas", the engines of the products (see matmul_plan.py).
    quantize: None, or "int8" for a model whose weights are QuantizedMatrix (checkpoint/quantize_model.py).
    """

    def __init__(self, config: ModelConfig, weights: dict, matmul: str = "auto", quantize: str | None = None):
        self.matmul = matmul
        self.quantize = quantize
        self.small_plan, self.large_plan = plans(matmul, quantize)  # below / from matmul.SERIAL_TOKENS tokens
        self.config = config
        self.w = weights
        self.layers, self.stacked = packed_layers(weights, config, quantize)  # the weights, packed once
        self.work = _Workspace(config)
        self.word_rows = WordRows(weights)
        self.token_type_row = np.ascontiguousarray(weights["embeddings.token_type_embeddings.weight"][0])
        self.token_type_row.setflags(write=False)

    def plan(self, n_tokens: int):
        """The engines for a batch of n_tokens packed tokens (matmul_plan.py)."""
        return self.large_plan if n_tokens >= SERIAL_TOKENS else self.small_plan

    # ------------------------------------------------------------------ packed API
    def forward_packed(self, token_ids: np.ndarray, positions: np.ndarray, seq_starts: np.ndarray) -> np.ndarray:
        """token_ids, positions: [N] int64; seq_starts: [B+1] int64 -> hidden states [N, H] float32.

        positions: each token's index in its text, 0, 1, 2, ... (as pack() gives them).
        """
        rows = position_rows(self.config, token_ids, positions, seq_starts)
        with _NUMBA_LOCK, one_blas_thread():
            return self._forward_packed(token_ids, rows, seq_starts).copy()

    def _forward_packed(self, token_ids, pos_rows, seq_starts, record=None):
        """pos_rows: [N] rows of the position-embedding matrix (from position_rows, or forward).

        record: None (the default path), or a Recorder that copies out each
        layer's hidden state and attention probabilities as they pass.
        """
        c, w = self.config, self.w
        N, H = token_ids.shape[0], c.hidden_size
        x, qkv, context, proj, ffn = self.work.views(N)  # ffn shares memory with qkv and context
        q, k, v = qkv[:, :H], qkv[:, H:2 * H], qkv[:, 2 * H:]  # [N, H] views, row stride 3H
        eps = float(c.layer_norm_eps)
        kernel_set, linear, attention, layer_loop = self.plan(N)  # parallel kernels, or serial twins for a few tokens
        word_table, word_ids = self.word_rows(token_ids)  # the word-embedding rows this batch reads
        kernel_set.embed(word_ids, pos_rows, word_table,
                         w["embeddings.position_embeddings.weight"], self.token_type_row,
                         w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps, x)
        if layer_loop is not None and record is None:  # a short batch: all layers in one call per thread
            layer_loop(self.stacked, x, qkv, context, proj, ffn, seq_starts, c.num_attention_heads, eps)
            return x
        if record is not None:
            record.hidden(x)
        for i in range(c.num_hidden_layers):
            p = f"encoder.layer.{i}."
            layer = self.layers[i]  # (weight, bias) of each linear layer
            linear(x, *layer.qkv, qkv)  # [N, H] -> [N, 3H]
            probs = record.new_attention(c.num_attention_heads) if record is not None else None
            attention(q, k, v, seq_starts, c.num_attention_heads, context, probs,
                      record.cols if probs is not None else None)
            linear(context, *layer.attention_output, proj)  # [N, H] -> [N, H]
            kernel_set.add_layer_norm(x, proj, w[p + "attention.output.LayerNorm.weight"],
                                      w[p + "attention.output.LayerNorm.bias"], eps, x)
            linear(x, *layer.ffn_up, ffn)  # [N, H] -> [N, F]
            kernel_set.gelu(ffn, ffn)
            linear(ffn, *layer.ffn_down, proj)  # [N, F] -> [N, H]
            kernel_set.add_layer_norm(x, proj, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
                                      eps, x)
            if record is not None:
                record.hidden(x)
        return x

    def embed_packed(self, token_ids, positions, seq_starts, pooling: str) -> np.ndarray:
        """Encode and pool: -> [B, H] float32 (not normalised). Arguments as forward_packed."""
        rows = position_rows(self.config, token_ids, positions, seq_starts)
        with _NUMBA_LOCK, one_blas_thread():
            hidden = self._forward_packed(token_ids, rows, seq_starts)
            pooled = np.empty((seq_starts.shape[0] - 1, self.config.hidden_size), np.float32)
            self.plan(token_ids.shape[0]).kernels.POOLERS[pooling](hidden, seq_starts, pooled)
        return pooled

    # ------------------------------------------------------------------ padded API
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """input_ids, attention_mask: [B, T] -> [B, T, H], like reference.forward.

        The real tokens (mask 1) are packed with the position rows transformers
        gives them in the padded batch (reference.position_ids); padding
        positions of the result are 0.
        """
        return self.forward_with_intermediates(input_ids, attention_mask, False, False)[0]

    def forward_with_intermediates(self, input_ids, attention_mask, hidden_states: bool = True,
                                   attentions: bool = True):
        """forward(), keeping what it passes through, like reference.forward_with_intermediates.

        -> (last hidden state [B, T, H],
            hidden_states: L + 1 arrays [B, T, H] (embeddings' output, then each layer's) or None,
            attentions: L arrays [B, A, T, T] (each layer's attention probabilities) or None).
        All of them are 0 at padding: hidden states at padded tokens, attention
        probabilities where the query or the key is a padded token.
        """
        B, T = input_ids.shape
        rows, cols = np.nonzero(attention_mask)  # row-major: each text's tokens in order
        token_ids = np.ascontiguousarray(input_ids[rows, cols], dtype=np.int64)
        positions = np.ascontiguousarray(reference.position_ids(self.config, input_ids)[rows, cols], dtype=np.int64)
        check_position_rows(self.config, positions)
        seq_starts = np.zeros(B + 1, np.int64)
        np.cumsum(attention_mask.sum(axis=1), out=seq_starts[1:])
        record = Recorder(B, T, rows, cols, hidden_states, attentions) if hidden_states or attentions else None
        out = np.zeros((B, T, self.config.hidden_size), np.float32)
        with _NUMBA_LOCK, one_blas_thread():  # the workspace is shared: copy out before another call can reuse it
            out[rows, cols] = self._forward_packed(token_ids, positions, seq_starts, record)
        if record is None:
            return out, None, None
        return out, record.hidden_states, record.attentions


class Recorder:
    """Copies packed intermediates into padded arrays as _forward_packed passes them.

    rows, cols: [N] each packed token's place (text, position) in the padded
    [B, T] batch. hidden_states / attentions: whether to keep each; the lists
    are None when not kept.
    """

    def __init__(self, B: int, T: int, rows, cols, hidden_states: bool, attentions: bool):
        self.B, self.T = B, T
        self.rows = rows
        self.cols = np.ascontiguousarray(cols, dtype=np.int64)
        self.hidden_states = [] if hidden_states else None
        self.attentions = [] if attentions else None

    def hidden(self, x) -> None:
        # x: [N, H] packed -> [B, T, H], 0 at padding
        if self.hidden_states is not None:
            padded = np.zeros((self.B, self.T, x.shape[1]), np.float32)
            padded[self.rows, self.cols] = x
            self.hidden_states.append(padded)

    def new_attention(self, num_heads: int):
        """A zeroed [B, A, T, T] array for this layer's attention probabilities (kept), or None if not kept.

        The attention call fills it: 0 stays where the query or the key is padding.
        """
        if self.attentions is None:
            return None
        probs = np.zeros((self.B, num_heads, self.T, self.T), np.float32)
        self.attentions.append(probs)
        return probs


def pack(ids: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lists of token ids -> (token_ids [N], positions [N], seq_starts [B+1]), all int64."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    seq_starts = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(lengths, out=seq_starts[1:])
    token_ids = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=int(seq_starts[-1]))
    positions = np.arange(seq_starts[-1], dtype=np.int64) - np.repeat(seq_starts[:-1], lengths)
    return token_ids, positions, seq_starts


def position_rows(config: ModelConfig, token_ids, positions, seq_starts) -> np.ndarray:
    """Packed tokens -> the row of the position-embedding matrix each reads: [N] int64.

    token_ids, positions: [N] (positions: index in the text, 0, 1, 2, ...);
    seq_starts: [B+1]. Twin: reference.position_ids, for texts without padding.
    BERT: the index itself. XLM-R: pad_token_id + 1, + 2, ... counting only the
    non-pad tokens of each text; a pad token reads row pad_token_id.
    """
    if not config.positions_skip_padding:
        rows = np.asarray(positions, dtype=np.int64)
    else:
        real = np.asarray(token_ids) != config.pad_token_id  # [N]
        before = np.concatenate([[0], np.cumsum(real)])  # [N+1] real tokens before each slot, all texts
        lengths = np.diff(seq_starts)  # [B]
        count = before[1:] - np.repeat(before[seq_starts[:-1]], lengths) - 1  # [N] 0, 1, ... within a text
        rows = np.where(real, config.position_offset + count, config.pad_token_id).astype(np.int64)
    check_position_rows(config, rows)
    return np.ascontiguousarray(rows)


def check_position_rows(config: ModelConfig, rows) -> None:
    """Numba does not bounds-check: refuse a position past the table before kernels.embed reads it."""
    if rows.size and (rows.min() < 0 or rows.max() >= config.max_position_embeddings):
        raise ValueError(f"a token at position row {int(rows.max())} is past the position-embedding table "
                         f"(max_position_embeddings {config.max_position_embeddings}): at most "
                         f"{config.max_positions} tokens per sequence")
