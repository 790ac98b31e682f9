"""The fast forward: the reference encoder's steps, run as Numba kernels on packed tokens.

    ids of B texts -> pack into one [N] array (N = total real tokens, no padding)
    -> position_rows -> kernels.embed -> L x layer -> [N, H] hidden states -> kernels.*_pool -> [B, H]

pack() numbers each text's tokens 0, 1, 2, ...; position_rows() turns those
into rows of the position-embedding matrix: the same numbers for BERT,
pad_token_id + 1, + 2, ... over the non-pad tokens for XLM-R (exactly
reference.position_ids, restricted to the packed tokens).

One layer, with the workspace arrays it writes (all [N, *], reused by every layer;
ffn takes the memory of qkv and context, see _Workspace):

    qkv       = linear(x, [Wq; Wk; Wv])       [N, 3H]  (q, k, v: its three column blocks)
    context   = attention(q, k, v)            [N, H]
    attn_out  = linear(context, Wo)           [N, H]
    x         = LayerNorm(x + attn_out)       [N, H]   (in place)
    ffn       = GELU(linear(x, W1))           [N, F]   (GELU in place)
    ffn_out   = linear(ffn, W2)               [N, H]
    x         = LayerNorm(x + ffn_out)        [N, H]   (in place)

A batch of fewer than kernels.SERIAL_TOKENS tokens (one short query) runs the
kernels' serial twins instead, on the calling thread: waking Numba's worker
threads for each of about 100 kernel calls costs more than the work itself.

Numba's parallel kernels must not be entered from two Python threads at once
(its default threading layer aborts the process); every call into this module
goes through one process-wide lock, so concurrent encode() calls are
serialised, and each call uses all of Numba's threads.
"""
from __future__ import annotations

import threading

import numba
import numpy as np

from . import kernels, reference
from .blas import POOL, BlasAttention, BlasLinear, one_blas_thread
from .config import ModelConfig

_NUMBA_LOCK = threading.Lock()


class _Workspace:
    """Activation buffers for up to `capacity` tokens, grown on demand and reused by every layer.

    views(N) -> x [N, H], qkv [N, 3H], context [N, H], proj [N, H], ffn [N, F].
    qkv and context (the attention half of a layer) and ffn (the FFN half) are
    never needed at the same time, so they share one buffer: ffn overwrites
    q, k, v and the context once the attention output has been projected, and
    the next layer's q, k, v overwrite ffn once it has been projected down.
    For e5-small that is 6 instead of 10 floats per token and hidden unit
    (4,096 tokens: 38 MB instead of 63).
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


def fused_qkv(weights, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """One layer's query, key and value projections stacked: (weight [3H, H], bias [3H]).

    x @ weight.T + bias is then q | k | v side by side, [N, 3H], in one matmul
    instead of three: for a few tokens, where the time goes in reading the
    weights and handing work to threads, one 12-token query runs its Q, K, V
    projections in 2.5 ms instead of 3.6 (12 layers); 9.2 ms instead of 11.4
    for a 128-token passage.

    The stacked weight is a copy (1.8 MB per e5-small layer). Where the three
    weights are float32 in the safetensors file it is read from the file
    (weights.pread) straight into place, so the mapped pages of the originals
    are never touched and do not count in the process's resident memory twice.
    """
    names = [prefix + f"attention.self.{part}.weight" for part in ("query", "key", "value")]
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
    bias = np.concatenate([weights[name[:-len("weight")] + "bias"] for name in names])  # [3H]
    weight.setflags(write=False)
    bias.setflags(write=False)
    return weight, bias


class WordRows:
    """The rows of the word-embedding matrix that a batch's token ids point at.

    word_rows(token_ids [N]) -> (table [U, H] float32, ids [N] into table), U = distinct ids.

    Why not just index the memory-mapped matrix. It is 250,002 x 384 floats
    (384 MB, 82 % of e5-small's file), and a batch reads a few thousand rows of
    it, scattered. Reading a mapped page makes the kernel map its neighbours
    too ("fault-around", 64 KB on Linux), so after a few batches most of the
    384 MB counted in the process's resident memory (measured: +266 MB on
    W3 of scripts/bench.py). Here each needed row is read with os.pread
    (weights.pread: through the descriptor opened at load, so from the very
    file that is mapped) into a small table instead: 1.5 KB per distinct id,
    freed after the batch; the file stays in the OS page cache, shared and
    reclaimable.

    Where that is not possible (a float16 / bfloat16 file, converted in memory;
    no os.pread, as on Windows) the table is the matrix itself.
    """

    NAME = "embeddings.word_embeddings.weight"

    def __init__(self, weights):
        self.matrix = weights[self.NAME]  # [V, H], used as is when rows cannot be read from the file
        offsets = getattr(weights, "file_offsets", {})
        self.weights = weights
        self.offset = offsets.get(self.NAME) if getattr(weights, "fd", None) is not None else None

    def __call__(self, token_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.offset is None:
            return self.matrix, token_ids
        distinct, ids = np.unique(token_ids, return_inverse=True)  # [U] sorted, [N] positions in it
        H = self.matrix.shape[1]
        row_bytes = 4 * H
        table = np.empty((distinct.shape[0], H), np.float32)  # [U, H]
        for row, token in enumerate(distinct.tolist()):
            table[row] = np.frombuffer(self.weights.pread(self.NAME, row_bytes, self.offset + token * row_bytes),
                                       np.float32)
        return table, ids.astype(np.int64, copy=False)


class SplitLinear:
    """out = x @ weight.T + bias for a few rows: kernels.linear_columns on Python threads.  Twin: reference.linear.

    One short query (a dozen tokens) costs about 0.3 ms per linear layer. The
    parallel kernels.linear wakes Numba's sleeping workers for each call, which
    on the default ('workqueue') threading layer costs about as much as the
    work; the serial twin avoids that but uses one core. Here the output
    columns are cut into numba.get_num_threads() ranges (multiples of 4, the
    micro-kernel's width): the calling thread computes one, blas.POOL's worker
    threads the others, each streaming only its slice of the weight, and the
    kernel releases the GIL. Measured on one 12-token query: 23 ms serial,
    14 ms split over 2 threads.
    """

    def __call__(self, x, weight, bias, out) -> None:
        N = weight.shape[0]
        threads = numba.get_num_threads()
        cuts = [min(N, (N * t // threads + 3) // 4 * 4) for t in range(threads)] + [N]  # [threads + 1]
        POOL.run(kernels.linear_columns,
                 [(x, weight, bias, out, cuts[t], cuts[t + 1]) for t in range(threads) if cuts[t + 1] > cuts[t]])


# The linear layers of batches of SERIAL_TOKENS tokens or more (FastEncoder._plan chooses below that).
MATMULS = {"auto": BlasLinear, "numba": lambda: kernels.linear, "blas": BlasLinear}


class NumbaAttention:
    """kernels.attention (or its serial twin) behind the attention calls' signature (see blas.BlasAttention).

    With probs and cols it also writes the probabilities out, through
    kernels.attention_probs, which runs the same per-head code (_head_probs).
    """

    def __init__(self, kernel_set):
        self.kernel_set = kernel_set

    def __call__(self, q, k, v, seq_starts, num_heads: int, out, probs=None, cols=None) -> None:
        self.kernel_set.attention(q, k, v, seq_starts, num_heads, out)
        if probs is not None:
            kernels.attention_probs(q, k, seq_starts, num_heads, cols, probs)


class FastEncoder:
    """The default forward pass. Same contract as reference.forward, different layout.

    matmul: "auto" (the default: blas.BlasLinear and blas.BlasAttention from 64
    tokens per batch, SplitLinear and the Numba attention below), "numba"
    (minie5's Numba matmul and attention at every size: kernels.linear,
    SplitLinear below 64 tokens) or "blas" (blas.BlasLinear and
    blas.BlasAttention at every size).
    """

    def __init__(self, config: ModelConfig, weights: dict, matmul: str = "auto"):
        if matmul not in MATMULS:
            raise ValueError(f"matmul must be one of {tuple(MATMULS)}, got {matmul!r}")
        self.matmul = matmul
        self.linear = MATMULS[matmul]()
        # attention's two products: Numba's micro-kernel for "numba" and for a few tokens, sgemm otherwise
        self.attention = NumbaAttention(kernels) if matmul == "numba" else BlasAttention()
        self.serial_attention = NumbaAttention(kernels.SERIAL)
        self.split_linear = SplitLinear()  # the linear layers of a batch of a few tokens
        self.config = config
        self.w = weights
        self.qkv = [fused_qkv(weights, f"encoder.layer.{i}.") for i in range(config.num_hidden_layers)]
        self.work = _Workspace(config)
        self.word_rows = WordRows(weights)
        self.token_type_row = np.ascontiguousarray(weights["embeddings.token_type_embeddings.weight"][0])
        self.token_type_row.setflags(write=False)

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
        kernel_set, linear, attention = self._plan(N)  # parallel kernels, or serial twins for a few tokens
        word_table, word_ids = self.word_rows(token_ids)  # the word-embedding rows this batch reads
        kernel_set.embed(word_ids, pos_rows, word_table,
                         w["embeddings.position_embeddings.weight"], self.token_type_row,
                         w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps, x)
        if record is not None:
            record.hidden(x)
        for i in range(c.num_hidden_layers):
            p = f"encoder.layer.{i}."
            linear(x, *self.qkv[i], qkv)  # [N, H] -> [N, 3H]
            probs = record.new_attention(c.num_attention_heads) if record is not None else None
            attention(q, k, v, seq_starts, c.num_attention_heads, context, probs,
                      record.cols if probs is not None else None)
            linear(context, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"],
                           proj)
            kernel_set.add_layer_norm(x, proj, w[p + "attention.output.LayerNorm.weight"],
                                      w[p + "attention.output.LayerNorm.bias"], eps, x)
            linear(x, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"], ffn)
            kernel_set.gelu(ffn, ffn)
            linear(ffn, w[p + "output.dense.weight"], w[p + "output.dense.bias"], proj)
            kernel_set.add_layer_norm(x, proj, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
                                      eps, x)
            if record is not None:
                record.hidden(x)
        return x

    def _plan(self, n_tokens: int):
        """(kernels, linear, attention) for a batch of n_tokens: see 'serial twins' in kernels.py.

        Below kernels.SERIAL_TOKENS everything but the linear layers runs on the
        calling thread (attention too, unless matmul="blas" was asked for), and
        the linear layers on SplitLinear (Python threads, no Numba pool to wake);
        from there the parallel kernels, self.linear and self.attention.

        Why the Numba matmul for a few tokens and sgemm from there: a few tokens
        (one short query) do little arithmetic per weight, so what counts is
        reading each weight once, which the Numba kernel does with no start-up
        cost (sgemm packs the weight first). Its arithmetic costs there about as
        much as the reading, and the two add up (12 rows: 46-62 GFLOP/s per
        thread re-reading one weight in cache, 30-40 reading the whole model in
        turn, i.e. 5-7 GB/s, where two threads can read at 15 GB/s or more).
        Thousands of tokens are compute-bound, where an optimised sgemm does
        several times the FLOP/s of the Numba kernel (see minie5/blas.py).
        """
        if n_tokens >= kernels.SERIAL_TOKENS:
            return kernels, self.linear, self.attention
        if self.matmul == "blas":
            return kernels.SERIAL, self.linear, self.attention
        return kernels.SERIAL, self.split_linear, self.serial_attention

    def embed_packed(self, token_ids, positions, seq_starts, pooling: str) -> np.ndarray:
        """Encode and pool: -> [B, H] float32 (not normalised). Arguments as forward_packed."""
        rows = position_rows(self.config, token_ids, positions, seq_starts)
        with _NUMBA_LOCK, one_blas_thread():
            hidden = self._forward_packed(token_ids, rows, seq_starts)
            pooled = np.empty((seq_starts.shape[0] - 1, self.config.hidden_size), np.float32)
            self._plan(token_ids.shape[0])[0].POOLERS[pooling](hidden, seq_starts, pooled)
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
