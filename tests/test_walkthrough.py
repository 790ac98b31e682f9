"""scripts/walkthrough.py: one text through the model, printed stage by stage (and plotted).

The script runs in process (its main()) on the e5 fixture; the figures it
prints are checked against the tokenizer, against the model's own outputs
recomputed here, and its two small statistics against hand computations.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from helpers import load_script

TEXT = "query: how much protein should a female eat"


def test_entropy_and_most_attended_by_hand():
    walkthrough = load_script("walkthrough.py")
    uniform = np.full((1, 4, 4), 0.25, np.float32)
    one_hot = np.zeros((1, 4, 4), np.float32)
    one_hot[0, :, 2] = 1.0
    probs = np.concatenate([uniform, one_hot])  # [A=2, T=4, T=4]
    np.testing.assert_allclose(walkthrough.attention_entropy(probs), [math.log(4), 0.0], atol=1e-7)
    top, weight = walkthrough.most_attended(probs)
    assert top[1] == 2 and weight[1] == 1.0 and weight[0] == pytest.approx(0.25)


@pytest.mark.slow
def test_walkthrough_prints_every_stage(e5_model, capsys):
    load_script("walkthrough.py").walk(e5_model, TEXT)  # what main() runs once it has loaded the model
    out = capsys.readouterr().out
    pieces = e5_model.tokenizer.tokens(TEXT)
    ids = e5_model.tokenizer.encode([TEXT])[0][0]
    for title in ("1. tokenizer", "2. embeddings", "3. layers", "4. pooling"):
        assert f"== {title}" in out
    token_rows = re.findall(r"^\s+(\d+)  (\S+)\s+(\d+)$", out, flags=re.M)  # t, piece, id
    assert [(p, int(i)) for _, p, i in token_rows] == list(zip(pieces, ids))
    assert len(re.findall(r"^layer +\d+: residual norm", out, flags=re.M)) == 12
    assert len(re.findall(r"^   entropy(?: +\d+\.\d\d){12}$", out, flags=re.M)) == 12  # 12 heads per layer
    # the last layer's residual norm, recomputed from the model's last hidden state
    ids_array, mask = e5_model.tokenizer.pad([ids])
    last = e5_model.forward(ids_array, mask, backend="reference")
    expected = np.linalg.norm(last[0], axis=-1).mean()
    assert f"layer 12: residual norm {expected:.3f}" in out
    assert "embedding:     norm 1.0000" in out
    cosine = float(re.search(r"cosine (\S+)", out)[1])
    assert cosine == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_walkthrough_plots(e5_model, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    load_script("walkthrough.py").walk(e5_model, TEXT, plot=str(tmp_path), head=5)
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [f"attention_layer{i:02d}_head05.png" for i in range(1, 13)] + ["residual_norm.png"]
    for name in pngs:
        data = (tmp_path / name).read_bytes()
        assert len(data) > 1000 and data.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.slow
def test_walkthrough_command_line(e5_dir, capsys):
    script = load_script("walkthrough.py")
    with pytest.raises(SystemExit):
        script.main([TEXT, "--model", str(e5_dir), "--head", "12"])
    assert "--head must be in 0..11" in capsys.readouterr().err
    assert script.main(["ok", "--model", str(e5_dir)]) == 0
    assert "== 4. pooling: mean over 3 tokens" in capsys.readouterr().out  # <s> ▁ok </s>
