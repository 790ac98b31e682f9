"""scripts/ray_bench.py on a tiny corpus: both engines run, their vectors agree, and the tables print.

The real figures (20,000 passages of ~100 tokens, docs/scale-out.md) take an
hour; here 200 short lines check the plumbing (the two commands, the summary
parsing, the comparison by id, the cost table), not the numbers.
"""
from __future__ import annotations

import pytest

from helpers import load_script

pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_bench_runs_both_engines(e5_dir, capsys):
    bench = load_script("ray_bench.py")
    figures = bench.main(["--model", str(e5_dir), "--lines", "200", "--tokens", "0", "--rounds", "1"])
    printed = capsys.readouterr().out
    single, ray = figures["rounds"][0]["single"], figures["rounds"][0]["ray-1"]
    assert single["seconds"] > 0 and 100 * 2**20 < single["peak_rss"] < 8 * 2**30
    # 200 rows are one block of 256: one actor may embed them all (test_distributed checks that two share work)
    assert ray["written"] == 200 and 1 <= len(ray["actors"]) <= 2 and sum(a["rows"] for a in ray["actors"]) == 200
    assert all(a["threads"] == "1" and a["peak_rss_mib"] > 100 for a in ray["actors"])
    assert ray["max_diff_to_single"] < 1e-5  # the same vectors, to float rounding (docs/behaviour.md)
    assert abs(ray["ratio"] - ray["texts_per_s"] / single["texts_per_s"]) < 1e-12
    assert "| ray-1 |" in printed and "core-hours" in printed and "| 10 x 16 |" in printed
