"""`minie5 embed -i big.txt -o big.npy --resume`: a stopped run's successor embeds only the rows left.

Runs the real command line in subprocesses on a tiny random model, stops it
with Ctrl-C (SIGINT) or SIGKILL once some rows are saved, and checks that the
resumed output equals, bit for bit, the output of a run that was never
stopped (the rows come in the same chunks of 4,096 either way).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_cli
from minie5.io.files import ResumableNpy
from tiny_models import numpy_weights, tiny_config, write_model_dir

ROWS = 20_000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    cfg = tiny_config(hidden=32, heads=4, layers=2, intermediate=64, vocab=200, max_positions=128)
    model = write_model_dir(root / "tiny", cfg, numpy_weights(cfg, seed=5))
    rng = np.random.default_rng(0)
    corpus = root / "big.txt"
    corpus.write_text("".join(" ".join(f"w{w}" for w in rng.integers(4, 200, size=rng.integers(1, 60))) + "\n"
                              for _ in range(ROWS)))
    return {"model": model, "corpus": corpus, "root": root}


@pytest.fixture(scope="module")
def whole(tiny):
    """The output of a run that was never stopped."""
    result = run_cli("embed", "-i", tiny["corpus"], "-o", tiny["root"] / "whole.npy", "--model", tiny["model"], "-q")
    assert result.returncode == 0, result.stderr
    return np.load(tiny["root"] / "whole.npy")


def start(tiny, output: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "minie5", "embed", "-i", str(tiny["corpus"]), "-o", str(output),
                             "--model", str(tiny["model"]), "-q", *extra], stderr=subprocess.PIPE, text=True)


def stop_once_rows_are_saved(process: subprocess.Popen, output: Path, sig: int) -> int:
    """Send sig once the run's record says some rows are saved; returns how many it said."""
    record = output.with_name(f".{output.name}.partial.json")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done = json.loads(record.read_text())["rows_done"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done:
            process.send_signal(sig)
            process.wait(timeout=60)
            return done
        time.sleep(0.02)
    pytest.fail(f"no rows saved before the run ended: {process.communicate()[1]}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_run_is_resumed(tiny, whole, tmp_path, sig):
    output = tmp_path / "big.npy"
    process = start(tiny, output)
    saved = stop_once_rows_are_saved(process, output, sig)
    stderr = process.stderr.read()
    assert not output.exists() and (tmp_path / ".big.npy.partial").exists()
    if sig == signal.SIGINT:  # Ctrl-C: the command says what it keeps
        assert process.returncode == 2 and ".big.npy.partial; the same command with --resume goes on" in stderr
    resumed = run_cli("embed", "-i", tiny["corpus"], "-o", output, "--model", tiny["model"], "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    done = int(resumed.stderr.split("resuming: ")[1].split()[0])
    assert done >= saved and done % 4096 == 0 and done < ROWS  # whole chunks, as recorded
    assert np.array_equal(np.load(output), whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npy"]  # the .partial files are gone


@pytest.mark.slow
def test_resume_refuses_another_job_and_a_run_without_it_starts_again(tiny, whole, tmp_path):
    output = tmp_path / "big.npy"
    process = start(tiny, output)
    stop_once_rows_are_saved(process, output, signal.SIGKILL)
    other_model = tmp_path / "other"
    cfg = tiny_config(hidden=32, heads=4, layers=2, intermediate=64, vocab=200, max_positions=128)
    write_model_dir(other_model, cfg, numpy_weights(cfg, seed=6))
    refused = run_cli("embed", "-i", tiny["corpus"], "-o", output, "--model", other_model, "--resume")
    assert "--resume: " in refused.error_line() and "was written by another job (--model: '" in refused.error_line()
    refused = run_cli("embed", "-i", tiny["corpus"], "-o", output, "--model", tiny["model"], "--resume",
                      "--prefix", "query")
    assert "--prefix: 'none' then, 'query' now" in refused.error_line()
    refused = run_cli("embed", "-i", tiny["corpus"], "-o", output, "--model", tiny["model"], "--resume",
                      "--quantize", "int8")  # float32 rows and int8 rows never mix in one output
    assert "(--quantize: None then, 'int8' now)" in refused.error_line(), refused.stderr
    again = run_cli("embed", "-i", tiny["corpus"], "-o", output, "--model", tiny["model"])
    assert again.returncode == 0 and "of an earlier run: starting again (--resume continues it instead)" in again.stderr
    assert np.array_equal(np.load(output), whole)


def test_one_writer_at_a_time(tiny, tmp_path):
    output = tmp_path / "big.npy"
    with ResumableNpy(output, ROWS, 32, {"input": "x"}):  # another process holds the lock
        result = run_cli("embed", "-i", tiny["corpus"], "-o", output, "--model", tiny["model"])
    assert "another minie5 process is writing" in result.error_line()


def test_resume_with_nothing_saved_embeds_everything(tiny, whole, tmp_path):
    output = tmp_path / "big.npy"
    result = run_cli("embed", "-i", tiny["corpus"], "-o", output, "--model", tiny["model"], "--resume", "-q")
    assert result.returncode == 0 and "nothing to resume" in result.stderr and f"all {ROWS} texts" in result.stderr
    assert np.array_equal(np.load(output), whole)


@pytest.mark.parametrize("args, message", [
    (["-i", "IN", "-o", "out.jsonl", "--resume"], "--resume continues -i FILE -o FILE.npy"),
    (["-o", "out.npy", "--resume", "some text"], "--resume continues -i FILE -o FILE.npy"),
    (["-i", "IN", "-o", "out.npy", "--id-field", "doc"], "--id-field works with --ray only"),
    (["-i", "IN", "-o", "out.npy", "--actors", "2"], "--actors works with --ray only"),
    (["--ray", "local", "-i", "IN"], "--ray writes to -o OUTDIR"),
    (["--ray", "local", "-o", "out", "a text"], "--ray reads -i INPUT"),
])
def test_usage_errors(tiny, tmp_path, args, message):
    args = [str(tiny["corpus"]) if a == "IN" else a for a in args]
    result = run_cli("embed", *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_partial_files_of_killed_runs_do_not_leak_into_other_outputs(tiny, tmp_path):
    """A run that fails before writing a row leaves nothing behind (as before --resume existed)."""
    result = run_cli("embed", "-i", tiny["corpus"], "-o", tmp_path / "x.npy", "--model", tiny["model"],
                     "--max-length", "100000")
    assert result.returncode == 2 and os.listdir(tmp_path) == []
