"""scripts/ray_scale.py on a few hundred rows: the commands run, the driver's stage line is read, a stopped job
is resumed, and the tables print.

The real figures (0.5, 1 and 2 million rows, docs/scale-out.md) take most of
an hour on 2 cores; here 400 rows check the plumbing, not the numbers.
"""
from __future__ import annotations

import pytest

from helpers import load_script

pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_scale_runs_a_job_and_a_resumed_one(capsys):
    scale = load_script("ray_scale.py")
    figures = scale.main(["--rows", "400", "--ids", "doc", "--resume-rows", "400", "--rows-per-file", "50",
                          "--id-memory-rows", "8000"])
    printed = capsys.readouterr().out
    plain, resumed = figures["runs"]
    assert plain["rows"] == resumed["rows"] == 400 and not plain["resume"] and resumed["resume"]
    assert list(plain["stages"]) == list(scale.STAGES)
    assert all(s["seconds"] >= 0 and s["peak_rss_mib"] > 50 for s in plain["stages"].values())
    assert plain["stages"]["writing"]["seconds"] > 0 and plain["peak_rss_mib"] > 50
    # SIGINT once 4 of 8 files are written (at 400 rows the job may finish first), then --resume completes it
    assert 0 <= resumed["before"] <= 400
    assert [m["kind"] for m in figures["id_memory"]] == ["int", "string"]
    assert "| 400 | --id-field |" in printed and "(--resume, " in printed and "MiB per million ids" in printed
