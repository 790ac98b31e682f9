#!/usr/bin/env python3
"""This machine's read bandwidth, and how close one short text's forward comes to it.

    python scripts/bandwidth.py --model DIR                 # float32 and int8, 12 tokens
    python scripts/bandwidth.py --model DIR --tokens 12 --rounds 30

A forward pass of one short text (W1 of scripts/bench.py: 1 text x 12 tokens)
reads every weight of the encoder's linear layers once: 85 MB in float32,
21 MB in int8 for e5-small. Its floor is that many bytes at the machine's read
bandwidth. This script measures that bandwidth (a Numba loop summing a buffer
the size of the float32 weights, on 1 and on 2 threads, each thread its own
half; the best of --rounds passes), then times the forward pass of one text
(median of --rounds calls) and prints

    fraction = (weight bytes / forward time) / bandwidth

1.0 would be a forward that does nothing but stream its weights from memory
at full speed. docs/performance.md quotes its output.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import minie5  # noqa: E402
from minie5.engine import encoder  # noqa: E402


@numba.njit(nogil=True, fastmath=True, cache=False)
def _read_sum(buffer, start, stop):
    """Sum of buffer[start:stop]: every byte read once, in vector sums (fastmath lets LLVM keep many).

    The loop runs over a slice, 0 .. its length: indexing the whole buffer
    from start to stop keeps a wrap-around check that stops LLVM vectorising.
    """
    part = buffer[start:stop]
    total = np.float32(0.0)
    for i in range(part.shape[0]):
        total += part[i]
    return total


def read_bandwidth(n_bytes: int, threads: int, rounds: int) -> float:
    """Best bytes per second over `rounds` passes of `threads` threads reading an n_bytes buffer once."""
    buffer = np.ones(n_bytes // 4, np.float32)  # written once: its pages are real memory, not the zero page
    n = buffer.shape[0]
    cuts = [n * t // threads for t in range(threads + 1)]
    _read_sum(buffer, 0, 1024)  # compile
    best = float("inf")
    for _ in range(rounds):
        workers = [threading.Thread(target=_read_sum, args=(buffer, cuts[t], cuts[t + 1])) for t in range(1, threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        _read_sum(buffer, cuts[0], cuts[1])
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - start)
    return n_bytes / best


def linear_weight_bytes(config, bytes_per_weight: float) -> int:
    """Bytes of the encoder's linear-layer weights (biases and LayerNorm left out: under 1 %)."""
    H, F, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return int(L * (4 * H * H + 2 * H * F) * bytes_per_weight)


def forward_time(model, tokens: int, rounds: int) -> float:
    """Median seconds of one text of `tokens` tokens through the fast path (embed_packed, as encode runs it)."""
    rng = np.random.default_rng(0)
    packed = encoder.pack([[0] + rng.integers(5, 250000, tokens - 2).tolist() + [2]])
    fast = encoder.FastEncoder(model.config, model.weights, matmul=model.matmul, quantize=model.quantize)
    fast.embed_packed(*packed, model.config.pooling)  # compile / warm up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fast.embed_packed(*packed, model.config.pooling)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("MINIE5_MODEL") or minie5.DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=12, help="tokens of the one text timed (default 12, W1)")
    parser.add_argument("--rounds", type=int, default=20, help="passes / calls timed (default 20)")
    args = parser.parse_args(argv)
    float_model = minie5.load(args.model)
    config = float_model.config
    n_bytes = linear_weight_bytes(config, 4)
    bandwidth = {t: read_bandwidth(n_bytes, t, args.rounds) for t in (1, 2)}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"numba threads {numba.get_num_threads()}; load average {os.getloadavg()[0]:.2f}")
    for t, rate in bandwidth.items():
        print(f"read bandwidth, {t} thread{'s' if t > 1 else ''}, {n_bytes / 1e6:.0f} MB buffer: {rate / 1e9:.1f} GB/s")
    results = {"bandwidth": bandwidth, "engines": {}}
    peak = max(bandwidth.values())
    print(f"{'engine':<10}{'weights MB':>12}{'W1 ms':>9}{'floor ms':>10}{'weights/time GB/s':>19}{'fraction':>10}")
    for name, model, per_weight in (("float32", float_model, 4), ("int8", minie5.load(args.model, quantize="int8"), 1)):
        weight_bytes = linear_weight_bytes(config, per_weight)
        seconds = forward_time(model, args.tokens, args.rounds)
        rate = weight_bytes / seconds
        results["engines"][name] = {"weight_bytes": weight_bytes, "seconds": seconds, "fraction": rate / peak}
        print(f"{name:<10}{weight_bytes / 1e6:>12.1f}{1e3 * seconds:>9.2f}{1e3 * weight_bytes / peak:>10.2f}"
              f"{rate / 1e9:>19.1f}{rate / peak:>10.2f}")
    return results


if __name__ == "__main__":
    main()
