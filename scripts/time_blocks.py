#!/usr/bin/env python3
"""Where the fast path's time goes: seconds per block type for one batch, and the FLOPs behind them.

    python scripts/time_blocks.py --model DIR                  # 32 texts x 128 tokens (docs/architecture.md)
    python scripts/time_blocks.py --model DIR --batch 8 --tokens 512 --repeats 5
    python scripts/time_blocks.py --model DIR --batch 8 --tokens 512 --attention fused

Runs FastEncoder.embed_packed (the code path Model.encode takes) with every
kernel call wrapped in a timer, so the real calls are measured in their real
order; linear calls are told apart by the weight they multiply with. A short
batch runs all its layers in one call per thread (engine/layer_loop.py): that
call is one block, "all layers". Prints
the fastest of --repeats runs (after one warm-up run; on a shared machine the
least disturbed one): each block's total in that run, its share, and the
matmul FLOPs per block with the GFLOP/s achieved.

The time outside the kernels is its own row: the wall time the timed blocks
leave over (Python between calls), and the cost of starting parallel work
(workers.POOL.run hands a call to the worker threads and waits for them),
estimated as the count of such starts per forward times the median cost of
starting an empty call (measured here). That start-up cost is spent inside
the blocks' timers, so the row shows it as "of which". The counts of kernel
calls and parallel starts per forward are printed with it.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import minie5  # noqa: E402
from minie5.engine import encoder  # noqa: E402
from minie5.engine import workers  # noqa: E402
from minie5.engine.kernels import njit  # noqa: E402
from minie5.engine import kernels  # noqa: E402
from minie5.engine.blas import BlasAttention  # noqa: E402
from minie5.engine.matmul_plan import FusedAttention, NumbaAttention, Plan  # noqa: E402

LINEAR_BLOCKS = {  # a field of encoder.LayerLinears -> the block its matmul belongs to
    "qkv": "Q, K, V projections",
    "attention_output": "attention output projection",
    "ffn_up": "FFN up (H -> F)",
    "ffn_down": "FFN down (F -> H)",
}


ATTENTIONS = {"plan": None, "blas": BlasAttention, "fused": FusedAttention,  # --attention
              "numba": lambda: NumbaAttention(kernels)}


LAYER_LOOP = "all layers (layer_loop, 1 call)"  # a short batch's layers: one timer around the lot


def flops_per_token(config, T: int) -> dict[str, float]:
    """Multiply-adds x 2 per token, all layers, by block (attention's depend on the text length T)."""
    H, F, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return {
        "Q, K, V projections": L * 3 * 2 * H * H,
        "attention output projection": L * 2 * H * H,
        "FFN up (H -> F)": L * 2 * H * F,
        "FFN down (F -> H)": L * 2 * F * H,
        "attention (scores, softmax, mix)": L * 2 * 2 * T * H,  # q k^T and probs v: T x D per head, A heads
    }


@njit(cache=True, nogil=True)
def _nothing(i):
    """An empty nogil kernel: POOL.run of it costs what starting parallel work costs."""
    return i


def parallel_start_seconds(threads: int, calls: int = 300) -> float:
    """Median seconds of workers.POOL.run(an empty kernel) over `threads` threads: one parallel start."""
    times = []
    for _ in range(calls + 10):
        start = time.perf_counter()
        workers.POOL.run(_nothing, [(t,) for t in range(threads)])
        times.append(time.perf_counter() - start)
    return float(np.median(times[10:]))


class counting_pool_starts:
    """Within the block, workers.POOL.run calls are counted in counts["parallel starts"]."""

    def __init__(self, counts: dict):
        self.counts = counts

    def __enter__(self):
        run = self.original = workers.POOL.run

        def counted(function, calls):
            self.counts["parallel starts"] += len(calls) > 1
            return run(function, calls)
        workers.POOL.run = counted
        return self

    def __exit__(self, *exc):
        del workers.POOL.run  # back to the class's method


def instrument(fast: encoder.FastEncoder, totals: dict, counts: dict | None = None) -> None:
    """Wrap the kernels the encoder calls in timers that add to totals[block] (and count them in counts)."""
    counts = {} if counts is None else counts

    def timed(block, function):
        def run(*args):
            start = time.perf_counter()
            function(*args)
            totals[block] += time.perf_counter() - start
            counts["kernel calls"] = counts.get("kernel calls", 0) + 1
        return run

    block_of_weight = {}  # id of a weight (as the encoder passes it to the linear engine) -> its block
    for layer in fast.layers:
        for field, block in LINEAR_BLOCKS.items():
            block_of_weight[id(getattr(layer, field)[0])] = block
    def timed_linear(linear):
        def run(x, weight, bias, out):
            start = time.perf_counter()
            linear(x, weight, bias, out)
            totals[block_of_weight[id(weight)]] += time.perf_counter() - start
            counts["kernel calls"] = counts.get("kernel calls", 0) + 1
        return run

    def timed_kernel_set(kernel_set):  # what the encoder calls of kernels / kernels.SERIAL, with timers
        return types.SimpleNamespace(
            embed=timed("embeddings (lookup + LayerNorm)", kernel_set.embed),
            add_layer_norm=timed("residual add + LayerNorm", kernel_set.add_layer_norm),
            gelu=timed("GELU", kernel_set.gelu),
            POOLERS={k: timed("pooling", f) for k, f in kernel_set.POOLERS.items()})

    def timed_plan(plan: Plan) -> Plan:
        loop = plan.layer_loop and timed(LAYER_LOOP, plan.layer_loop)
        return Plan(timed_kernel_set(plan.kernels), timed_linear(plan.linear),
                    timed("attention (scores, softmax, mix)", plan.attention), loop)

    fast.small_plan, fast.large_plan = timed_plan(fast.small_plan), timed_plan(fast.large_plan)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="hub id or directory (default: $MINIE5_MODEL, else the hub id)")
    parser.add_argument("--batch", type=int, default=32, help="texts per batch (default 32)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per text, <s> and </s> included (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up (default 3)")
    parser.add_argument("--quantize", choices=("int8",), default=None, help="time the int8 model")
    parser.add_argument("--attention", choices=tuple(ATTENTIONS), default="plan",
                        help="the attention engine from 64 tokens on: the plan's (default), or one named "
                             "(blas: BlasAttention, fused: kernels.attention_fused, numba: kernels.attention)")
    args = parser.parse_args(argv)
    model = minie5.load(args.model or os.environ.get("MINIE5_MODEL") or minie5.DEFAULT_MODEL, quantize=args.quantize)
    c = model.config
    rng = np.random.default_rng(0)
    ids = [[0] + rng.integers(5, 250000, args.tokens - 2).tolist() + [2] for _ in range(args.batch)]
    packed = encoder.pack(ids)

    fast = encoder.FastEncoder(c, model.weights, matmul=model.matmul, quantize=model.quantize)
    if ATTENTIONS[args.attention] is not None:
        fast.large_plan = fast.large_plan._replace(attention=ATTENTIONS[args.attention]())
    fast.embed_packed(*packed, c.pooling)  # compile / warm up before anything is timed
    plain_runs = []
    for _ in range(args.repeats):  # without timers, for comparison
        start = time.perf_counter()
        fast.embed_packed(*packed, c.pooling)
        plain_runs.append(time.perf_counter() - start)
    plain = min(plain_runs)

    runs = []
    counts = defaultdict(int)  # kernel calls and parallel starts of the last run
    untimed = fast.small_plan, fast.large_plan  # this encoder's engines (engine/matmul_plan.py), timers put on copies
    for _ in range(args.repeats + 1):
        totals = defaultdict(float)
        counts.clear()
        instrument(fast, totals, counts)
        with counting_pool_starts(counts):
            start = time.perf_counter()
            fast.embed_packed(*packed, c.pooling)
            totals["total (wall)"] = time.perf_counter() - start
        runs.append(dict(totals))
        fast.small_plan, fast.large_plan = untimed
    threads = __import__('numba').get_num_threads()
    start_cost = parallel_start_seconds(threads) if threads > 1 else 0.0
    runs = runs[1:]  # the first timed run warms the wrappers
    blocks = [b for b in runs[0] if b != "total (wall)"]
    best = min(runs, key=lambda r: r["total (wall)"])  # the least disturbed run (the machine may be shared)
    wall = best["total (wall)"]
    tokens = args.batch * args.tokens
    flops = flops_per_token(c, args.tokens)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"numba threads {__import__('numba').get_num_threads()}, python {platform.python_version()}")
    print(f"batch: {args.batch} texts x {args.tokens} tokens = {tokens} tokens; fastest of {args.repeats} runs; "
          f"fastest without timers: {1e3 * plain:.2f} ms; attention from 64 tokens: "
          f"{type(untimed[1].attention).__name__}")
    print(f"{'block':<34}{'ms':>9}{'share':>8}{'GFLOP':>9}{'GFLOP/s':>9}")
    for block in sorted(blocks, key=lambda b: -best[b]):
        g = (sum(flops.values()) if block == LAYER_LOOP else flops.get(block, 0.0)) * tokens / 1e9
        rate = f"{g / best[block]:>9.1f}" if g else f"{'':>9}"
        print(f"{block:<34}{1e3 * best[block]:>9.2f}{100 * best[block] / wall:>7.1f}%{g:>9.1f}" + rate)
    other = wall - sum(best[b] for b in blocks)
    starts = counts["parallel starts"] * start_cost
    print(f"{'outside the kernels':<34}{1e3 * (other + starts):>9.2f}{100 * (other + starts) / wall:>7.1f}%")
    print(f"{'  Python between calls':<34}{1e3 * other:>9.2f}{100 * other / wall:>7.1f}%")
    print(f"{'  starting parallel work (est.)':<34}{1e3 * starts:>9.2f}{100 * starts / wall:>7.1f}%"
          f"   (in the blocks above)")
    total_flops = sum(flops.values())
    print(f"{'total':<34}{1e3 * wall:>9.2f}{100.0:>7.1f}%{total_flops * tokens / 1e9:>9.1f}"
          f"{total_flops * tokens / 1e9 / wall:>9.1f}")
    print(f"FLOPs per token at T = {args.tokens}: {total_flops / 1e6:.1f} M "
          f"(matmuls {sum(v for k, v in flops.items() if 'attention (' not in k) / 1e6:.1f} M, "
          f"attention {flops['attention (scores, softmax, mix)'] / 1e6:.1f} M)")
    print(f"calls per forward: {counts['kernel calls']} kernel calls, {counts['parallel starts']} parallel starts "
          f"at {1e6 * start_cost:.1f} us each (median of an empty POOL.run on {threads} threads)")
    return {"best": best, "plain": plain, "flops_per_token": flops, "calls": dict(counts),
            "parallel_start_seconds": start_cost, "outside_kernels": other + starts}


if __name__ == "__main__":
    main()
