"""scripts/ray_bench.py on a tiny corpus: the engines run, their vectors agree, and the tables print.

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
    """--scaling with one Ray configuration (2 actors x 1 thread) besides the single process at 1 thread and at
    every core: the engines run, the efficiency table and the cost table print."""
    bench = load_script("ray_bench.py")
    figures = bench.main(["--model", str(e5_dir), "--lines", "200", "--tokens", "0", "--rounds", "1", "--scaling",
                          "--configs", "2x1"])
    printed = capsys.readouterr().out
    single, ray = figures["rounds"][0]["single"], figures["rounds"][0]["ray-2x1"]
    assert single["seconds"] > 0 and 100 * 2**20 < single["peak_rss"] < 8 * 2**30
    assert figures["rounds"][0]["single-1t"]["texts_per_s"] > 0
    # 200 rows are one block of 256: one actor may embed them all (test_distributed checks that two share work)
    assert ray["written"] == 200 and 1 <= len(ray["actors"]) <= 2 and sum(a["rows"] for a in ray["actors"]) == 200
    assert all(a["threads"] == "1" and a["peak_rss_mib"] > 100 for a in ray["actors"])
    assert ray["max_diff_to_single"] < 1e-5  # the same vectors, to float rounding (docs/behaviour.md)
    assert abs(ray["ratio"] - ray["texts_per_s"] / single["texts_per_s"]) < 1e-12
    assert "| ray-2x1 | 2 |" in printed and "| single-1t | 1 |" in printed and "efficiency" in printed
    assert "core-hours" in printed and "| 10 x 16 |" in printed
