#!/usr/bin/env python3
"""Why engine/matmul_plan.py switches engines at SERIAL_TOKENS: one batch timed under each plan, by batch size.

    python scripts/plans.py --model DIR                           # 12, 32, 64, 128, 512 tokens
    python scripts/plans.py --model DIR --tokens 12 --rounds 50

For each token count, one text of that many tokens is embedded with FastEncoder
under five plans, interleaved round by round (so that load on a shared machine
hits all alike), and the median and minimum times are printed:

    layer loop        all layers in one call per Numba thread (layer_loop.LayerLoop; "auto" below 64 tokens)
    loop, 1 thread    the same on the calling thread only
    serial + split    kernels.SERIAL, one call per step, SplitLinear's column ranges on the threads
    parallel Numba    kernels + SplitLinear + kernels.attention (matmul="numba" from 64 tokens)
    sgemm             kernels + BlasLinear + BlasAttention (matmul="auto" from 64 tokens)

--quantize int8 times the int8 model (its linear layers on kernels_int8 in every plan).

docs/performance.md quotes its output.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import minie5  # noqa: E402
from minie5.engine import encoder, matmul_plan as matmul  # noqa: E402
from minie5.engine.layer_loop import LayerLoop  # noqa: E402


def candidate_plans(quantize=None) -> dict:
    numba_small, numba_large = matmul.plans("numba", quantize)
    _, auto_large = matmul.plans("auto", quantize)
    return {
        "layer loop": numba_small,
        "loop, 1 thread": numba_small._replace(layer_loop=LayerLoop(1)),
        "serial + split": numba_small._replace(layer_loop=None),
        "parallel Numba": numba_large,
        "sgemm": auto_large,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("MINIE5_MODEL") or minie5.DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, nargs="+", default=[12, 32, 64, 128, 512])
    parser.add_argument("--rounds", type=int, default=20, help="timed calls per plan and size (default 20)")
    parser.add_argument("--quantize", choices=("int8",), default=None, help="time the int8 model")
    args = parser.parse_args(argv)
    model = minie5.load(args.model, quantize=args.quantize)
    fast = encoder.FastEncoder(model.config, model.weights, quantize=args.quantize)
    plans = candidate_plans(args.quantize)
    rng = np.random.default_rng(0)
    print(f"numba threads {__import__('numba').get_num_threads()}; {args.quantize or 'float32'}; load average "
          f"{os.getloadavg()[0]:.2f}; median (min) ms of {args.rounds} calls per cell")
    print(f"{'tokens':>7}" + "".join(f"{name:>20}" for name in plans))
    results = {}
    for n in args.tokens:
        ids = [[0] + rng.integers(5, 250000, n - 2).tolist() + [2]]
        packed = encoder.pack(ids)
        times = {name: [] for name in plans}
        for round_ in range(args.rounds + 1):
            for name, plan in plans.items():
                fast.small_plan = fast.large_plan = plan
                start = time.perf_counter()
                fast.embed_packed(*packed, "mean")
                if round_:  # the first round warms up (and compiles)
                    times[name].append(time.perf_counter() - start)
        results[n] = {name: (float(np.median(t)) * 1e3, min(t) * 1e3) for name, t in times.items()}
        print(f"{n:>7}" + "".join(f"{med:>12.2f} ({low:>5.2f})" for med, low in results[n].values()))
    return results


if __name__ == "__main__":
    main()
