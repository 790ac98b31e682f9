"""scripts/cli_bench.py on tiny corpora: it runs, and reports the figures the README quotes.

The real figures (10,000 and 100,000 lines, 3 x 20,000 for speed) take many
minutes; here the same code runs on 60, 240 and 2 x 120 lines, which checks the
plumbing (subprocesses, ru_maxrss, the .npy row count, the alternated
model.encode comparison), not the numbers.
"""
from __future__ import annotations

import pytest

from helpers import load_script


@pytest.mark.slow
def test_cli_bench_reports_rss_and_throughput(e5_dir, tmp_path, capsys):
    bench = load_script("cli_bench.py")
    figures = bench.main(["--model", str(e5_dir), "--lines", "240", "60", "--speed-lines", "120", "--rounds", "2",
                          "--json", str(tmp_path / "f.json")])
    printed = capsys.readouterr().out
    assert [run["lines"] for run in figures["cli"]] == [60, 240]  # smallest first
    speed = figures["speed"]
    assert speed["lines"] == 120 and len(speed["rounds"]) == 2 and speed["startup_seconds"] > 0
    runs = figures["cli"] + [r[kind] for r in speed["rounds"] for kind in ("cli", "encode")]
    for run in runs:
        assert run["seconds"] > 0 and run["cpu_seconds"] > 0
        assert 100 * 2**20 < run["peak_rss_bytes"] < 8 * 2**30  # a plausible process size, in bytes
    assert abs(figures["rss_ratio"] - figures["cli"][1]["peak_rss_bytes"] / figures["cli"][0]["peak_rss_bytes"]) < 1e-12
    round_overheads = sorted(r["cli"]["seconds"] / r["encode"]["seconds"] - 1 for r in speed["rounds"])
    assert abs(speed["overhead"] - sum(round_overheads) / 2) < 1e-12  # the median of two rounds
    assert "peak RSS, 240 lines / 60 lines" in printed and "overhead" in printed and "start-up" in printed
    assert (tmp_path / "f.json").is_file()


def test_short_lines_are_short_and_many():
    bench = load_script("cli_bench.py")
    lines = bench.short_lines(5000)
    assert len(lines) == 5000
    assert all(0 < len(line) <= bench.MAX_CHARS and "\n" not in line for line in lines)
