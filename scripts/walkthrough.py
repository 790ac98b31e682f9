#!/usr/bin/env python3
"""One text through the model, stage by stage: a guided reading of minie5/reference.py.

    python scripts/walkthrough.py "query: how much protein should a female eat"
    python scripts/walkthrough.py "passage: Berlin is the capital of Germany." --model DIR
    python scripts/walkthrough.py "query: ..." --plot walkthrough/ --head 3     # PNGs (needs matplotlib)

Prints, in the order the model computes them (each stage names the function it runs):

  1. tokenizer     pieces and ids                                  Tokenizer.encode (tokenizer.py)
  2. embeddings    word + position + token type rows and their norms, then LayerNorm   reference.embed
  3. layers        per layer: the shapes, the residual stream's norm, and per head the
                   attention entropy and the token attended to most                reference.encoder_layer
  4. pooling       mean over the tokens, then L2 normalisation     reference.mean_pool, reference.l2_normalize

The layers' outputs come from Model.forward(..., output_hidden_states=True,
output_attentions=True) on the reference path (backend="reference"), i.e.
reference.forward_with_intermediates. With --plot DIR (matplotlib: `pip install
'minie5[plot]'`) it saves one attention heatmap per layer for --head and the
residual norm by layer. The model: --model, else $MINIE5_MODEL, else the hub id.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import minie5  # noqa: E402
from minie5 import reference  # noqa: E402

TOP_VALUES = 8  # how many numbers of the final vector to print


def heading(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 76 - len(title)))


# ---------------------------------------------------------------- 1. tokenizer
def tokenize(model: minie5.Model, text: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """text -> input_ids [1, T], attention_mask [1, T], pieces [T] (what each id stands for)."""
    ids, truncated = model.tokenizer.encode([text])  # [[<s>, ..., </s>]], truncated to max_length
    pieces = [model.tokenizer.backend.id_to_token(i) for i in ids[0]]
    input_ids, attention_mask = model.tokenizer.pad(ids)  # [1, T] each
    heading(f"1. tokenizer: {len(pieces)} tokens ({model.tokenizer.tokenizer_class})")
    print(f"text: {text!r}" + (" (truncated)" if truncated else ""))
    print(f"{'t':>4}  {'piece':<20}{'id':>8}")
    for t, (piece, token_id) in enumerate(zip(pieces, ids[0])):
        print(f"{t:>4}  {piece:<20}{token_id:>8}")
    return input_ids, attention_mask, pieces


# ---------------------------------------------------------------- 2. embeddings
def embeddings(model: minie5.Model, input_ids: np.ndarray, pieces: list[str]) -> np.ndarray:
    """The three terms reference.embed adds, their norms, and its output [1, T, H]."""
    c, w = model.config, model.weights
    positions = reference.position_ids(c, input_ids)  # [1, T] rows of the position table
    words = w["embeddings.word_embeddings.weight"][input_ids]  # [1, T, H]
    position_rows = w["embeddings.position_embeddings.weight"][positions]  # [1, T, H]
    token_type = w["embeddings.token_type_embeddings.weight"][0]  # [H], type 0 for every token
    x = words + position_rows + token_type  # [1, T, H]
    embedded = reference.embed(c, w, input_ids)  # LayerNorm(x): [1, T, H]
    heading(f"2. embeddings: word + position + token type, then LayerNorm -> [1, {input_ids.shape[1]}, "
            f"{c.hidden_size}]")
    norm = lambda a: np.linalg.norm(a, axis=-1)  # noqa: E731  [..., H] -> [...]
    print(f"{'t':>4}  {'piece':<20}{'pos row':>8}{'|word|':>9}{'|position|':>11}{'|type|':>8}{'|sum|':>8}"
          f"{'|LayerNorm|':>12}")
    for t, piece in enumerate(pieces):
        print(f"{t:>4}  {piece:<20}{positions[0, t]:>8}{norm(words[0, t]):>9.3f}{norm(position_rows[0, t]):>11.3f}"
              f"{norm(token_type):>8.3f}{norm(x[0, t]):>8.3f}{norm(embedded[0, t]):>12.3f}")
    return embedded


# ---------------------------------------------------------------- 3. layers
def attention_entropy(probs: np.ndarray) -> np.ndarray:
    """probs [A, T, T] -> [A]: per head, the mean over queries of -sum_k p log p (nats; uniform = log T)."""
    p = probs.astype(np.float64)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1).mean(axis=-1)


def most_attended(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """probs [A, T, T] -> (key index [A], its mean weight [A]): per head, the key the queries read most."""
    mean_over_queries = probs.mean(axis=1)  # [A, T]
    top = mean_over_queries.argmax(axis=-1)  # [A]
    return top, mean_over_queries[np.arange(len(top)), top]


def residual_norm(hidden: np.ndarray) -> float:
    """hidden [1, T, H] -> the mean over tokens of each token vector's length."""
    return float(np.linalg.norm(hidden[0], axis=-1).mean())


def layers(model: minie5.Model, out: minie5.ForwardOutput, pieces: list[str]) -> list[float]:
    """Per layer: shapes, residual norm, attention entropy and most attended token per head."""
    c = model.config
    T, H, A, D, F = len(pieces), c.hidden_size, c.num_attention_heads, c.head_dim, c.intermediate_size
    heading(f"3. layers: {c.num_hidden_layers} x encoder_layer, each x -> LN(h + FFN(h)), h = LN(x + Attention(x))")
    print(f"shapes in every layer: x [1, {T}, {H}] -> q, k, v [1, {A}, {T}, {D}] -> scores, probs "
          f"[1, {A}, {T}, {T}] -> context [1, {T}, {H}] -> + x, LayerNorm -> FFN [1, {T}, {F}] -> "
          f"[1, {T}, {H}] -> + h, LayerNorm -> [1, {T}, {H}]")
    print(f"entropy: nats per query, averaged over the {T} queries (uniform attention: log {T} = {np.log(T):.2f})")
    norms = [residual_norm(out.hidden_states[0])]
    print(f"embeddings: residual norm {norms[0]:.3f}")
    for i, probs in enumerate(out.attentions):
        probs = probs[0]  # [A, T, T], the one text
        hidden = out.hidden_states[i + 1]  # [1, T, H]
        norms.append(residual_norm(hidden))
        entropy = attention_entropy(probs)
        top, weight = most_attended(probs)
        print(f"layer {i + 1:>2}: residual norm {norms[-1]:.3f} (token norms {np.linalg.norm(hidden[0], axis=-1).min():.2f}"
              f"..{np.linalg.norm(hidden[0], axis=-1).max():.2f})")
        print("   head   " + "".join(f"{a:>9}" for a in range(A)))
        print("   entropy" + "".join(f"{e:>9.2f}" for e in entropy))
        print("   top    " + "".join(f"{pieces[k][:8]:>9}" for k in top))
        print("   weight " + "".join(f"{x:>9.2f}" for x in weight))
    return norms


# ---------------------------------------------------------------- 4. pooling
def pooling(model: minie5.Model, out: minie5.ForwardOutput, attention_mask: np.ndarray, text: str) -> np.ndarray:
    """Mean over the tokens, then L2 normalisation: [1, T, H] -> [1, H]."""
    c = model.config
    pooled = reference.POOLERS[c.pooling](out.last_hidden_state, attention_mask)  # [1, H]
    embedding = reference.l2_normalize(pooled) if c.normalize else pooled  # [1, H]
    heading(f"4. pooling: {c.pooling} over {int(attention_mask.sum())} tokens -> [1, {c.hidden_size}]"
            + (", L2-normalised" if c.normalize else ""))
    print(f"pooled vector: norm {np.linalg.norm(pooled):.4f}")
    print(f"embedding:     norm {np.linalg.norm(embedding):.4f}, first {TOP_VALUES} of {c.hidden_size}: "
          + " ".join(f"{v:+.4f}" for v in embedding[0, :TOP_VALUES]))
    direct = model.encode(text, backend="reference")  # the same text through the public API
    cosine = float(embedding[0] @ direct / (np.linalg.norm(embedding) * np.linalg.norm(direct)))
    print(f"model.encode(text) gives the same vector: cosine {cosine:.8f}")
    return embedding


# ---------------------------------------------------------------- plots
def plot_attention(out: minie5.ForwardOutput, pieces: list[str], head: int, directory: Path) -> list[Path]:
    """One heatmap per layer of head `head`'s probabilities: rows are queries, columns keys."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    size = max(4.0, 0.3 * len(pieces) + 2)
    for i, probs in enumerate(out.attentions):
        fig, ax = plt.subplots(figsize=(size, size))
        image = ax.imshow(probs[0, head], cmap="viridis", vmin=0.0, vmax=1.0)  # [T, T]: row = query, column = key
        ax.set_xticks(range(len(pieces)), pieces, rotation=90, fontsize=7)
        ax.set_yticks(range(len(pieces)), pieces, fontsize=7)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        ax.set_title(f"layer {i + 1}, head {head}: attention probabilities")
        fig.colorbar(image, ax=ax, fraction=0.046)
        fig.tight_layout()
        path = directory / f"attention_layer{i + 1:02d}_head{head:02d}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_residual_norms(norms: list[float], directory: Path) -> Path:
    """The mean token norm of the residual stream after the embeddings (0) and after each layer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(len(norms)), norms, marker="o")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("mean |hidden state| over tokens")
    ax.set_title("residual stream norm by layer")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = directory / "residual_norm.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- main
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("text", help='the text, with its prefix for e5 ("query: ..." or "passage: ...")')
    parser.add_argument("--model", default=None, metavar="ID_OR_DIR",
                        help="hub repo id or local model directory (default: $MINIE5_MODEL, else "
                             f"{minie5.DEFAULT_MODEL})")
    parser.add_argument("--plot", default=None, metavar="DIR", help="save PNG plots here (needs matplotlib)")
    parser.add_argument("--head", type=int, default=0, help="the head the attention heatmaps show (default: 0)")
    return parser, parser.parse_args(argv)


def walk(model: minie5.Model, text: str, plot: str | None = None, head: int = 0) -> None:
    """Print the four stages for one text (and save the plots in directory `plot`, if given)."""
    print(f"model: {model!r}")
    input_ids, attention_mask, pieces = tokenize(model, text)
    embedded = embeddings(model, input_ids, pieces)
    out = model.forward(input_ids, attention_mask, backend="reference",
                        output_hidden_states=True, output_attentions=True)  # reference.forward_with_intermediates
    assert np.array_equal(out.hidden_states[0], embedded)  # stage 2 is the first of the hidden states
    norms = layers(model, out, pieces)
    pooling(model, out, attention_mask, text)
    if plot:
        directory = Path(plot)
        directory.mkdir(parents=True, exist_ok=True)
        paths = plot_attention(out, pieces, head, directory) + [plot_residual_norms(norms, directory)]
        heading(f"plots: {len(paths)} PNG files in {directory}")
        for path in paths:
            print(path)


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    model = minie5.load(args.model or os.environ.get("MINIE5_MODEL") or minie5.DEFAULT_MODEL, backend="reference")
    if not 0 <= args.head < model.config.num_attention_heads:
        parser.error(f"--head must be in 0..{model.config.num_attention_heads - 1}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'minie5[plot]'")
    walk(model, args.text, args.plot, args.head)
    return 0


if __name__ == "__main__":
    sys.exit(main())
