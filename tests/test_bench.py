"""scripts/bench.py: the --quick smoke run works end to end, and its FLOP model is right."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minie5.checkpoint.config import read_config
from helpers import blas_kernel, load_script

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "scripts" / "bench.py"


def forced_kernel() -> str:
    """The kernel the child's OPENBLAS_CORETYPE names: Haswell (as some machines set it) where the CPU has
    AVX2, else the one OpenBLAS picks here anyway (setting it is what the bench warns about)."""
    if load_script("invariance.py").has_avx2():
        return "Haswell"
    kernel = blas_kernel().split(", ")[0]  # "openblas Nehalem"
    if not kernel.startswith("openblas "):
        pytest.skip(f"numpy's BLAS is {kernel}, not OpenBLAS")
    return kernel.removeprefix("openblas ")


@pytest.mark.slow
def test_quick_run_prints_tables_and_warns_of_a_forced_kernel(e5_dir, tmp_path):
    """The --quick smoke run end to end, with OPENBLAS_CORETYPE set in the child's environment (never
    this process's): header and JSON say which kernel ran and warn that it was forced."""
    out = tmp_path / "bench.json"
    kernel = forced_kernel()
    env = dict(os.environ, OPENBLAS_CORETYPE=kernel)
    # Left out for time: minie5-numba and minie5-blas (the fast engine under other plans; test_api compares them),
    # minie5-ref (the same engine class with the reference forward; test_parity) and ort (ort-int8's engine class
    # on the float32 file)
    engines = "minie5-fast,torch,minie5-int8,ort-int8"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--model", str(e5_dir), "--json", str(out),
                           "--engines", engines],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| engine | W1" in proc.stdout
    assert "| speed ratio |" in proc.stdout
    assert "sgemm peak" in proc.stdout
    header = proc.stdout.split("| engine | W1")[0]
    assert f"BLAS kernel: openblas {kernel}" in header
    warning = next(line for line in header.splitlines() if line.startswith("WARNING: "))
    assert f"OPENBLAS_CORETYPE={kernel}" in warning and "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE" in warning
    raw = json.loads(out.read_text())
    assert raw["warnings"] == [warning.removeprefix("WARNING: ")]
    assert raw["environment"]["blas_kernel"] == f"openblas {kernel}"
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


def test_kernel_warning_only_when_the_kernel_is_forced():
    bench = load_script("bench.py")
    unset = {name: None for name in bench.BLAS_ENV}
    assert bench.kernel_warnings(unset, "openblas SkylakeX") == []
    assert bench.kernel_warnings({**unset, "OPENBLAS_CORETYPE": ""}, "openblas SkylakeX") == []
    [warning] = bench.kernel_warnings({**unset, "OPENBLAS_L2_SIZE": "1048576", "OPENBLAS_CORETYPE": "Haswell"},
                                      "openblas Haswell")
    assert "OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE=1048576" in warning and bench.RECOMMENDED in warning
    assert bench.blas_kernel([{"user_api": "blas", "internal_api": "openblas", "architecture": "SkylakeX"},
                              {"user_api": "openmp", "internal_api": "openmp", "architecture": None}]) \
        == "openblas SkylakeX"


def test_help_gives_the_recommended_command(capsys):
    bench = load_script("bench.py")
    with pytest.raises(SystemExit):
        bench.parse_args(["--help"])
    assert "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python scripts/bench.py --model DIR" in capsys.readouterr().out


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
