#!/usr/bin/env python3
"""How much a text's embedding moves with its batch-mates, its place in the batch and the thread count.

    python scripts/invariance.py --model DIR                       # tests/data/multilingual.txt
    python scripts/invariance.py --model DIR --corpus docs.txt --json

Runs the same measurement in four child processes: {OpenBLAS's own kernel
choice, OpenBLAS forced to its Haswell (AVX2) kernel} x NUMBA_NUM_THREADS
{1, 2}. Each child embeds the corpus three ways with the default fast path:

    sorted    encode(texts, batch_size=32): batches of similar lengths
    shuffled  encode(shuffled texts, batch_size=7): other batch-mates, other rows
    doubled   encode(texts + texts, batch_size=64): every text twice in one call

and the parent prints, per kernel, the largest |difference| of a component of
the normalised vectors: batch-mates (sorted vs shuffled), duplicates in one
call (the two halves of doubled) and threads (1 vs 2, same batches).
docs/behaviour.md quotes its output. "native" is run with OPENBLAS_CORETYPE
and OPENBLAS_L2_SIZE removed from the environment, "haswell" with
OPENBLAS_CORETYPE=Haswell (skipped where the CPU has no AVX2).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO / "tests" / "data" / "multilingual.txt"
KERNEL_ENVIRONMENTS = {
    "native": {},  # OpenBLAS picks the kernel for the CPU
    "haswell": {"OPENBLAS_CORETYPE": "Haswell"},  # as some machines force it
}


def child(model: str, corpus: str, out: str) -> None:
    """In a child process: embed the corpus three ways, save them, and the BLAS kernel that ran."""
    sys.path.insert(0, str(REPO))
    import warnings

    import minie5
    warnings.simplefilter("ignore", minie5.TruncationWarning)  # texts over 512 tokens are fine here
    texts = Path(corpus).read_text(encoding="utf-8").splitlines()
    order = np.random.default_rng(0).permutation(len(texts))
    m = minie5.load(model)
    sorted_ = m.encode(texts, batch_size=32)
    shuffled = np.empty_like(sorted_)
    shuffled[order] = m.encode([texts[i] for i in order], batch_size=7)
    doubled = m.encode(texts + texts, batch_size=64)
    np.savez(out, sorted=sorted_, shuffled=shuffled, doubled=doubled, kernel=blas_kernel())


def blas_kernel() -> str:
    """The kernel threadpoolctl reports for numpy's BLAS ("SkylakeX", "Haswell", ...), or "unknown"."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    names = dict.fromkeys(f"{i.get('internal_api')} {i.get('architecture')}" for i in blas)  # numpy's, SciPy's
    return ", ".join(names) or "unknown"


def has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def run_children(model: str, corpus: str, kernel: str, tmp: Path) -> dict:
    """Both thread counts under one kernel environment -> {threads: arrays}."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(KERNEL_ENVIRONMENTS[kernel])
    results = {}
    for threads in ("1", "2"):
        out = tmp / f"{kernel}-{threads}.npz"
        subprocess.run([sys.executable, __file__, "--child", "--model", model, "--corpus", corpus, "--out", str(out)],
                       env={**env, "NUMBA_NUM_THREADS": threads}, check=True, timeout=1800)
        results[threads] = dict(np.load(out))
    return results


def measure(model: str, corpus: str, kernels=tuple(KERNEL_ENVIRONMENTS)) -> dict:
    """{kernel: {"kernel": name, "batch_mates": d, "duplicates": d, "threads": d}}, d a max |diff|."""
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kernel in kernels:
            if kernel == "haswell" and not has_avx2():
                continue
            runs = run_children(model, corpus, kernel, Path(tmp))
            n = len(runs["2"]["sorted"])
            worst = lambda pairs: max(float(np.abs(a - b).max()) for a, b in pairs)  # noqa: E731
            figures[kernel] = {
                "kernel": str(runs["2"]["kernel"]),
                "texts": n,
                "batch_mates": worst((r["sorted"], r["shuffled"]) for r in runs.values()),
                "duplicates": worst((r["doubled"][:n], r["doubled"][n:]) for r in runs.values()),
                "threads": worst((runs["1"][k], runs["2"][k]) for k in ("sorted", "shuffled", "doubled")),
            }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="one text per line")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model, args.corpus, args.out)
        return 0
    figures = measure(args.model, args.corpus)
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"{'kernel':<8} {'OpenBLAS kernel':<20} {'texts':>6} {'batch-mates':>12} {'duplicates':>11} "
          f"{'threads 1/2':>12}   (max |diff| of a component, normalised vectors)")
    for name, f in figures.items():
        print(f"{name:<8} {f['kernel']:<20} {f['texts']:>6} {f['batch_mates']:>12.1e} {f['duplicates']:>11.1e} "
              f"{f['threads']:>12.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
