"""Load test of `minie5 serve`: concurrent clients on loopback, against model.encode on the same texts.

    python scripts/load_test.py --model ./e5-small                    # 16 clients, 30 s
    python scripts/load_test.py --model ./e5-small --clients 4 --seconds 5
    python scripts/load_test.py --url http://127.0.0.1:8000 --model ./e5-small --api-key KEY

1. The texts: --texts multilingual texts of mixed length, each 1 to 40 lines
   (of at most 80 characters) of tests/data/multilingual.txt joined by
   spaces: from a few to a few hundred tokens, a fixed seed, so every run
   sends the same ones.
2. The server: `python -m minie5 serve --model MODEL` on a free loopback port,
   started here and stopped with SIGTERM at the end, unless --url names a
   running one (loopback addresses only).
3. The baseline: model.encode(texts) in this process (after a warm-up call),
   timed once before the load and once after, while the server is idle;
   their mean texts/s is the baseline (two measurements, because the machine
   may be shared and its speed drift).
4. The load: --clients threads, each with its own keep-alive connection,
   send POST /v1/embeddings with 1 to 8 of the texts (drawn at random),
   encoding_format "base64" (what the openai client asks for), for --seconds
   (and at most --max-requests requests in all). Each answer is checked: 200,
   one row per text, 384 float32 numbers each.

Reported: requests/s, texts/s, tokens/s, p50 / p99 latency, errors (any
answer that is not a 200 with the right rows, or a failed connection: must be
0), the server's batching (rows per forward pass, from /health) and the ratio
served texts/s / model.encode texts/s (target: >= 0.8). The time of the load
runs until the last request in flight at the deadline is answered. When the
script started the server, it also compares texts per CPU second (the server
process's, from /proc, against model.encode's), which other processes on a
shared machine disturb less than wall time. Exit code 1 if there were errors.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "tests" / "data" / "multilingual.txt"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_LINES_PER_TEXT = 40
MAX_CHARS = 80  # per line taken from SOURCE (a few of its lines are paragraphs)
MAX_TEXTS_PER_REQUEST = 8
RATIO_TARGET = 0.8


def mixed_texts(count: int, seed: int = 0) -> list[str]:
    """count texts of 1 to MAX_LINES_PER_TEXT multilingual lines each (short ones more often)."""
    lines = [line for line in SOURCE.read_text(encoding="utf-8").split("\n") if 0 < len(line.strip()) <= MAX_CHARS]
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        n_lines = min(MAX_LINES_PER_TEXT, int(2 ** rng.uniform(0, np.log2(MAX_LINES_PER_TEXT + 1))))
        start = rng.randrange(len(lines))
        texts.append(" ".join(lines[(start + k) % len(lines)] for k in range(n_lines)))
    return texts


# ---------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, path: str, timeout: float = 10) -> tuple[int, dict]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            if get_json(url, "/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url}/health did not answer 200 within {timeout}s")


def start_server(model: str, log_path: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("MINIE5_API_KEY", None)
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "minie5", "serve", "--model", model, "--port", str(port), *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env)
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# ---------------------------------------------------------------- the baseline
def encode_rate(model, texts: list[str]) -> tuple[float, float]:
    """model.encode on texts (its default batch size): (texts per wall second, texts per CPU second)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    model.encode(texts)
    return len(texts) / (time.perf_counter() - start), len(texts) / (time.process_time() - cpu_start)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/PID/stat (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


# ---------------------------------------------------------------- the load
class Client(threading.Thread):
    """One client: a keep-alive connection, requests of 1 to 8 texts until the deadline."""

    def __init__(self, index: int, url: str, texts: list[str], deadline: float, budget: "RequestBudget",
                 api_key: str | None, dimension: int):
        super().__init__(name=f"client-{index}", daemon=True)
        self.rng = random.Random(1000 + index)
        self.url = urlsplit(url)
        self.texts = texts
        self.deadline = deadline
        self.budget = budget
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.dimension = dimension
        self.latencies: list[float] = []
        self.texts_done = 0
        self.tokens_done = 0
        self.errors: list[str] = []

    def run(self) -> None:
        conn = None
        while time.monotonic() < self.deadline and self.budget.take():
            batch = self.rng.sample(self.texts, self.rng.randint(1, MAX_TEXTS_PER_REQUEST))
            body = json.dumps({"model": "e5-small", "input": batch, "encoding_format": "base64"}).encode()
            started = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=120)
                conn.request("POST", "/v1/embeddings", body=body, headers=self.headers)
                response = conn.getresponse()
                answer = response.read()
                latency = time.perf_counter() - started
                problem = self.check(response.status, answer, len(batch))
            except (OSError, http.client.HTTPException, ValueError) as e:
                problem = f"{type(e).__name__}: {e}"
                if conn is not None:
                    conn.close()
                conn = None
            if problem:
                self.errors.append(problem)
                continue
            self.latencies.append(latency)
            self.texts_done += len(batch)
        if conn is not None:
            conn.close()

    def check(self, status: int, answer: bytes, n_texts: int) -> str | None:
        """None if the answer is a 200 with n_texts rows of float32 [dimension], else what is wrong."""
        if status != 200:
            return f"HTTP {status}: {answer[:200]!r}"
        body = json.loads(answer)
        rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]]
        if len(rows) != n_texts or any(r.shape != (self.dimension,) or not np.isfinite(r).all() for r in rows):
            return f"wrong rows: {len(rows)} for {n_texts} texts"
        self.tokens_done += body["usage"]["total_tokens"]
        return None


class RequestBudget:
    """At most `limit` requests in all, shared by the clients."""

    def __init__(self, limit: int):
        self.left = limit
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


def run_load(url: str, texts: list[str], clients: int, seconds: float, max_requests: int,
             api_key: str | None, dimension: int) -> dict:
    deadline = time.monotonic() + seconds
    budget = RequestBudget(max_requests)
    threads = [Client(i, url, texts, deadline, budget, api_key, dimension) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 300)
    elapsed = time.perf_counter() - started
    latencies = np.array([x for t in threads for x in t.latencies]) * 1000
    errors = [e for t in threads for e in t.errors]
    n_texts = sum(t.texts_done for t in threads)
    return {
        "texts_served": n_texts, "clients": clients, "seconds": elapsed, "requests": len(latencies), "errors": len(errors),
        "error_examples": errors[:5],
        "requests_per_s": len(latencies) / elapsed, "texts_per_s": n_texts / elapsed,
        "tokens_per_s": sum(t.tokens_done for t in threads) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else None,
    }


# ---------------------------------------------------------------- main
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("MINIE5_MODEL") or "intfloat/multilingual-e5-small",
                        help="model directory or hub id: served (unless --url) and used for the baseline")
    parser.add_argument("--url", default=None, help="a running server on loopback (default: start one)")
    parser.add_argument("--api-key", default=None, help="the running server's API key (with --url)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-requests", type=int, default=100_000, help="requests in all, at most")
    parser.add_argument("--texts", type=int, default=256, help="distinct texts the clients draw from")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `minie5 serve` (repeat), e.g. --server-arg=--batch-tokens=8192")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures here")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.max_requests < 1 or args.texts < MAX_TEXTS_PER_REQUEST:
        parser.error(f"--clients, --seconds and --max-requests must be positive, --texts >= {MAX_TEXTS_PER_REQUEST}")
    if args.url and urlsplit(args.url).hostname not in LOOPBACK:
        parser.error(f"--url must be a loopback address ({', '.join(LOOPBACK)}): this is a local load test")
    return args


def main(argv=None, model=None) -> dict:
    """Run the load test; model: an already loaded minie5.Model for the baseline (default: load --model)."""
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    import minie5

    texts = mixed_texts(args.texts)
    proc, log_path = None, None
    url = args.url
    if url is None:
        log_path = Path(tempfile.mkdtemp(prefix="minie5-load-")) / "server.log"
        proc, url = start_server(args.model, log_path, args.server_arg)
    try:
        wait_healthy(url, proc)
        model = model or minie5.load(args.model)
        tokens = [len(ids) for ids in model.tokenizer.encode(texts)[0]]
        model.encode(texts[:MAX_TEXTS_PER_REQUEST])  # warm-up
        before, cpu_before = encode_rate(model, texts)
        health_before = get_json(url, "/health")[1]
        server_cpu = process_cpu_seconds(proc.pid) if proc is not None else None
        load = run_load(url, texts, args.clients, args.seconds, args.max_requests, args.api_key,
                        model.config.hidden_size)
        if proc is not None:
            server_cpu = process_cpu_seconds(proc.pid) - server_cpu
        health_after = get_json(url, "/health")[1]
        after, cpu_after = encode_rate(model, texts)
    finally:
        if proc is not None:
            code = stop_server(proc)
            if code != 0:
                print(f"the server exited with code {code}; its log: {log_path}", file=sys.stderr)
    baseline = (before + after) / 2
    batches = health_after.get("batches", 0) - health_before.get("batches", 0)
    rows = health_after.get("rows", 0) - health_before.get("rows", 0)
    figures = {
        **load,
        "texts": len(texts), "tokens_per_text_mean": float(np.mean(tokens)),
        "tokens_per_text_min": int(min(tokens)), "tokens_per_text_max": int(max(tokens)),
        "encode_texts_per_s_before": before, "encode_texts_per_s_after": after, "encode_texts_per_s": baseline,
        "ratio": load["texts_per_s"] / baseline,
        "encode_texts_per_cpu_s": (cpu_before + cpu_after) / 2,
        "served_texts_per_cpu_s": load["texts_served"] / server_cpu if server_cpu else None,
        "batches": batches, "rows_per_batch": rows / batches if batches else None,
        "server_log": str(log_path) if log_path else None,
    }
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return figures


def report(f: dict) -> None:
    print(f"texts: {f['texts']} distinct, {f['tokens_per_text_min']} to {f['tokens_per_text_max']} tokens "
          f"(mean {f['tokens_per_text_mean']:.0f}), 1 to {MAX_TEXTS_PER_REQUEST} per request")
    print(f"load: {f['clients']} clients for {f['seconds']:.1f} s: {f['requests']} requests, {f['errors']} errors")
    print(f"  {f['requests_per_s']:.1f} requests/s, {f['texts_per_s']:.1f} texts/s, {f['tokens_per_s']:.0f} tokens/s")
    if f["p50_ms"] is not None:
        print(f"  latency p50 {f['p50_ms']:.0f} ms, p99 {f['p99_ms']:.0f} ms")
    if f["rows_per_batch"]:
        print(f"  server: {f['batches']} forward passes, {f['rows_per_batch']:.1f} texts each on average")
    print(f"model.encode on the same texts: {f['encode_texts_per_s']:.1f} texts/s "
          f"(before {f['encode_texts_per_s_before']:.1f}, after {f['encode_texts_per_s_after']:.1f})")
    print(f"served / encode: {f['ratio']:.2f} (target >= {RATIO_TARGET})")
    if f["served_texts_per_cpu_s"]:
        print(f"per CPU second (less disturbed by other processes): served {f['served_texts_per_cpu_s']:.1f} "
              f"texts, encode {f['encode_texts_per_cpu_s']:.1f} texts, ratio "
              f"{f['served_texts_per_cpu_s'] / f['encode_texts_per_cpu_s']:.2f}")
    for example in f["error_examples"]:
        print(f"  error: {example}")


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
