"""minie5.distributed and `minie5 embed --ray` on real local Ray clusters.

Setup (CI runs this on a 2-core machine): a one-node cluster of 3 logical CPUs
and a 256 MB object store, started once for the module with
ray.cluster_utils.Cluster so that the `minie5 embed --ray ADDRESS` commands
the tests run join it too; a two-node cluster for the node-loss test. Ray's
temporary directory is a fresh one under /tmp (short: Ray's socket paths must
stay under 107 bytes), RAY_AUTH_MODE=disabled keeps anything from being
written under ~/.ray, and every cluster is shut down by its fixture, also
when a test fails. Most tests run a tiny random model (3,000 rows in a few
seconds of embedding); one runs the e5 fixture. Every check of vectors is
against model.encode in this process, to 1e-6.

The input and output code the jobs run (shards, ids, OUTDIR) is tested
without a cluster in tests/test_shards.py.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import minie5  # noqa: E402
from cli_helpers import run_cli  # noqa: E402
from minie5.distributed.ray_data import actor_pool_size, embed_dataset, job_stats  # noqa: E402
from tiny_models import numpy_weights, tiny_config, write_model_dir  # noqa: E402

pytestmark = pytest.mark.slow  # every test here starts Ray jobs
NODE = dict(num_cpus=3, object_store_memory=256 * 1024**2)
ROWS = 3000
TOLERANCE = 1e-6


# ---------------------------------------------------------------- clusters
@pytest.fixture(scope="module")
def ray_env():
    """Environment for Ray, set before any cluster starts (its processes inherit it), restored after."""
    tmp = tempfile.mkdtemp(prefix="m5ray-", dir="/tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("RAY_TMPDIR", tmp)
        yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


def start_cluster(*workers: dict) -> Cluster:
    cluster = Cluster(initialize_head=True, head_node_args=dict(NODE, include_dashboard=False))
    for worker in workers:
        cluster.add_node(**worker)
    return cluster


@pytest.fixture(scope="module")
def cluster(ray_env):
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def connect(cluster: Cluster, **options) -> None:
    """ray.init on the cluster, once the workers of earlier jobs are gone (pools are sized on the CPUs free)."""
    ray.init(address=cluster.address, logging_level="WARNING", **options)
    deadline = time.monotonic() + 120
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture
def connected(cluster):
    """This process as a driver of the module's cluster, for one test."""
    connect(cluster)
    try:
        yield cluster
    finally:
        ray.shutdown()


# ---------------------------------------------------------------- models and texts
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = tiny_config(hidden=32, heads=4, layers=2, intermediate=64, vocab=200, max_positions=128)
    return write_model_dir(tmp_path_factory.mktemp("models") / "tiny", cfg, numpy_weights(cfg, seed=11))


@pytest.fixture(scope="module")
def texts():
    rng = np.random.default_rng(1)
    return [" ".join(f"w{w}" for w in rng.integers(4, 200, size=rng.integers(0, 70))) for _ in range(ROWS)]


@pytest.fixture(scope="module")
def expected(tiny, texts):
    """model.encode of every text in this process (which also fills the Numba cache before any actor starts)."""
    model = minie5.load(tiny)
    return {None: model.encode(texts), "passage": model.encode(texts, prefix="passage"),
            "w7 ": model.encode(texts, prefix="w7 ")}


def vectors_of(table: pa.Table) -> np.ndarray:
    column = table.column("embedding").combine_chunks()
    return column.flatten().to_numpy().reshape(len(column), -1)


def check_once_and_equal(ids: list, vectors: np.ndarray, expected: np.ndarray, rows_of=lambda i: i) -> float:
    """Every id exactly once, each vector equal to its text's model.encode; returns the largest difference."""
    assert len(ids) == len(set(ids)) == len(expected), (len(ids), len(set(ids)), len(expected))
    order = np.array([rows_of(i) for i in ids])
    assert sorted(order) == list(range(len(expected)))
    worst = float(np.max(np.abs(vectors - expected[order])))
    assert worst <= TOLERANCE, worst
    return worst


def within(job, seconds: float = 600):
    """job(), or a failed test after `seconds`: a hung Ray job must not hang the test run (the fixtures then
    shut the cluster down)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = job()
        except BaseException as e:  # handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"the Ray job did not finish within {seconds:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def items(texts, **extra):
    return [{"id": i, "text": t, **{k: f(i) for k, f in extra.items()}} for i, t in enumerate(texts)]


def worked(stats) -> list:
    return [actor for actor in ray.get(stats.summary.remote()) if actor["rows"]]


# ---------------------------------------------------------------- the actor, without a cluster
def test_embedder_holds_the_node_lock_only_for_the_fetch_and_the_first_compile(tiny, monkeypatch, request):
    """Per job and node, only the first actor warms up (compiles) under the node lock; the next actors of the
    job warm up outside it, at the same time. The truncation count comes from the encoder: one text of 22
    tokens cut to 8, one of 3 tokens not."""
    import contextlib
    import functools
    import types
    import uuid
    from minie5.distributed import ray_data

    state, warm_ups_locked = {"locked": False}, []
    real_lock, real_warm_up = ray_data.node_lock, ray_data.Embedder._warm_up

    @contextlib.contextmanager
    def watched_lock(name):
        with real_lock(name) as lock:
            state["locked"] = True
            try:
                yield lock
            finally:
                state["locked"] = False

    monkeypatch.setattr(ray_data, "node_lock", watched_lock)
    monkeypatch.setattr(ray_data.Embedder, "_warm_up",
                        lambda self: warm_ups_locked.append(state["locked"]) or real_warm_up(self))
    figures = []
    stats = types.SimpleNamespace(record=types.SimpleNamespace(remote=lambda key, **f: figures.append(f)))
    job = uuid.uuid4().hex
    # An Embedder sets Numba's thread count of the thread that builds it (here pytest's): put it back after.
    import numba
    request.addfinalizer(functools.partial(numba.set_num_threads, numba.get_num_threads()))
    first = ray_data.Embedder(str(tiny), job=job, stats=stats, max_length=8)
    ray_data.Embedder(str(tiny), job=job)
    ray_data.Embedder(str(tiny), job=uuid.uuid4().hex)  # another job: its first actor compiles under the lock
    assert warm_ups_locked == [True, False, True]
    out = first(pa.table({"text": ["w5 " * 20, "w6"]}))
    assert [(f["rows"], f["truncated"]) for f in figures] == [(2, 1)]
    with pytest.warns(minie5.TruncationWarning, match="1 of 2 texts"):  # encode() counts the same one
        expected = minie5.load(tiny).encode(["w5 " * 20, "w6"], max_length=8)
    assert np.max(np.abs(vectors_of(out) - expected)) <= TOLERANCE


# ---------------------------------------------------------------- the Ray Data API
def test_embed_dataset_on_two_actors_equals_encode(cluster, tiny, texts, expected, tmp_path):
    """Two actors start at once on an empty NUMBA_CACHE_DIR: one compiles, and the cache they leave is sound."""
    numba_cache = tmp_path / "numba"
    connect(cluster, runtime_env={"env_vars": {"NUMBA_CACHE_DIR": str(numba_cache)}})
    try:
        ds = ray.data.from_items(items(texts, source=lambda i: f"s{i % 7}"), override_num_blocks=3)
        stats = job_stats()
        table = pa.concat_tables(ray.get(within(embed_dataset(ds, str(tiny), stats=stats).to_arrow_refs)))
        actors = worked(stats)
    finally:
        ray.shutdown()
    ids = table.column("id").to_pylist()
    worst = check_once_and_equal(ids, vectors_of(table), expected[None])
    assert table.column("source").to_pylist() == [f"s{i % 7}" for i in ids]  # the other columns, untouched
    assert table.column("text").to_pylist() == [texts[i] for i in ids]
    assert len(actors) >= 2 and all(actor["threads"] == [1] for actor in actors), actors
    assert sum(actor["rows"] for actor in actors) == ROWS
    assert any(numba_cache.rglob("*.nbi")), "the actors did not compile into NUMBA_CACHE_DIR"
    check = ("import sys, numpy as np, minie5; v = minie5.load(sys.argv[1]).encode(sys.argv[2:]); "
             "np.save(sys.stdout.buffer, v)")
    reloaded = subprocess.run([sys.executable, "-c", check, str(tiny), *texts[:50]], capture_output=True, timeout=300,
                              env={**os.environ, "NUMBA_CACHE_DIR": str(numba_cache)})
    assert reloaded.returncode == 0, reloaded.stderr.decode()
    assert np.max(np.abs(np.load(io.BytesIO(reloaded.stdout)) - expected[None][:50])) <= TOLERANCE  # from that cache
    print(f"ray embed_dataset tiny: {len(actors)} actors, rows {[a['rows'] for a in actors]}, max|diff| {worst:.1e}")


def test_hub_id_through_the_offline_cache_with_two_threads(cluster, tiny, texts, expected, tmp_path):
    """A hub id resolved on the actor by huggingface_hub, offline, from a prepared cache; one actor, 2 threads."""
    from test_hub import COMMIT, build_hub_cache

    cache = tmp_path / "home" / "hub"
    build_hub_cache(cache, "acme/tiny-bert", COMMIT, tiny)
    env = {"HF_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    connect(cluster, runtime_env={"env_vars": env})
    try:
        ds = ray.data.from_items(items(texts[:1000]), override_num_blocks=2)
        stats = job_stats()
        rows = within(embed_dataset(ds, "acme/tiny-bert", prefix="w7 ", threads_per_actor=2, stats=stats).take_all)
        actors = worked(stats)
    finally:
        ray.shutdown()
    check_once_and_equal([r["id"] for r in rows], np.stack([r["embedding"] for r in rows]), expected["w7 "][:1000])
    assert len(actors) == 1 and actors[0]["threads"] == [2], actors  # 3 CPUs: one actor of 2 leaves one free


def test_actor_pool_never_takes_every_cpu(connected):
    assert actor_pool_size(1, None, 1 << 20) == 2  # 3 CPUs: 2 actors and 1 CPU for reading and writing
    assert actor_pool_size(2, None, 1 << 20) == 1
    with pytest.raises(minie5.Minie5Error, match=r"3 actors of 1 thread\(s\) do not fit .*ray-project/ray#44687"):
        actor_pool_size(1, 3, 1 << 20)
    with pytest.raises(minie5.Minie5Error, match=r"no actor of 3 thread\(s\) .* fits"):
        actor_pool_size(3, None, 1 << 20)
    with pytest.raises(minie5.Minie5Error, match=r"no actor .* and 4096.0 GiB fits"):
        actor_pool_size(1, None, 1 << 42)


def test_a_failed_block_fails_the_job(connected, tiny, texts):
    """max_errored_blocks is put back to 0, so a null text fails the job (naming its row) instead of vanishing."""
    rows = items(texts[:600])
    rows[417]["text"] = None
    ds = ray.data.from_items(rows, override_num_blocks=2)
    ds.context.max_errored_blocks = 3
    with pytest.warns(RuntimeWarning, match="max_errored_blocks was 3, set to 0"):
        ds = embed_dataset(ds, str(tiny))
    assert ds.context.max_errored_blocks == 0
    with pytest.raises(Exception, match=r"the text of the row with id 417 is null, expected a string"):
        within(ds.take_all)


def test_a_missing_text_column_names_the_columns(connected, tiny):
    no_text = ray.data.from_items([{"id": 1, "body": "w5"}])
    with pytest.raises(Exception, match=r"the dataset has no column 'text' \(columns: id, body\)"):
        within(embed_dataset(no_text, str(tiny)).take_all)


def test_a_local_model_directory_must_exist_on_every_node(connected, tmp_path):
    missing = tmp_path / "not-on-this-node"
    ds = ray.data.from_items(items(["w5 w6"] * 10))
    with pytest.raises(Exception) as raised:
        within(embed_dataset(ds, str(missing)).take_all)
    message = str(raised.value)
    assert f"{missing}: no such model directory on node " in message and "Ray node " in message, message


def test_an_actor_killed_mid_job_is_restarted_and_nothing_is_lost(connected, tiny, texts, expected):
    ds = ray.data.from_items(items(texts), override_num_blocks=3)
    stats = job_stats()
    killed = []

    def kill_one_actor():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            busy = worked(stats)
            if busy:
                pid = int(busy[0]["actor"].rsplit("pid ", 1)[1])
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, busy[0]["rows"]))
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor)
    killer.start()
    rows = within(embed_dataset(ds, str(tiny), stats=stats, rows_per_block=32).take_all)
    killer.join()
    assert killed, "no actor was killed"
    check_once_and_equal([r["id"] for r in rows], np.stack([r["embedding"] for r in rows]), expected[None])
    pids = {int(actor["actor"].rsplit("pid ", 1)[1]) for actor in worked(stats)}
    assert len(pids - {killed[0][0]}) >= 1  # the restarted actor is a new process
    print(f"ray actor kill: pid {killed[0][0]} killed after {killed[0][1]} rows; {ROWS} rows, 0 missing, 0 twice")


def test_e5_fixture_equals_encode(connected, e5_dir):
    """The real model: matmul="numba" computes each row the same in any batch, so the check can be 1e-6."""
    texts = [line for line in (Path(__file__).parent / "data" / "multilingual.txt").read_text("utf-8").split("\n")
             if line][:300]
    reference = minie5.load(e5_dir, matmul="numba").encode(texts, prefix="passage")
    ds = ray.data.from_items(items(texts), override_num_blocks=2)
    stats = job_stats()
    rows = within(embed_dataset(ds, str(e5_dir), prefix="passage", matmul="numba", stats=stats,
                                rows_per_block=64).take_all)
    worst = check_once_and_equal([r["id"] for r in rows], np.stack([r["embedding"] for r in rows]), reference)
    actors = worked(stats)
    assert np.stack([r["embedding"] for r in rows]).shape == (300, 384) and len(actors) >= 1
    print(f"parity ray e5: {len(actors)} actors, max|diff| to encode {worst:.1e}, peak RSS per actor "
          f"{[round(a['peak_rss'] / 2**20) for a in actors]} MiB")


# ---------------------------------------------------------------- the command line
def read_outdir(path: Path) -> pa.Table:
    return pq.read_table([str(p) for p in sorted(path.glob("*.parquet"))])


def summary_counts(stderr: str) -> dict:
    """The figures of the closing summary line."""
    line = next(line for line in stderr.splitlines() if line.startswith("minie5: rows read: "))
    numbers = re.match(r"minie5: rows read: (\d+) \(of (\d+); (\d+) were already in .*\), rows embedded: (\d+) by "
                       r"(\d+) actors?, rows written: (\d+) in", line)
    return dict(zip(("read", "rows", "before", "embedded", "actors", "written"), map(int, numbers.groups())))


def write_jsonl_files(directory: Path, texts: list, parts: int = 3) -> Path:
    directory.mkdir()
    size = len(texts) // parts
    for part in range(parts):
        chunk = range(part * size, len(texts) if part == parts - 1 else (part + 1) * size)
        (directory / f"part-{part}.jsonl").write_text(
            "".join(json.dumps({"doc": f"doc-{i}", "body": texts[i], "title": f"T{i}", "n": i}) + "\n" for i in chunk))
    return directory


def test_cli_json_lines_with_ids_and_kept_columns(cluster, tiny, texts, expected, tmp_path):
    inputs = write_jsonl_files(tmp_path / "in", texts)
    out = tmp_path / "out"
    result = run_cli("embed", "--ray", cluster.address, "-i", inputs, "-o", out, "--model", tiny, "--field", "body",
                     "--id-field", "doc", "--keep-columns", "title", "--prefix", "passage", "--rows-per-file", "400")
    assert result.returncode == 0, result.stderr
    table = read_outdir(out)
    assert table.column_names == ["id", "embedding", "title"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)  # a fixed-size list of float32
    ids = table.column("id").to_pylist()
    check_once_and_equal(ids, vectors_of(table), expected["passage"], rows_of=lambda doc: int(doc[4:]))
    assert table.column("title").to_pylist() == [f"T{doc[4:]}" for doc in ids]
    counts = summary_counts(result.stderr)
    assert counts == dict(read=ROWS, rows=ROWS, before=0, embedded=ROWS, actors=2, written=ROWS), counts
    assert f"all {ROWS} ids, each exactly once" in result.stderr and len(list(out.glob("*.parquet"))) > 3
    again = run_cli("embed", "--ray", cluster.address, "-i", inputs, "-o", out, "--model", tiny)
    assert "holds the output of a minie5 job" in again.error_line()


def test_cli_parquet_directory_ids_are_row_numbers(cluster, tiny, texts, expected, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    pq.write_table(pa.table({"text": texts[:1800]}), inputs / "a.parquet", row_group_size=500)
    pq.write_table(pa.table({"text": texts[1800:]}), inputs / "b.parquet", row_group_size=700)
    out = tmp_path / "out"
    result = run_cli("embed", "--ray", cluster.address, "-i", inputs, "-o", out, "--model", tiny, "--rows-per-file",
                     "500")
    assert result.returncode == 0, result.stderr
    table = read_outdir(out)
    check_once_and_equal(table.column("id").to_pylist(), vectors_of(table), expected[None])
    assert "rows in 2 files (6 shards)" in result.stderr


def test_cli_text_files_on_a_local_cluster(ray_env, tiny, texts, expected, tmp_path):
    """--ray local: the command starts a one-node cluster of its own, and stops it."""
    for part in range(3):
        (tmp_path / f"part-{part}.txt").write_text("".join(t + "\n" for t in texts[part * 1000:(part + 1) * 1000]))
    out = tmp_path / "out"
    result = run_cli("embed", "--ray", "local", "-i", tmp_path / "part-*.txt", "-o", out, "--model", tiny)
    assert result.returncode == 0, result.stderr
    table = read_outdir(out)
    check_once_and_equal(table.column("id").to_pylist(), vectors_of(table), expected[None])
    assert summary_counts(result.stderr)["written"] == ROWS


def test_cli_resume_after_the_driver_is_killed(cluster, tiny, texts, expected, tmp_path):
    """Kill the command (the driver) once files are written; --resume embeds only the rows not in OUTDIR."""
    inputs = write_jsonl_files(tmp_path / "in", texts)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "minie5", "embed", "--ray", cluster.address, "-i", str(inputs), "-o", str(out),
               "--model", str(tiny), "--field", "body", "--rows-per-file", "200"]
    driver = subprocess.Popen(command, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("*.parquet"))) < 3 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        driver.kill()
        driver.communicate()
    time.sleep(3)  # Ray ends the dead driver's tasks and actors
    resumed = run_cli(*command[3:], "--resume")
    assert resumed.returncode == 0, resumed.stderr
    counts = summary_counts(resumed.stderr)
    assert 0 < counts["before"] < ROWS, counts
    assert counts["read"] == counts["embedded"] == counts["written"] == ROWS - counts["before"], counts
    table = read_outdir(out)
    check_once_and_equal(table.column("id").to_pylist(), vectors_of(table), expected[None])
    print(f"ray resume: {counts['before']} rows written before the kill, {counts['embedded']} embedded by --resume")


def test_cli_quantize_int8_equals_load_int8_and_a_resume_with_another_quantize_is_refused(cluster, tiny, texts,
                                                                                          expected, tmp_path):
    """--quantize int8 on the Ray path embeds with minie5.load(..., quantize="int8") (not float32, silently), and
    the job record holds it: a --resume without it would mix float32 rows into an int8 output."""
    inputs = write_jsonl_files(tmp_path / "in", texts[:600], parts=2)
    out = tmp_path / "out"
    command = ["embed", "--ray", cluster.address, "-i", inputs, "-o", out, "--model", tiny, "--field", "body",
               "--id-field", "doc", "--quantize", "int8"]
    result = run_cli(*command)
    assert result.returncode == 0, result.stderr
    int8 = minie5.load(tiny, quantize="int8").encode(texts[:600])
    table = read_outdir(out)
    check_once_and_equal(table.column("id").to_pylist(), vectors_of(table), int8, rows_of=lambda doc: int(doc[4:]))
    assert np.max(np.abs(int8 - expected[None][:600])) > 1e-4  # the int8 model differs from the float32 one
    assert json.loads((out / "_minie5_job.json").read_text())["quantize"] == "int8"
    refused = run_cli(*command[:-2], "--resume")
    assert "holds the output of another job (--quantize: 'int8' then, None now)" in refused.error_line()


def test_cli_bad_row_names_file_and_line(cluster, tiny, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text('{"text": "w5"}\n' * 3)
    (inputs / "b.jsonl").write_text('{"text": "w5"}\n' * 4 + '{"text": null}\n')
    result = run_cli("embed", "--ray", cluster.address, "-i", inputs, "-o", tmp_path / "out", "--model", tiny)
    assert re.search(r"b.jsonl: line 5: field 'text' is a JSON null, expected a string$", result.error_line())


def test_cli_node_removed_mid_job(ray_env, tiny, texts, expected, tmp_path):
    """Two nodes; the worker node is removed once files are written. The job goes on and loses nothing.

    --actors 4 on 3 + 2 CPUs puts at least one actor on the worker node (as
    many as fit could all land on the head, and its loss would end no task).
    """
    two_nodes = start_cluster(dict(NODE, num_cpus=2))
    worker = next(iter(two_nodes.worker_nodes))
    driver = None
    try:
        ray.init(two_nodes.address)  # the figures' actor is on the head node, never on the one to be removed
        head = ray.get_runtime_context().get_node_id()
        assert [ray.get(job_stats().node_id.remote()) for _ in range(8)] == [head] * 8
        ray.shutdown()
        inputs = write_jsonl_files(tmp_path / "in", texts * 2, parts=4)
        out = tmp_path / "out"
        driver = subprocess.Popen([sys.executable, "-m", "minie5", "embed", "--ray", two_nodes.address, "-i",
                                   str(inputs), "-o", str(out), "--model", str(tiny), "--field", "body",
                                   "--id-field", "doc", "--rows-per-file", "256", "--actors", "4"],
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + 300
        while not list(out.glob("*.parquet")) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the first file of ~23: the job is under way
        two_nodes.remove_node(worker)
        stderr = driver.communicate(timeout=600)[1]
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        two_nodes.shutdown()
    assert driver.returncode == 0, "\n".join([line for line in stderr.splitlines() if line.startswith("minie5")]
                                             + stderr.splitlines()[-12:])  # and a traceback, if any
    table = read_outdir(out)
    doubled = np.concatenate([expected[None], expected[None]])
    check_once_and_equal(table.column("id").to_pylist(), vectors_of(table), doubled, rows_of=lambda d: int(d[4:]))
    counts = summary_counts(stderr)
    attempts = 1 + len(re.findall(r"minie5: attempt \d+ failed", stderr))
    assert attempts >= 2, stderr  # the node was lost mid-job, and the command ran another attempt
    assert "were lost" not in stderr  # every attempt's figures reached the driver
    assert re.search(r"--actors 4: the cluster now holds [12] actors? of 1 thread\(s\); this attempt runs [12]", stderr)
    print(f"ray node removed: {counts['rows']} rows, {counts['embedded']} embedded (the lost node's work again), "
          f"0 missing, 0 twice; attempts: {attempts}")
