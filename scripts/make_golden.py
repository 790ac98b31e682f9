"""Write tests/data/golden_tiny.npz: transformers' outputs for a tiny seeded BERT.

    python scripts/make_golden.py [output.npz]

The model's weights come from numpy with a fixed seed (tests/tiny_models.py,
numpy_weights), not from torch, so tests/test_golden.py can rebuild the exact
same model without torch and compare minie5 with the outputs stored here.

Needs torch + transformers (only to run this script). The npz holds:
    config_json          the model's config.json (str)
    seed                 the numpy seed of the weights
    weights_sha256       digest of the regenerated weights (detects RNG drift)
    texts                the input texts ("w5 w17 ..." words of the tiny vocabulary)
    input_ids            [batch, seq] int32, right-padded with <pad> = 0
    attention_mask       [batch, seq] int8
    last_hidden_state    [batch, seq, hidden] float32 from transformers.BertModel (padding rows zeroed)
    embeddings           [batch, hidden] float32, masked mean pooling + L2 normalisation
    transformers_version, torch_version (str)
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from tiny_models import (PAD_ID, numpy_weights, tiny_config, weights_digest,  # noqa: E402
                         write_model_dir)

SEED = 20240611
CONFIG = tiny_config(hidden=36, heads=3, layers=2, intermediate=52, vocab=97, max_positions=32)
TOKENIZER_SIZE = 97
# Varied lengths (1 word .. past max_positions, which truncates to 32 tokens),
# repeated words, all-<unk> words, the empty text.
TEXTS = [
    "w5",
    "w4 w96 w50 w7 w7 w7 w13",
    "",
    "w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20 w21 w22 w23 w24 w25 w26 w27",
    "w42 unknown w43 w99999",
    " ".join(f"w{4 + (7 * i) % 93}" for i in range(40)),
]


def main(out: Path) -> None:
    import tokenizers
    import torch
    import transformers
    from transformers import BertModel

    weights = numpy_weights(CONFIG, SEED)
    with tempfile.TemporaryDirectory() as tmp:
        write_model_dir(tmp, CONFIG, weights, tokenizer_size=TOKENIZER_SIZE)
        tok = tokenizers.Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
        tok.enable_truncation(CONFIG["max_position_embeddings"])
        ids = [e.ids for e in tok.encode_batch(TEXTS)]
        model, info = BertModel.from_pretrained(tmp, output_loading_info=True, attn_implementation="eager")
        model.eval()
    unexpected_missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    if unexpected_missing or info["unexpected_keys"] or info["mismatched_keys"]:
        raise SystemExit(f"transformers did not load every weight: {info}")

    seq = max(len(x) for x in ids)
    input_ids = np.full((len(ids), seq), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(ids), seq), dtype=np.int64)
    for row, x in enumerate(ids):
        input_ids[row, :len(x)] = x
        mask[row, :len(x)] = 1
    with torch.no_grad():
        t_mask = torch.from_numpy(mask)
        hidden = model(input_ids=torch.from_numpy(input_ids), attention_mask=t_mask,
                       token_type_ids=torch.zeros_like(t_mask)).last_hidden_state
        m = t_mask[:, :, None].to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        emb = torch.nn.functional.normalize(pooled, p=2, dim=-1)
    hidden = hidden.numpy().astype(np.float32)
    hidden[mask == 0] = 0.0  # padding positions are not meaningful: store zeros (compresses)

    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        config_json=np.array(json.dumps(CONFIG, sort_keys=True)),
        seed=np.array(SEED, dtype=np.int64),
        tokenizer_size=np.array(TOKENIZER_SIZE, dtype=np.int64),
        weights_sha256=np.array(weights_digest(weights)),
        texts=np.array(TEXTS),
        input_ids=input_ids.astype(np.int32),
        attention_mask=mask.astype(np.int8),
        last_hidden_state=hidden,
        embeddings=emb.numpy().astype(np.float32),
        transformers_version=np.array(transformers.__version__),
        torch_version=np.array(torch.__version__),
    )
    print(f"wrote {out} ({out.stat().st_size} bytes): {len(TEXTS)} texts, seq {seq}, "
          f"hidden {CONFIG['hidden_size']}, transformers {transformers.__version__}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "data" / "golden_tiny.npz")
