"""`minie5 embed` on big files: peak memory against corpus size, and speed against model.encode.

    python scripts/cli_bench.py --model ./e5-small                       # 10k and 100k lines
    python scripts/cli_bench.py --model ./e5-small --lines 10000 1000000   # a million lines
    python scripts/cli_bench.py --model ./e5-small --json figures.json

For each size N it writes N short multilingual lines (the 2,648 lines of
tests/data/multilingual.txt of 1 to 80 characters, about 9.5 tokens each
with <s> and </s>, repeated in turn) and runs, in a fresh process,

    minie5 embed -i lines.txt -o lines.npy --model MODEL --quiet

reading the child's peak resident memory (ru_maxrss from os.wait4) and its
wall time. The figure for memory is the ratio of peak RSS between the largest
and the smallest N: `embed` streams, so it should stay close to 1 (the test:
below 1.3). The model's weights are memory-mapped and count in RSS as far as
they are touched.

Then it compares speed on --speed-lines lines (20,000): the command
above, and, in another fresh process, model.encode() on the same texts
(timed after loading the model and a warm-up batch), alternated over
--rounds rounds (3) so that both see the same load on a shared machine.
The command's time includes everything a user waits for (Python start-up,
imports, model load, reading the file, writing the .npy); model.encode's
time is the embedding alone. Overhead = command time / encode time - 1,
median over the rounds (the test: below 10 %); CPU time is reported too.
The command's start-up alone is measured on a one-line file.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "tests" / "data" / "multilingual.txt"
MAX_CHARS = 80
RSS_RATIO_LIMIT = 1.3
OVERHEAD_LIMIT = 0.10

ENCODE_SCRIPT = """
import json, sys, time
import minie5
model = minie5.load(sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as f:
    texts = f.read().split("\\n")[:-1]
model.encode(texts[:256], batch_size=int(sys.argv[3]))  # warm-up: Numba's cached kernels, buffers
start, cpu_start = time.perf_counter(), time.process_time()
out = model.encode(texts, batch_size=int(sys.argv[3]))
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
print(json.dumps({"texts": len(texts), "seconds": seconds, "cpu_seconds": cpu_seconds, "rows": out.shape[0]}))
"""


def short_lines(n: int) -> list[str]:
    """n short multilingual lines: the test corpus's lines of at most MAX_CHARS characters, in turn."""
    source = [line for line in SOURCE.read_text(encoding="utf-8").splitlines() if 0 < len(line) <= MAX_CHARS]
    return [source[i % len(source)] for i in range(n)]


def write_corpus(path: Path, n: int) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for line in short_lines(n):
            f.write(line + "\n")
    return path


def run_measured(command: list[str]) -> tuple[float, float, int, str]:
    """Run a command; -> (wall seconds, CPU seconds, peak RSS in bytes of that child, its stdout)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}):\n{stderr}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, stdout  # ru_maxrss: KiB on Linux


def bench_cli(model: str, n: int, workdir: Path, batch_size: int) -> dict:
    corpus = write_corpus(workdir / f"lines-{n}.txt", n)
    output = workdir / f"lines-{n}.npy"
    command = [sys.executable, "-m", "minie5", "embed", "-i", str(corpus), "-o", str(output), "--model", model,
               "--batch-size", str(batch_size), "--quiet"]
    seconds, cpu_seconds, rss, _ = run_measured(command)
    rows = np.load(output, mmap_mode="r").shape[0]
    if rows != n:
        raise RuntimeError(f"{output} has {rows} rows for {n} lines")
    output.unlink()
    return {"lines": n, "seconds": seconds, "cpu_seconds": cpu_seconds, "texts_per_s": n / seconds,
            "peak_rss_bytes": rss}


def bench_encode(model: str, n: int, workdir: Path, batch_size: int) -> dict:
    corpus = workdir / f"lines-{n}.txt"
    if not corpus.exists():
        write_corpus(corpus, n)
    _, _, rss, stdout = run_measured([sys.executable, "-c", ENCODE_SCRIPT, model, str(corpus), str(batch_size)])
    result = json.loads(stdout)
    if result["rows"] != n:
        raise RuntimeError(f"model.encode gave {result['rows']} rows for {n} texts")
    return {"lines": n, "seconds": result["seconds"], "cpu_seconds": result["cpu_seconds"],
            "texts_per_s": n / result["seconds"], "peak_rss_bytes": rss}


def mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def bench_memory(args, workdir: Path) -> dict:
    """`minie5 embed` on each corpus size: wall, CPU, peak RSS; the RSS ratio largest / smallest."""
    runs = []
    print(f"{'lines':>10} {'embed wall':>11} {'CPU':>8} {'texts/s':>9} {'peak RSS':>10}", flush=True)
    for n in sorted(args.lines):
        run = bench_cli(args.model, n, workdir, args.batch_size)
        runs.append(run)
        print(f"{n:>10,} {run['seconds']:>10.1f}s {run['cpu_seconds']:>7.1f}s {run['texts_per_s']:>9,.0f} "
              f"{mib(run['peak_rss_bytes']):>10}", flush=True)
    small, large = runs[0], runs[-1]
    ratio = large["peak_rss_bytes"] / small["peak_rss_bytes"]
    print(f"peak RSS, {large['lines']:,} lines / {small['lines']:,} lines: {ratio:.3f} "
          f"(limit {RSS_RATIO_LIMIT}: {'ok' if ratio < RSS_RATIO_LIMIT else 'TOO HIGH'})", flush=True)
    return {"cli": runs, "rss_ratio": ratio}


def bench_speed(args, workdir: Path) -> dict:
    """`minie5 embed` against model.encode on the same texts, alternated over rounds.

    On a shared machine the load changes from minute to minute; alternating the
    two (command first in odd rounds, encode first in even ones) exposes both to
    the same conditions, and the median round is the figure.
    """
    n = args.speed_lines
    startup = bench_cli(args.model, 1, workdir, args.batch_size)
    print(f"start-up of `minie5 embed` (1 line: imports, model load, cached kernels): {startup['seconds']:.1f}s",
          flush=True)
    rounds = []
    print(f"{n:,} lines, {args.rounds} rounds:  {'embed':>8} {'encode':>8} {'overhead':>9} "
          f"{'embed CPU':>10} {'encode CPU':>11} {'CPU overhead':>13}", flush=True)
    for r in range(args.rounds):
        order = ("cli", "encode") if r % 2 == 0 else ("encode", "cli")
        runs = {}
        for kind in order:
            bench = bench_cli if kind == "cli" else bench_encode
            runs[kind] = bench(args.model, n, workdir, args.batch_size)
        runs["overhead"] = runs["cli"]["seconds"] / runs["encode"]["seconds"] - 1
        runs["cpu_overhead"] = runs["cli"]["cpu_seconds"] / runs["encode"]["cpu_seconds"] - 1
        rounds.append(runs)
        print(f"{'round ' + str(r + 1):>28} {runs['cli']['seconds']:>7.1f}s {runs['encode']['seconds']:>7.1f}s "
              f"{100 * runs['overhead']:>+8.1f}% {runs['cli']['cpu_seconds']:>9.1f}s "
              f"{runs['encode']['cpu_seconds']:>10.1f}s {100 * runs['cpu_overhead']:>+12.1f}%", flush=True)
    overhead = median([r["overhead"] for r in rounds])
    cpu_overhead = median([r["cpu_overhead"] for r in rounds])
    cli_rate = median([r["cli"]["texts_per_s"] for r in rounds])
    encode_rate = median([r["encode"]["texts_per_s"] for r in rounds])
    print(f"median: minie5 embed {cli_rate:,.0f} texts/s (whole command), model.encode {encode_rate:,.0f} texts/s: "
          f"overhead {100 * overhead:+.1f} % wall, {100 * cpu_overhead:+.1f} % CPU "
          f"(limit {100 * OVERHEAD_LIMIT:.0f} %: {'ok' if overhead < OVERHEAD_LIMIT else 'TOO HIGH'})", flush=True)
    return {"lines": n, "startup_seconds": startup["seconds"], "rounds": rounds, "overhead": overhead,
            "cpu_overhead": cpu_overhead, "cli_texts_per_s": cli_rate, "encode_texts_per_s": encode_rate}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("MINIE5_MODEL", "intfloat/multilingual-e5-small"))
    parser.add_argument("--lines", type=int, nargs="+", default=[10_000, 100_000],
                        help="corpus sizes for peak RSS (default: 10000 100000)")
    parser.add_argument("--speed-lines", type=int, default=20_000,
                        help="corpus size for embed vs encode throughput (default: 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated embed / encode rounds (default: 3)")
    parser.add_argument("--batch-size", type=int, default=32, help="for both `embed` and encode (default: 32)")
    parser.add_argument("--no-encode", action="store_true", help="skip the throughput comparison")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    figures = {"model": args.model, "batch_size": args.batch_size, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="minie5-cli-bench-") as tmp:
        workdir = Path(tmp)
        figures.update(bench_memory(args, workdir))
        if not args.no_encode:
            figures["speed"] = bench_speed(args, workdir)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
