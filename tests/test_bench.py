"""scripts/bench.py: the --quick smoke run works end to end, and its FLOP model is right."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from minie5.config import read_config
from helpers import load_script

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "scripts" / "bench.py"


def test_quick_run_prints_tables(e5_dir, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--model", str(e5_dir), "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| engine | W1" in proc.stdout
    assert "| speed ratio |" in proc.stdout
    assert "sgemm peak" in proc.stdout
    raw = json.loads(out.read_text())
    assert set(raw["workloads"]) == {"W1", "W2", "W3", "W4", "W5"}
    fast = raw["stats"]["minie5-fast"]
    assert set(fast) == {"W1", "W2", "W3", "W4", "W5"}
    assert all(s["median"] > 0 for s in fast.values())
    assert raw["probes"]["minie5-fast"]["cold_start_s"] > 0
    assert raw["probes"]["minie5-fast"]["peak_rss_mb"] > 0
    # every engine that ran agrees with the baseline engine's embeddings (the int8 engines to their rounding:
    # tests/test_int8_quality.py measures minie5's)
    assert all(d < (5e-2 if name.endswith("int8") else 1e-3)
               for name, d in raw["agreement"]["max_abs_diff"].items()), raw["agreement"]
    assert raw["stats"]["minie5-int8"]["W1"]["median"] > 0


def test_flop_model_and_workloads(e5_dir):
    bench = load_script("bench.py")
    config = read_config(e5_dir)
    assert abs(bench.linear_flops_per_token(config) / 1e6 - 42.5) < 0.1  # MFLOP per token, linear layers
    one = bench.Workload("x", "", "throughput", [[[0] * 128]])
    H, L = config.hidden_size, config.num_hidden_layers
    assert bench.model_flops(config, one) == 128 * (bench.linear_flops_per_token(config) + L * 4 * 128 * H)

    from minie5.tokenizer import Tokenizer
    workloads = bench.build_workloads(Tokenizer(e5_dir, max_length=512), bench.QUICK_SIZES)
    by_name = {w.name: w for w in workloads}
    assert [len(t) for t in by_name["W1"].texts] == [12]
    assert [len(t) for t in by_name["W2"].texts] == [128]
    assert all(t[0] == 0 and t[-1] == 2 for w in workloads for t in w.texts)  # <s> ... </s>
    lengths = [len(t) for t in by_name["W5"].texts]
    assert lengths == sorted(lengths) and 8 <= min(lengths) and max(lengths) <= 512
    again = bench.build_workloads(Tokenizer(e5_dir, max_length=512), bench.QUICK_SIZES)
    assert [w.batches for w in again] == [w.batches for w in workloads]  # fixed seed
