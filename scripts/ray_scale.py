"""`minie5 embed --ray local` at 0.5, 1 and 2 million rows with a tiny random model: the driver's time and memory
per stage, so that work growing faster than the rows shows.

    python scripts/ray_scale.py                                   # 0.5 M, 1 M, 2 M rows, with and without ids
    python scripts/ray_scale.py --rows 500000 2000000 --json figures.json
    python scripts/ray_scale.py --id-memory                       # the driver's memory per million ids only

The model is a random BERT of hidden size 8 and one layer over a vocabulary
of 64 words (tests/tiny_models.py), and each row a JSON line of three or four
of its words: embedding costs little, so the driver's bookkeeping is not
hidden behind it. Input: JSON Lines files of 100,000 rows, {"doc": "doc-N",
"text": ...}. For each size the script runs, in fresh processes,

    minie5 embed --ray local -i DIR -o OUTDIR --model TINY --rows-per-file 10000               (ids: row numbers)
    minie5 embed --ray local -i DIR -o OUTDIR --model TINY --rows-per-file 10000 --id-field doc (string ids)

and once, at --resume-rows, the second command stopped (SIGINT, as Ctrl-C)
once about half of the output files are written, then run again with
--resume. From each command it reads the driver's closing line (wall time and
peak RSS at the end of each stage: scan, id checks, rows already done,
writing, de-duplication, summary; minie5/distributed/ray_command.py), with
the CPU time of the driver's main thread beside each wall time, and measures
the whole command's wall time and peak RSS (os.wait4). The table gives each
stage's seconds per million rows and, per stage, the ratio of the largest
size's time per row to the smallest's (target: at most 1.3), of wall time and
of CPU time: on a shared machine the wall time of a stage of a second also
measures the other work running then, the CPU time the stage's own work.

--id-memory measures, in a fresh process per id type, what the driver's id
bookkeeping holds per million ids: the ids as the scans return them, the
input's ids checked for duplicates (collect_ids), and a pass over an OUTDIR
holding every id (written_rows and the done mask); peak RSS over the
process's baseline, divided by the millions of ids.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tiny_models.py
STAGES = ("scan", "id checks", "rows already done", "writing", "de-duplication", "summary")
STAGE_LINE = re.compile(r"minie5: driver: (.*)$", re.MULTILINE)
STAGE_ITEM = re.compile(r"([a-z -]+?) ([\d.]+) s \(cpu ([\d.]+) s, gc ([\d.]+) s, peak RSS (\d+) MiB\)")
ROWS_PER_FILE_IN = 100_000  # rows per input file
ROWS_PER_FILE_OUT = 10_000  # --rows-per-file (the script's --rows-per-file)
TARGET = 1.3
VOCAB = 64


# ---------------------------------------------------------------- inputs
def write_tiny_model(path: Path) -> Path:
    from tiny_models import numpy_weights, tiny_config, write_model_dir
    config = tiny_config(hidden=8, heads=2, layers=1, intermediate=16, vocab=VOCAB, max_positions=32)
    return write_model_dir(path, config, numpy_weights(config, seed=25))


def write_corpus(directory: Path, rows: int, seed: int = 0) -> Path:
    """JSON Lines files of ROWS_PER_FILE_IN rows: {"doc": "doc-N", "text": three or four words}."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    words = rng.integers(4, VOCAB, size=(rows, 4))
    lengths = rng.integers(3, 5, size=rows)
    for start in range(0, rows, ROWS_PER_FILE_IN):
        stop = min(start + ROWS_PER_FILE_IN, rows)
        lines = [f'{{"doc": "doc-{i}", "text": "{" ".join(f"w{w}" for w in words[i, :lengths[i]])}"}}\n'
                 for i in range(start, stop)]
        (directory / f"part-{start // ROWS_PER_FILE_IN:05d}.jsonl").write_text("".join(lines), encoding="utf-8")
    return directory


# ---------------------------------------------------------------- running the command
def parse_stages(stderr: str) -> dict:
    """The driver's closing line -> {stage: {"seconds", "cpu_seconds", "gc_seconds", "peak_rss_mib"}}."""
    match = STAGE_LINE.search(stderr)
    if match is None:
        raise RuntimeError(f"no 'minie5: driver:' line in the command's output:\n{stderr[-3000:]}")
    stages = {name.strip(): {"seconds": float(seconds), "cpu_seconds": float(cpu), "gc_seconds": float(gc_seconds),
                             "peak_rss_mib": int(rss)}
              for name, seconds, cpu, gc_seconds, rss in STAGE_ITEM.findall(match.group(1))}
    assert list(stages) == list(STAGES), stages
    return stages


def reaped(child) -> tuple | None:
    """os.wait4 of a child that has ended, None while it runs."""
    pid, status, usage = os.wait4(child.pid, os.WNOHANG)
    return (pid, status, usage) if pid else None


def run_command(command: list[str], env: dict, stop_at_files: int | None = None, outdir: Path | None = None) -> dict:
    """Run the command; its wall time, peak RSS (os.wait4) and stderr. stop_at_files: send SIGINT once OUTDIR
    holds that many Parquet files."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        # SIGINT as Ctrl-C sends it: a process started in the background of a shell ignores SIGINT, and its
        # children inherit that (then the stop would be ignored and the job run to its end)
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        ended = None  # (pid, status, usage) once reaped: os.wait4, not poll(), so that the usage is kept
        if stop_at_files is not None:
            while len(list(outdir.glob("*.parquet"))) < stop_at_files and not (ended := reaped(child)):
                time.sleep(0.2)
            if not ended:
                child.send_signal(signal.SIGINT)
                deadline = time.monotonic() + 120
                while not (ended := reaped(child)) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if not ended:
                    child.kill()
        _, status, usage = ended or os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        err.seek(0)
        stderr = err.read().decode("utf-8", errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if stop_at_files is None and code != 0:
        raise RuntimeError(f"failed ({code}): {' '.join(command)}\n{stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "stderr": stderr, "code": code}


def check_output(outdir: Path, rows: int) -> None:
    """Every id once: the command says so (and exits 0), and the files hold rows rows."""
    import pyarrow.parquet as pq
    written = sum(pq.ParquetFile(p).metadata.num_rows for p in outdir.glob("*.parquet"))
    assert written == rows, (written, rows)


def scale_runs(args, work: Path, model: Path, env: dict) -> list[dict]:
    runs = []
    for rows in args.rows:
        inputs = write_corpus(work / f"in-{rows}", rows)
        for ids in args.ids:
            out = work / f"out-{rows}-{ids}"
            command = [sys.executable, "-m", "minie5", "embed", "--ray", "local", "-i", str(inputs), "-o", str(out),
                       "--model", str(model), "--rows-per-file", str(args.rows_per_file), "-q"]
            if ids == "doc":
                command += ["--id-field", "doc"]
            result = run_command(command, env)
            check_output(out, rows)
            runs.append({"rows": rows, "ids": ids, "resume": False, "seconds": result["seconds"],
                         "peak_rss_mib": result["peak_rss_mib"], "stages": parse_stages(result["stderr"])})
            print(f"{rows:>9,} rows, ids {ids:6s}: {result['seconds']:6.1f} s, driver peak RSS "
                  f"{result['peak_rss_mib']:.0f} MiB; " + ", ".join(
                      f"{name} {s['seconds']:.2f} s (gc {s['gc_seconds']:.2f} s)"
                      for name, s in runs[-1]["stages"].items()), flush=True)
            shutil.rmtree(out)
        if args.resume_rows != rows:
            shutil.rmtree(inputs)
    return runs


def resume_run(args, work: Path, model: Path, env: dict) -> dict:
    """The --id-field job stopped (SIGINT) about halfway, then resumed."""
    rows = args.resume_rows
    inputs = work / f"in-{rows}"
    if not inputs.exists():
        write_corpus(inputs, rows)
    out = work / f"out-{rows}-resume"
    command = [sys.executable, "-m", "minie5", "embed", "--ray", "local", "-i", str(inputs), "-o", str(out),
               "--model", str(model), "--rows-per-file", str(args.rows_per_file), "--id-field", "doc", "-q"]
    stopped = run_command(command, env, stop_at_files=max(1, rows // args.rows_per_file // 2), outdir=out)
    if stopped["code"] == 0:
        print(f"{rows:>9,} rows: warning: the job ended before it was stopped; the resume has nothing to do",
              flush=True)
    resumed = run_command(command + ["--resume"], env)
    check_output(out, rows)
    before = int(re.search(r"\((?:of )?\d+; (\d+) were already in", resumed["stderr"]).group(1))
    print(f"{rows:>9,} rows, resumed after a stop at {before:,} rows written (exit {stopped['code']}): "
          f"{resumed['seconds']:.1f} s", flush=True)
    shutil.rmtree(out)
    return {"rows": rows, "ids": "doc", "resume": True, "before": before, "seconds": resumed["seconds"],
            "peak_rss_mib": resumed["peak_rss_mib"], "stages": parse_stages(resumed["stderr"])}


# ---------------------------------------------------------------- tables
def table(runs: list[dict]) -> list[str]:
    lines = ["seconds per million rows, wall / CPU of the driver's main thread, per stage", "",
             "| rows | ids | " + " | ".join(STAGES) + " | whole command | driver peak RSS |",
             "|---|---|" + "---|" * (len(STAGES) + 2)]
    for run in runs:
        millions = run["rows"] / 1e6
        cells = [f"{s['seconds'] / millions:.2f} / {s['cpu_seconds'] / millions:.2f}" for s in run["stages"].values()]
        label = f"{run['rows']:,}" + (f" (--resume, {run['before']:,} done)" if run["resume"] else "")
        lines.append(f"| {label} | {'--id-field' if run['ids'] == 'doc' else 'row numbers'} | " + " | ".join(cells)
                     + f" | {run['seconds']:.1f} s | {run['stages']['summary']['peak_rss_mib']} MiB |")
    return lines


def ratios(runs: list[dict], clock: str = "seconds") -> dict:
    """Per id mode and stage: time per row at the largest size over time per row at the smallest (clock:
    "seconds", wall time, or "cpu_seconds"). A stage under 10 ms at both sizes counts as 1 (too short to
    time; a ratio of two timer readings near 0 says nothing)."""
    result = {}
    for ids in sorted({run["ids"] for run in runs}):
        plain = sorted((run for run in runs if run["ids"] == ids and not run["resume"]), key=lambda r: r["rows"])
        if len(plain) < 2:
            continue
        small, large = plain[0], plain[-1]
        result[ids] = {}
        for stage in STAGES:
            a, b = small["stages"][stage][clock], large["stages"][stage][clock]
            result[ids][stage] = 1.0 if max(a, b) < 0.01 else (b / large["rows"]) / max(a / small["rows"], 1e-9)
    return result


# ---------------------------------------------------------------- driver memory per million ids
def id_memory_child(kind: str, rows: int, outdir: str) -> dict:
    """In a fresh process: the peak RSS the driver's id bookkeeping adds for `rows` ids of one kind."""
    import pyarrow as pa
    from minie5.distributed import ray_command as rc
    from minie5.distributed import shards as sh
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_shard = ROWS_PER_FILE_IN
    values = (lambda a, b: pa.array(np.arange(a, b, dtype=np.int64) + 10**12)) if kind == "int" else (
        lambda a, b: pa.array([f"doc-{i}" for i in range(a, b)]))
    scans = [sh.ShardScan(rows=min(per_shard, rows - a), ids=values(a, min(a + per_shard, rows)))
             for a in range(0, rows, per_shard)]
    shards = [sh.Shard(f"part-{n}", 0, 1, first_row=a, rows=s.rows) for n, (a, s) in
              enumerate(zip(range(0, rows, per_shard), scans))]
    after_scan = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    input_ids = rc.collect_ids(shards, scans, sh.ReadSpec("jsonl", "text", "doc"))
    del scans
    done = rc.done_rows(rc.OutputDir(outdir), input_ids, rows, quiet=True)
    assert done.all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kind": kind, "rows": rows, "scan_mib": (after_scan - baseline) / 1024,
            "peak_mib": (peak - baseline) / 1024, "mib_per_million": (peak - baseline) / 1024 / (rows / 1e6)}


def id_memory(work: Path, rows: int, env: dict) -> list[dict]:
    """Per id type: the bookkeeping's peak at rows / 4 and at rows ids; the slope between them is the memory
    per million ids (the fixed part, such as pyarrow's first allocations, cancels out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    results = []
    for kind in ("int", "string"):
        peaks = {}
        for size in (rows // 4, rows):
            outdir = work / f"ids-{kind}-{size}"
            outdir.mkdir()
            for start in range(0, size, ROWS_PER_FILE_OUT):  # OUTDIR as a finished job leaves it (ids only)
                stop = min(start + ROWS_PER_FILE_OUT, size)
                ids = pa.array(np.arange(start, stop, dtype=np.int64) + 10**12) if kind == "int" else pa.array(
                    [f"doc-{i}" for i in range(start, stop)])
                pq.write_table(pa.table({"id": ids}), outdir / f"part-{start // ROWS_PER_FILE_OUT:05d}.parquet")
            out = subprocess.run([sys.executable, __file__, "--id-memory-child", kind, str(size), str(outdir)],
                                 capture_output=True, text=True, env=env, check=True).stdout
            peaks[size] = json.loads(out.splitlines()[-1])
            shutil.rmtree(outdir)
        small, large = peaks[rows // 4], peaks[rows]
        per_million = (large["peak_mib"] - small["peak_mib"]) / ((rows - rows // 4) / 1e6)
        results.append({"kind": kind, "rows": rows, "peak_mib": large["peak_mib"], "mib_per_million": per_million,
                        "scan_mib_per_million": (large["scan_mib"] - small["scan_mib"]) / ((rows - rows // 4) / 1e6)})
        print(f"{kind} ids: {per_million:.0f} MiB per million ids ({rows // 4:,} ids: {small['peak_mib']:.0f} MiB "
              f"over the baseline, {rows:,} ids: {large['peak_mib']:.0f} MiB; of the slope "
              f"{results[-1]['scan_mib_per_million']:.0f} MiB is the scans' ids)", flush=True)
    return results


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[500_000, 1_000_000, 2_000_000])
    parser.add_argument("--ids", nargs="+", choices=("rows", "doc"), default=["rows", "doc"],
                        help="rows: the row numbers are the ids; doc: --id-field doc (string ids)")
    parser.add_argument("--resume-rows", type=int, default=1_000_000, help="size of the stopped-and-resumed job "
                                                                           "(0: none)")
    parser.add_argument("--rows-per-file", type=int, default=ROWS_PER_FILE_OUT, help="--rows-per-file of the jobs")
    parser.add_argument("--id-memory", action="store_true", help="only measure the driver's memory per million ids")
    parser.add_argument("--id-memory-rows", type=int, default=2_000_000, help="ids of --id-memory's largest size "
                        "(0: not measured)")
    parser.add_argument("--id-memory-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.id_memory_child:
        kind, rows, outdir = args.id_memory_child
        print(json.dumps(id_memory_child(kind, int(rows), outdir)))
        return {}

    work = Path(tempfile.mkdtemp(prefix="rayscale-", dir="/tmp"))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(work / "ray")}
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), Python {platform.python_version()}", flush=True)
    figures = {}
    try:
        if args.id_memory_rows:
            figures["id_memory"] = id_memory(work, args.id_memory_rows, env)
        if not args.id_memory:
            model = write_tiny_model(work / "tiny")
            runs = scale_runs(args, work, model, env)
            if args.resume_rows:
                runs.append(resume_run(args, work, model, env))
            figures.update(runs=runs, ratios=ratios(runs), cpu_ratios=ratios(runs, "cpu_seconds"))
            print()
            print("\n".join(table(runs)))
            print()
            for clock, key in (("wall", "ratios"), ("CPU", "cpu_ratios")):
                for ids, by_stage in figures[key].items():
                    worst = max(by_stage.values())
                    print(f"{clock}, {'--id-field' if ids == 'doc' else 'row numbers'}: time per row at "
                          f"{max(args.rows):,} rows over {min(args.rows):,}, per stage: " + ", ".join(
                              f"{stage} {ratio:.2f}" for stage, ratio in by_stage.items())
                          + f" (worst {worst:.2f}; target <= {TARGET}: {'met' if worst <= TARGET else 'NOT met'})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
