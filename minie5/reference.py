"""The textbook: a BERT encoder forward pass in plain NumPy.

The same code runs XLM-RoBERTa (multilingual-e5-base / -large): the two
differ only in position_ids, how tokens are numbered for the position table.

Read this file top to bottom to see the whole model. Each block is one small
function with the shapes of its arrays in comments, for multilingual-e5-small:
hidden H = 384, heads A = 12, head_dim D = 32, FFN F = 1536, L = 12 layers.
B is the batch, T the (padded) sequence length.

    ids -> embed -> L x encoder_layer -> hidden states -> pool -> normalise
    encoder_layer(x) = LN(h + FFN(h)),  h = LN(x + Attention(x))

This is the reference path: slow enough to read, exact enough to trust.
minie5's default fast path (engine/encoder.py, engine/kernels.py) computes the same thing
with Numba kernels, and tests check the two against each other and against
Hugging Face transformers.
"""
from __future__ import annotations

import math

import numpy as np

from .checkpoint.config import ModelConfig

Tensors = dict  # {tensor name: float32 array}: what weights.load_weights returns
# (an int8 model: reference_int8.QuantizedMatrix for some, which index and multiply like the matrix they replace)


def layer_norm(x, gamma, beta, eps):
    # x: [..., H] -> [..., H]; normalise each vector, then scale and shift
    mean = x.mean(axis=-1, keepdims=True)  # [..., 1]
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # [..., 1] (biased variance, as torch)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta  # [..., H]


def linear(x, weight, bias):
    # x: [..., in] @ weight.T: [in, out] + bias: [out] -> [..., out]  (weights are stored [out, in])
    return x @ weight.T + bias


def gelu(x):
    # exact GELU: x * Phi(x), Phi the standard normal CDF (not the tanh approximation)
    # erf in float64, as math.erf (numpy has none): see the end of this file
    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(np.float32)


def position_ids(config: ModelConfig, input_ids):
    # input_ids: [B, T] -> [B, T] int64, the row of the position-embedding matrix each token reads
    B, T = input_ids.shape
    if not config.positions_skip_padding:  # BERT: token t of every row reads row t
        return np.broadcast_to(np.arange(T, dtype=np.int64), (B, T))
    # XLM-R: real tokens are numbered pad_token_id + 1, + 2, ...; pad tokens read row pad_token_id
    real = input_ids != config.pad_token_id  # [B, T]
    count = np.cumsum(real, axis=1) - 1  # [B, T] 0, 1, 2, ... over the real tokens of a row
    return np.where(real, config.position_offset + count, config.pad_token_id)


def embed(config: ModelConfig, w: Tensors, input_ids):
    # input_ids: [B, T] -> hidden: [B, T, H]
    words = w["embeddings.word_embeddings.weight"][input_ids]  # [B, T, H] one row per token id
    positions = w["embeddings.position_embeddings.weight"][position_ids(config, input_ids)]  # [B, T, H]
    token_type = w["embeddings.token_type_embeddings.weight"][0]  # [H] every token is type 0
    x = words + positions + token_type  # [B, T, H]
    return layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], config.layer_norm_eps)


def attention(config: ModelConfig, w: Tensors, prefix: str, x, attention_mask):
    # x: [B, T, H], attention_mask: [B, T] (1 = real token, 0 = padding)
    #   -> out: [B, T, H], attn_probs: [B, A, T, T] (row t: how much query t reads from each key)
    B, T, H = x.shape
    A, D = config.num_attention_heads, config.head_dim

    def heads(name):  # project, then split H into A heads of D: [B, T, H] -> [B, A, T, D]
        y = linear(x, w[prefix + f"attention.self.{name}.weight"], w[prefix + f"attention.self.{name}.bias"])
        return y.reshape(B, T, A, D).transpose(0, 2, 1, 3)

    q, k, v = heads("query"), heads("key"), heads("value")  # each [B, A, T, D]
    scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(D))  # [B, A, T, T] query x key
    # a padding key gets the lowest float, so its weight after softmax is exactly 0
    blocked = np.where(attention_mask[:, None, None, :] == 0, np.finfo(np.float32).min, np.float32(0))
    scores = scores + blocked  # [B, A, T, T]
    scores = scores - scores.max(axis=-1, keepdims=True)  # stable softmax
    attn_probs = np.exp(scores)  # [B, A, T, T]
    attn_probs = attn_probs / attn_probs.sum(axis=-1, keepdims=True)  # each row sums to 1
    context = attn_probs @ v  # [B, A, T, D] weighted mix of value vectors
    context = context.transpose(0, 2, 1, 3).reshape(B, T, H)  # [B, T, H] heads side by side again
    out = linear(context, w[prefix + "attention.output.dense.weight"], w[prefix + "attention.output.dense.bias"])
    return out, attn_probs  # [B, T, H], [B, A, T, T]


def feed_forward(w: Tensors, prefix: str, x):
    # x: [B, T, H] -> [B, T, F] -> [B, T, H]
    h = linear(x, w[prefix + "intermediate.dense.weight"], w[prefix + "intermediate.dense.bias"])  # [B, T, F]
    h = gelu(h)  # [B, T, F]
    return linear(h, w[prefix + "output.dense.weight"], w[prefix + "output.dense.bias"])  # [B, T, H]


def encoder_layer(config: ModelConfig, w: Tensors, i: int, x, attention_mask):
    # x: [B, T, H] -> [B, T, H] (and the layer's attention probabilities [B, A, T, T])
    # post-LayerNorm residual blocks, as in BERT
    p = f"encoder.layer.{i}."
    eps = config.layer_norm_eps
    attn_out, attn_probs = attention(config, w, p, x, attention_mask)  # [B, T, H], [B, A, T, T]
    h = x + attn_out  # [B, T, H] residual around attention
    h = layer_norm(h, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
    out = h + feed_forward(w, p, h)  # [B, T, H] residual around the FFN
    out = layer_norm(out, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    return out, attn_probs  # [B, T, H], [B, A, T, T]


def forward(config: ModelConfig, w: Tensors, input_ids, attention_mask):
    # input_ids, attention_mask: [B, T] -> last hidden state: [B, T, H] float32
    x = embed(config, w, input_ids)  # [B, T, H]
    for i in range(config.num_hidden_layers):
        x, _ = encoder_layer(config, w, i, x, attention_mask)  # [B, T, H]
    return x.astype(np.float32)


def forward_with_intermediates(config: ModelConfig, w: Tensors, input_ids, attention_mask):
    # forward(), keeping what it passes through (what transformers returns with
    # output_hidden_states=True, output_attentions=True):
    #   hidden_states: L + 1 arrays [B, T, H] float32, the embeddings' output, then each layer's
    #   attentions: L arrays [B, A, T, T] float32, each layer's attention probabilities
    x = embed(config, w, input_ids)  # [B, T, H]
    hidden_states, attentions = [x.astype(np.float32)], []
    for i in range(config.num_hidden_layers):
        x, attn_probs = encoder_layer(config, w, i, x, attention_mask)  # [B, T, H], [B, A, T, T]
        hidden_states.append(x.astype(np.float32))
        attentions.append(attn_probs.astype(np.float32))
    return hidden_states, attentions


def mean_pool(hidden, attention_mask):
    # hidden: [B, T, H], attention_mask: [B, T] -> [B, H]; average over real tokens (<s>, </s> included)
    m = attention_mask[:, :, None].astype(np.float32)  # [B, T, 1]
    return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)  # [B, H]


def cls_pool(hidden, attention_mask):
    # hidden: [B, T, H] -> [B, H]; the first token's vector (<s>, "[CLS]")
    return hidden[:, 0, :]


def max_pool(hidden, attention_mask):
    # hidden: [B, T, H] -> [B, H]; per dimension the largest value over real tokens
    blocked = np.where(attention_mask[:, :, None] == 0, -np.inf, 0).astype(np.float32)  # [B, T, 1]
    return (hidden + blocked).max(axis=1)


POOLERS = {"mean": mean_pool, "cls": cls_pool, "max": max_pool}


def l2_normalize(x):
    # x: [B, H] -> [B, H], each row of unit length (a zero row stays zero)
    norm = np.sqrt((x * x).sum(axis=-1, keepdims=True))  # [B, 1]
    return x / np.maximum(norm, 1e-12)


def manhattan_distances(a, b):
    # a: [n, dim], b: [m, dim] -> [n, m]: sum over k of |a[i, k] - b[j, k]|, in float64.
    # The textbook form builds the whole [n, m, dim] difference array: fine for a test, not for 10,000 texts
    # (engine/kernels.manhattan_distances computes the same one row pair at a time).
    difference = a[:, None, :].astype(np.float64) - b[None, :, :]  # [n, m, dim]
    return np.abs(difference).sum(axis=-1)


def attention_online(q, k, v, query_tile=8, key_tile=256):
    # The core of attention() for one text and one head, computed the way engine/kernels.attention_fused
    # computes it: tile by tile, with a running maximum and sum per query (online softmax), so the
    # [L, L] scores are never held at once. Same result as softmax(q k^T / sqrt(D)) @ v.
    # q, k, v: [L, D] -> context: [L, D]
    L, D = q.shape
    context = np.empty((L, D), np.float32)
    q = q.astype(np.float64) / math.sqrt(D)
    for i0 in range(0, L, query_tile):
        q_tile = q[i0:i0 + query_tile]  # [R, D]
        m = None  # [R, 1] largest score seen so far per query (set by the first key tile: no -inf)
        for j0 in range(0, L, key_tile):
            scores = q_tile @ k[j0:j0 + key_tile].T  # [R, C]
            if m is None:
                m = scores.max(axis=1, keepdims=True)  # [R, 1]
                total = np.zeros((len(q_tile), 1))  # [R, 1] sum of exp(score - m) so far
                acc = np.zeros((len(q_tile), D))  # [R, D] sum of exp(score - m) * v so far
            m_new = np.maximum(m, scores.max(axis=1, keepdims=True))  # [R, 1]
            rescale = np.exp(m - m_new)  # [R, 1] what was summed against m, moved to m_new
            weights = np.exp(scores - m_new)  # [R, C] unnormalised softmax weights
            total = total * rescale + weights.sum(axis=1, keepdims=True)
            acc = acc * rescale + weights @ v[j0:j0 + key_tile]  # [R, D]
            m = m_new
        context[i0:i0 + query_tile] = acc / total  # [R, D]
    return context


# ---------------------------------------------------------------- erf for arrays (used by gelu)
# W. J. Cody's rational Chebyshev approximations (Math. Comp. 23 (1969) 631-638), with the
# coefficients of his CALERF (netlib specfun/erf): at least 18 significant digits in theory, so
# float64 rounding in practice (within 3 eps of math.erf, the worst just above 0.46875 where
# 1 - erfc cancels; tests/test_reference.py).
# Each pair is (numerator, denominator), highest power first.
ERF_NEAR_ZERO = (  # |x| <= 0.46875: erf(x) = x P(x^2) / Q(x^2)
    (1.85777706184603153e-1, 3.16112374387056560e0, 1.13864154151050156e2, 3.77485237685302021e2,
     3.20937758913846947e3),
    (1.0, 2.36012909523441209e1, 2.44024637934444173e2, 1.28261652607737228e3, 2.84423683343917062e3))
ERFC_MIDDLE = (  # 0.46875 < x <= 4: erfc(x) = exp(-x^2) P(x) / Q(x)
    (2.15311535474403846e-8, 5.64188496988670089e-1, 8.88314979438837594e0, 6.61191906371416295e1,
     2.98635138197400131e2, 8.81952221241769090e2, 1.71204761263407058e3, 2.05107837782607147e3,
     1.23033935479799725e3),
    (1.0, 1.57449261107098347e1, 1.17693950891312499e2, 5.37181101862009858e2, 1.62138957456669019e3,
     3.29079923573345963e3, 4.36261909014324716e3, 3.43936767414372164e3, 1.23033935480374942e3))
ERFC_TAIL = (  # x > 4: erfc(x) = exp(-x^2) / x (1/sqrt(pi) - z P(z) / Q(z)), z = 1 / x^2
    (1.63153871373020978e-2, 3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
     1.60837851487422766e-2, 6.58749161529837803e-4),
    (1.0, 2.56852019228982242e0, 1.87295284992346047e0, 5.27905102951428412e-1, 6.05183413124413191e-2,
     2.33520497626869185e-3))


def polynomial(coefficients, t):
    # t: [n] float64 -> c[0] t^k + c[1] t^(k-1) + ... + c[k]: [n], by Horner's rule in place
    y = np.full_like(t, coefficients[0])
    for c in coefficients[1:]:
        y *= t
        y += c
    return y


def rational(pair, t):
    # t: [n] float64 -> P(t) / Q(t): [n], for pair = (P's coefficients, Q's)
    return polynomial(pair[0], t) / polynomial(pair[1], t)


def erf(x):
    # x: [...] -> erf(x): [...] float64; erf is odd, so it is computed for |x| and takes x's sign
    a = np.abs(np.asarray(x, dtype=np.float64)).ravel()  # [n]
    # each range as a list of indices (numpy gathers by index several times faster than by mask)
    near_zero = np.flatnonzero(a <= 0.46875)
    middle = np.flatnonzero((a > 0.46875) & (a <= 4.0))
    tail = np.flatnonzero(~(a <= 4.0))  # beyond 4, and nan
    out = np.empty_like(a)  # [n] erf(|x|)
    small = a[near_zero]
    out[near_zero] = small * rational(ERF_NEAR_ZERO, small * small)
    mid = a[middle]
    out[middle] = 1.0 - np.exp(-mid * mid) * rational(ERFC_MIDDLE, mid)
    big = np.minimum(a[tail], 26.543)  # erfc underflows to 0 past 26.543 (Cody's XBIG); x^2 stays finite
    z = 1.0 / (big * big)
    out[tail] = 1.0 - np.exp(-big * big) / big * (1.0 / math.sqrt(math.pi) - z * rational(ERFC_TAIL, z))
    return np.copysign(out.reshape(np.shape(x)), x)
