"""scripts/time_blocks.py on a tiny batch: it runs the real fast path with timers, and its FLOP counts
are the hand-counted ones (docs/architecture.md quotes both)."""
from __future__ import annotations

import pytest

from helpers import load_script


def test_flops_per_token_by_hand(e5_model):
    flops = load_script("time_blocks.py").flops_per_token(e5_model.config, 128)
    H, F, L = 384, 1536, 12
    assert flops["Q, K, V projections"] + flops["attention output projection"] == L * 4 * 2 * H * H
    assert flops["FFN up (H -> F)"] + flops["FFN down (F -> H)"] == L * 2 * 2 * H * F
    matmuls = sum(v for k, v in flops.items() if not k.startswith("attention ("))
    assert matmuls == 42_467_328  # 42.5 M per token, whatever the length
    assert flops["attention (scores, softmax, mix)"] == 12 * 4 * 128 * 384  # 2.4 M at T = 128


@pytest.mark.slow
@pytest.mark.parametrize("tokens", [16, 40])
def test_time_blocks_runs(e5_dir, capsys, tokens):
    """2 x 16 tokens: the layer loop (one block, one call); 2 x 40 = 80 tokens: one block per kind of step."""
    script = load_script("time_blocks.py")
    result = script.main(["--model", str(e5_dir), "--batch", "2", "--tokens", str(tokens), "--repeats", "1"])
    out = capsys.readouterr().out
    best = result["best"]
    blocks = [b for b in best if b != "total (wall)"]
    if tokens == 16:
        assert script.LAYER_LOOP in blocks and "GELU" not in blocks
        assert result["calls"]["parallel starts"] == 1
    else:
        assert {"FFN up (H -> F)", "Q, K, V projections", "attention (scores, softmax, mix)", "GELU"} <= set(blocks)
        assert result["calls"]["parallel starts"] >= 4 * 12
    assert 0 < sum(best[b] for b in blocks) <= best["total (wall)"]
    assert f"FLOPs per token at T = {tokens}" in out
    assert result["calls"]["kernel calls"] > 0 and "outside the kernels" in out


@pytest.mark.slow
def test_plans_script_times_every_plan(e5_dir, capsys):
    """scripts/plans.py (docs/performance.md, the engine plan): one row per size, one column per plan."""
    results = load_script("plans.py").main(["--model", str(e5_dir), "--tokens", "12", "70", "--rounds", "1"])
    assert set(results) == {12, 70}
    for row in results.values():
        assert set(row) == {"layer loop", "loop, 1 thread", "serial + split", "parallel Numba", "sgemm"}
        assert all(0 < low <= median for median, low in row.values())
    assert "layer loop" in capsys.readouterr().out


def test_bandwidth_script_counts_the_linear_weights_by_hand(e5_model):
    """scripts/bandwidth.py: W1 reads the four linear weights of every layer once (84.9 MB in float32)."""
    bandwidth = load_script("bandwidth.py")
    assert bandwidth.linear_weight_bytes(e5_model.config, 4) == 12 * (4 * 384 * 384 + 2 * 384 * 1536) * 4
    assert bandwidth.linear_weight_bytes(e5_model.config, 1) == 21_233_664
    assert bandwidth.read_bandwidth(1 << 20, 2, 2) > 0
