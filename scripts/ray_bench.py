"""`minie5 embed` in one process against `minie5 embed --ray local`: texts/s side by side, peak RSS per actor,
and what embedding 100 M passages would cost.

    python scripts/ray_bench.py --model DIR                          # 20,000 passages of ~100 tokens, 2 rounds
    python scripts/ray_bench.py --model DIR --rounds 3 --ray-threads 1 2 --json figures.json
    python scripts/ray_bench.py --model DIR --lines 2000 --scaling   # 1x1, 2x1, 1x2 actors x threads

The corpus: --lines passages (default 20,000) of about --tokens tokens each
(default 100, counted with the model's tokenizer, <s> and </s> included),
each the lines of tests/data/multilingual.txt of 1-80 characters joined in
turn until the passage is long enough (0: the short lines themselves).
Each round runs, in fresh processes and alternating which goes first,

    minie5 embed -i corpus.txt -o x.npy --model DIR --prefix passage -q              (single process)
    minie5 embed --ray local -i corpus.txt -o OUTDIR --model DIR --prefix passage    (one actor per core)

(and --ray local --threads-per-actor T for each other T given), and records
the wall time of the whole command (start-up, model load and, for Ray, the
cluster's start and stop included), the load average before it, the single
process's peak RSS (os.wait4) and each actor's peak RSS and rows (from the
command's closing summary). Ray's texts/s over the embedding phase alone
(its summary line) is reported too. The ratio is Ray's texts/s over the
single process's in the same round; the spread over rounds is given, since
the machine may be shared. The first round also checks that both outputs
hold the same vectors (max |difference| over all rows, by id).

--scaling measures how the speed grows with actors and threads on the same
corpus: the single process with one Numba thread (NUMBA_NUM_THREADS=1, one
BLAS thread) and with every core, and `--ray local --actors A
--threads-per-actor T` for 1 actor x 1 thread, 2 actors x 1 thread and 1
actor x 2 threads (--configs to choose others). Each engine's efficiency is
its texts/s over (the one-thread single process's texts/s x the cores it
used): 1.0 is linear growth from one core.

The cost table extrapolates from the measured --ray texts/s per core (embedding
phase): core-hours for --cost-passages passages (default 100 M), and the wall
time and node-hours on clusters of nodes with --node-cores cores, assuming
throughput grows linearly with cores (one single-threaded actor per core, no
shared state between them: what the 2-core measurement shows for 2 actors).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "tests" / "data" / "multilingual.txt"
MAX_CHARS = 80
TARGET_RATIO = 0.9


def build_corpus(path: Path, lines: int, tokens: int, model_dir: str) -> float:
    """Write the corpus; returns the mean number of tokens per passage (with <s> and </s>)."""
    from minie5.tokenizer import Tokenizer
    tokenizer = Tokenizer(model_dir, max_length=512)
    source = [line for line in SOURCE.read_text(encoding="utf-8").splitlines() if 0 < len(line) <= MAX_CHARS]
    passages, i = [], 0
    while len(passages) < lines:
        parts = [source[i % len(source)]]
        i += 1
        while tokens and len(tokenizer.encode([" ".join(parts)])[0][0]) < tokens:
            parts.append(source[i % len(source)])
            i += 1
        passages.append(" ".join(parts))
    path.write_text("".join(p + "\n" for p in passages), encoding="utf-8")
    counts = [len(ids) for ids in tokenizer.encode(passages[:2000])[0]]
    return float(np.mean(counts))


def run(command: list[str], env: dict) -> dict:
    """Run a command; its wall time, its own peak RSS (os.wait4), stderr, and the load average before it."""
    load = os.getloadavg()
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        err.seek(0)
        stderr = err.read().decode("utf-8", errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)}\n{stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss": usage.ru_maxrss * 1024, "stderr": stderr, "load": load[0]}


ACTOR_LINE = re.compile(r"minie5: actor .* pid (\d+): (\d+) rows in ([\d.]+) s of embedding, ([\d/]+) thread\(s\), "
                        r"peak RSS (\d+) MiB")
SUMMARY_LINE = re.compile(r"rows written: (\d+) in ([\d.]+) s")


def parse_ray(stderr: str) -> dict:
    actors = [{"pid": int(m[0]), "rows": int(m[1]), "seconds": float(m[2]), "threads": m[3], "peak_rss_mib": int(m[4])}
              for m in ACTOR_LINE.findall(stderr)]
    written, seconds = SUMMARY_LINE.search(stderr).groups()
    return {"actors": actors, "written": int(written), "phase_seconds": float(seconds)}


def compare(npy: Path, outdir: Path) -> float:
    """max |difference| between the single process's rows and Ray's rows of the same ids."""
    import pyarrow.parquet as pq
    single = np.load(npy)
    table = pq.read_table([str(p) for p in sorted(outdir.glob("*.parquet"))])
    ids = table.column("id").to_numpy()
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(len(ids), -1)
    assert sorted(ids) == list(range(len(single))), "Ray's output does not hold every id once"
    return float(np.max(np.abs(vectors - single[ids])))


def engines_for(args, base: list[str]) -> dict:
    """engine name -> (command for an output directory, cores it uses, extra environment)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    engines = {"single": (lambda out: base + ["-o", str(out / "x.npy"), "-q"], cores, {})}
    if args.scaling:
        one_thread = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                      "MKL_NUM_THREADS": "1"}
        engines["single-1t"] = (lambda out: base + ["-o", str(out / "x.npy"), "-q"], 1, one_thread)
        for config in args.configs:
            actors, threads = map(int, config.split("x"))
            engines[f"ray-{actors}x{threads}"] = (
                lambda out, a=actors, t=threads: base + ["--ray", "local", "-o", str(out / "outdir"), "--actors",
                                                         str(a), "--threads-per-actor", str(t)], actors * threads, {})
        return engines
    for threads in args.ray_threads:
        engines[f"ray-{threads}"] = (lambda out, t=threads: base + ["--ray", "local", "-o", str(out / "outdir"),
                                                                    "--threads-per-actor", str(t)], cores, {})
    return engines


def scaling_table(rounds: list, engines: dict) -> list[str]:
    """texts/s per engine (median over rounds) and the efficiency against the one-thread single process."""
    base = float(np.median([res["single-1t"]["texts_per_s"] for res in rounds]))
    lines = ["| engine | cores | texts/s (whole command), per round | Ray's embedding phase | efficiency vs "
             "1 thread (whole command) | efficiency (embedding phase) |", "|---|---|---|---|---|---|"]
    for name, (_, cores, _) in engines.items():
        rates = [res[name]["texts_per_s"] for res in rounds]
        phase = [res[name].get("phase_texts_per_s") for res in rounds]
        efficiency = float(np.median(rates)) / (base * cores)
        phase_eff = f"{float(np.median(phase)) / (base * cores):.2f}" if phase[0] else ""
        lines.append(f"| {name} | {cores} | {', '.join(f'{x:.1f}' for x in rates)} | "
                     f"{', '.join(f'{x:.1f}' for x in phase) if phase[0] else ''} | {efficiency:.2f} | {phase_eff} |")
    return lines


def cost_table(per_core: float, passages: float, node_cores: list, node_counts: list) -> list[str]:
    core_hours = passages / per_core / 3600
    lines = [f"{passages / 1e6:g} M passages at {per_core:.1f} texts/s per core: {core_hours:,.0f} core-hours", "",
             "| nodes x cores | texts/s | wall time | node-hours |", "|---|---|---|---|"]
    for cores in node_cores:
        for nodes in node_counts:
            rate = per_core * cores * nodes
            hours = passages / rate / 3600
            wall = f"{hours:,.1f} h" if hours < 48 else f"{hours / 24:,.1f} days"
            lines.append(f"| {nodes} x {cores} | {rate:,.0f} | {wall} | {hours * nodes:,.0f} |")
    return lines


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print its tables; returns the figures (also written to --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model directory (e.g. the e5-small fixture)")
    parser.add_argument("--lines", type=int, default=20_000, help="passages in the corpus (default 20,000)")
    parser.add_argument("--tokens", type=int, default=100, help="tokens per passage, about (0: short lines)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each running every engine once")
    parser.add_argument("--ray-threads", type=int, nargs="+", default=[1],
                        help="--threads-per-actor values to run (default 1: one actor per core)")
    parser.add_argument("--scaling", action="store_true",
                        help="compare actors x threads (--configs) and the single process at 1 thread and all cores")
    parser.add_argument("--configs", nargs="+", default=["1x1", "2x1", "1x2"], help="--scaling: ACTORSxTHREADS")
    parser.add_argument("--cost-passages", type=float, default=100e6)
    parser.add_argument("--node-cores", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--node-counts", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="raybench-", dir="/tmp"))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(work / "ray")}
    try:
        corpus = work / "corpus.txt"
        mean_tokens = build_corpus(corpus, args.lines, args.tokens, args.model)
        base = [sys.executable, "-m", "minie5", "embed", "-i", str(corpus), "--model", args.model,
                "--prefix", "passage"]
        engines = engines_for(args, base)  # --ray: its summary is read
        print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs "
              f"({platform.processor() or platform.machine()}), Python {platform.python_version()}; corpus "
              f"{args.lines} passages, {mean_tokens:.1f} tokens each on average", flush=True)
        rounds = []
        for r in range(args.rounds):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            results = {}
            for name in order:
                out = work / f"round{r}-{name}"
                out.mkdir()
                command, _, extra_env = engines[name]
                result = run(command(out), {**env, **extra_env})
                result["texts_per_s"] = args.lines / result["seconds"]
                if name.startswith("ray"):
                    result.update(parse_ray(result["stderr"]))
                    result["phase_texts_per_s"] = result["written"] / result["phase_seconds"]
                del result["stderr"]
                results[name] = result
                print(f"round {r + 1} {name:8s} {result['seconds']:7.1f} s  {result['texts_per_s']:6.1f} texts/s  "
                      f"load {result['load']:.2f}", flush=True)
            if r == 0:
                for name in engines:
                    if name.startswith("ray"):
                        results[name]["max_diff_to_single"] = compare(work / "round0-single" / "x.npy",
                                                                      work / f"round0-{name}" / "outdir")
            for name in list(engines)[1:]:
                results[name]["ratio"] = results[name]["texts_per_s"] / results["single"]["texts_per_s"]
            rounds.append(results)
            for name in engines:
                if name.startswith("ray"):
                    shutil.rmtree(work / f"round{r}-{name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print("| engine | texts/s (whole command), per round | ratio to single, per round | Ray's embedding phase |"
          " peak RSS |")
    print("|---|---|---|---|---|")
    for name in engines:
        rates = [res[name]["texts_per_s"] for res in rounds]
        ratio = ", ".join(f"{res[name]['ratio']:.2f}" for res in rounds) if name != "single" else "1"
        phase = ", ".join(f"{res[name]['phase_texts_per_s']:.1f}" for res in rounds) if name.startswith("ray") else ""
        if not name.startswith("ray"):
            rss = f"{max(res[name]['peak_rss'] for res in rounds) / 2**20:.0f} MiB"
        else:
            rss = ", ".join(f"{a['peak_rss_mib']} MiB ({a['rows']} rows)" for a in rounds[-1][name]["actors"])
        print(f"| {name} | {', '.join(f'{x:.1f}' for x in rates)} | {ratio} | {phase} | {rss} |")
    for name in [name for name in engines if name.startswith("ray")]:
        print(f"{name}: max |difference| to the single process's vectors, by id: "
              f"{rounds[0][name]['max_diff_to_single']:.1e}")
    figures = {"rounds": rounds, "mean_tokens": mean_tokens, "lines": args.lines}
    if args.scaling:
        print()
        print("\n".join(scaling_table(rounds, engines)))
    # the cost table: from the Ray engine that uses every core (2 actors x 1 thread with --scaling)
    ray_name = next((name for name in engines if name.startswith("ray") and name.endswith("x1")
                     and len([a for a in rounds[-1][name]["actors"]]) > 1), None) or next(
        name for name in engines if name.startswith("ray"))
    cores = sum(int(a["threads"].split("/")[0]) for a in rounds[-1][ray_name]["actors"])
    per_core = float(np.median([res[ray_name]["phase_texts_per_s"] for res in rounds])) / cores
    figures["per_core"] = per_core
    print()
    print(f"cost table from {ray_name}:")
    print("\n".join(cost_table(per_core, args.cost_passages, args.node_cores, args.node_counts)))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
