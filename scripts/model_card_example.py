"""The usage example of the intfloat/multilingual-e5-small model card, with minie5.

    python scripts/model_card_example.py                   # the hub model
    python scripts/model_card_example.py ./e5-small-dir    # a local copy

The model card embeds two queries and two passages and prints the similarity
of each query to each passage, times 100. Each query should score highest
with its own passage (the diagonal dominates the 2 x 2 matrix); the exact
values depend on the weights.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import minie5

# Copied verbatim from the model card: each input text starts with "query: " or "passage: ".
INPUT_TEXTS = [
    'query: how much protein should a female eat',
    'query: 南瓜的家常做法',
    "passage: As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams "
    "per day. But, as you can see from this chart, you'll need to increase that if you're expecting or training for "
    "a marathon. Check out the chart below to see how much protein you should be eating each day.",
    'passage: 1.清炒南瓜丝 原料:嫩南瓜半个 调料:葱、盐、白糖、鸡精 做法: 1、南瓜用刀薄薄的削去表面一层皮,用勺子刮去瓤 '
    '2、擦成细丝(没有擦菜板就用刀慢慢切成细丝) 3、锅烧热放油,入葱花煸出香味 4、入南瓜丝快速翻炒一分钟左右,放盐、一点白糖和鸡精调味出锅 '
    '2.香葱拌南瓜丝 原料:嫩南瓜半个 调料:葱、盐、白糖、鸡精 做法: 1、南瓜用刀薄薄的削去表面一层皮,用勺子刮去瓤 '
    '2、擦成细丝(没有擦菜板就用刀慢慢切成细丝) 3、锅烧热放油,入葱花煸出香味 4、入南瓜丝快速翻炒一分钟左右,放盐、一点白糖和鸡精调味出锅',
]


def similarity_scores(model: minie5.Model) -> np.ndarray:
    """[2, 2] scores: query i (rows) against passage j (columns), cosine x 100."""
    embeddings = model.encode(INPUT_TEXTS)  # [4, 384], L2-normalised
    return (embeddings[:2] @ embeddings[2:].T) * 100


def main(argv: list[str] | None = None) -> np.ndarray:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=minie5.DEFAULT_MODEL,
                        help=f"hub repo id or local model directory (default: {minie5.DEFAULT_MODEL})")
    parser.add_argument("--backend", choices=("fast", "reference"), default="fast",
                        help="minie5 backend (default: fast)")
    args = parser.parse_args(argv)
    model = minie5.load(args.model, backend=args.backend)
    scores = similarity_scores(model)
    print(np.round(scores.astype(np.float64), 2).tolist())
    return scores


if __name__ == "__main__":
    try:
        main()
    except minie5.Minie5Error as e:
        sys.exit(f"model_card_example.py: error: {e}")
