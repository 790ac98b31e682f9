"""Embedding on a Ray cluster with Ray Data: a callable class for map_batches, and a job set up right.

    import ray
    from minie5.distributed import embed_dataset

    ds = ray.data.read_parquet("/shared/passages/")              # any Dataset with a string column
    ds = embed_dataset(ds, "intfloat/multilingual-e5-small", column="text", prefix="passage")
    ds.write_parquet("/shared/embeddings/")                      # every row + "embedding": 384 float32

Ray Data does the scheduling, the retries and the data movement; minie5
brings the model (Embedder: loaded once per actor, each call embeds one batch
with the number of threads the actor holds) and the settings a user would
otherwise get wrong (embed_dataset):

  * blocks of a few hundred rows (repartition), so that every actor gets work;
  * an actor pool that never takes every CPU: reading and writing are tasks
    that need a CPU too, and a pool holding all of them hangs the job forever
    (ray-project/ray#44687);
  * memory per actor from the measured peak RSS of an actor;
  * DataContext.max_errored_blocks = 0: a failed block fails the job, rather
    than being dropped without a word.

On each node the actors fetch the model one at a time under a node lock (a
hub id goes to that node's Hugging Face cache), and the job's first actor on
the node also compiles the Numba kernels into the cache while holding it: the
node's other actors then load and warm up from the caches at once, and
concurrent first compiles never write one cache file at once
(numba/numba#4807). `minie5 embed --ray` (minie5/distributed/ray_command.py) runs whole
jobs on top of this. docs/scale-out.md says what to set on a cluster.
"""
from __future__ import annotations

import contextlib
import os
import resource
import socket
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

from ..errors import InputError, Minie5Error, MissingExtraError, ModelFileError

try:
    import ray
    import ray.data
    import pyarrow as pa
except ImportError as e:
    raise MissingExtraError(f"minie5.distributed needs Ray Data ({e.name} is not installed): "
                            f"pip install 'minie5[ray]'") from e

try:
    import fcntl
except ImportError:  # Windows: no node lock (Ray's multi-node clusters run on Linux)
    fcntl = None

import numba
import numpy as np

from ..checkpoint import hub
from ..checkpoint.quantize_model import check_quantize
from ..model import LONG_MODES, load

ROWS_PER_BLOCK = 256  # rows per block and per Embedder call: enough to keep a batch of 32 busy, small enough to spread
RESERVED_CPUS = 1  # CPUs the pool leaves free for the read and write tasks (ray-project/ray#44687)
SETTLE_SECONDS = 15  # how long actor_pool_size waits for CPUs that other tasks are still giving back
# Memory asked per actor: the size of the model's weights plus a fixed part (Python, Ray's worker, Numba,
# the tokenizer, the buffers of a block of texts up to 512 tokens), set from the peak RSS of actors
# measured with scripts/ray_bench.py and tests/test_distributed.py, rounded up (docs/scale-out.md).
ACTOR_FIXED_BYTES = 512 << 20
E5_SMALL_WEIGHT_BYTES = 470_045_872  # e5-small's model.safetensors: the guess for a hub id not cached on the driver
WARM_UP_TEXTS = ["warm up", "warm up the kernels " * 60]  # a short batch and a long one: both engine plans


# ---------------------------------------------------------------- on every node
class NodeLock:
    """The open lock file of node_lock: it also holds one line, the key of the last job that compiled here."""

    def __init__(self, f):
        self.f = f

    def compiled_by(self) -> str:
        self.f.seek(0)
        return self.f.read().strip()

    def set_compiled_by(self, job: str) -> None:
        self.f.seek(0)
        self.f.truncate()
        self.f.write(job + "\n")
        self.f.flush()


@contextlib.contextmanager
def node_lock(name: str):
    """Hold a lock that one process of this machine holds at a time (the file lock is node-local)."""
    path = Path(tempfile.gettempdir()) / f"minie5-{os.getuid()}-{name}.lock"
    with open(path, "a+") as f:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when f is closed, or when the process dies
        yield NodeLock(f)


def node_name() -> str:
    """This node, for error messages: host name, IP address and Ray node id."""
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "?"
    return f"{socket.gethostname()} ({ray.util.get_node_ip_address()}, Ray node {node_id[:12]})"


def fetch_on_node(model: str, revision: str | None, local_dir: bool) -> Path:
    """The model's directory on this node: a hub id is fetched into this node's Hugging Face cache; a local
    directory that is not here is an error naming the node and the path."""
    if local_dir and not Path(model).is_dir():
        raise ModelFileError(model, f"no such model directory on node {node_name()}: a local model directory "
                                    f"must exist at the same path on every node (or give a hub id, which each "
                                    f"node fetches into its Hugging Face cache)")
    return hub.resolve_model_dir(model, revision)


def text_values(batch, column: str) -> list:
    """The texts of a batch (a pyarrow Table or a dict of numpy arrays); InputError for a missing or null text."""
    if isinstance(batch, pa.Table):
        if column not in batch.column_names:
            raise InputError(f"the dataset has no column {column!r} (columns: {', '.join(batch.column_names)}); "
                             f"name the text column with column=")
        values = batch.column(column)
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
                or pa.types.is_string_view(values.type) or pa.types.is_null(values.type)):
            raise InputError(f"column {column!r} holds {values.type}, expected strings")
        texts = values.to_pylist()
    else:
        if column not in batch:
            raise InputError(f"the dataset has no column {column!r} (columns: {', '.join(batch)}); name the text "
                             f"column with column=")
        texts = list(batch[column])
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"the text of {_row_name(batch, i)} is {'null' if text is None else type(text).__name__}"
                             f", expected a string")
    return texts


def _row_name(batch, i: int) -> str:
    """A row of a batch, for error messages: its id when the batch has an "id" column."""
    ids = batch.column("id") if isinstance(batch, pa.Table) and "id" in batch.column_names else (
        batch.get("id") if isinstance(batch, dict) else None)
    if ids is None:
        return f"row {i} of a batch"
    value = ids[i].as_py() if isinstance(batch, pa.Table) else ids[i]
    return f"the row with id {value!r}"


def with_embeddings(batch, column: str, vectors: np.ndarray):
    """The batch with one more column: pyarrow, a fixed-size list of float32 per row; numpy, an [n, dim] array."""
    if isinstance(batch, pa.Table):
        if column in batch.column_names:
            raise InputError(f"the dataset already has a column {column!r}; choose output_column=")
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        return batch.append_column(column, pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))
    if column in batch:
        raise InputError(f"the dataset already has a column {column!r}; choose output_column=")
    return {**batch, column: vectors}


class Embedder:
    """A callable class for Dataset.map_batches: the model loaded once per actor, one batch per call.

    Each call embeds the text column and returns the batch with its other
    columns untouched plus `output_column`: dim float32 values per row (a
    fixed-size list with batch_format="pyarrow", an [n, dim] array with numpy
    batches). Options as in Model.encode. threads: the Numba threads of each
    call, set at the start of every call, because numba.set_num_threads holds
    per Python thread and Ray Data calls the UDF from another thread than the
    one that built the actor (Ray sets OMP_NUM_THREADS for an actor, not
    Numba's count). quantize: None or "int8", as in minie5.load. stats: a
    JobStats actor told about every call (without waiting for it), or None.
    job: a key shared by the actors of one job (see node_lock's use below).
    """

    def __init__(self, model: str, *, column: str = "text", output_column: str = "embedding", threads: int = 1,
                 revision: str | None = None, matmul: str = "auto", quantize: str | None = None,
                 local_dir: bool = False, stats=None, job: str | None = None, **encode_options):
        self.column, self.output_column, self.threads = column, output_column, threads
        self.options = encode_options  # prefix, normalize, max_length, long, batch_size
        self.stats = stats
        self.key = f"{node_name()} pid {os.getpid()}"
        job = job or uuid.uuid4().hex
        numba.set_num_threads(threads)
        # One actor of a node at a time fetches the model, and the job's first actor on the node compiles the
        # kernels into Numba's cache while holding the lock; the others warm up from the cache concurrently.
        with node_lock("load") as lock:
            model_dir = fetch_on_node(model, revision, local_dir)
            compiled = lock.compiled_by() == job
            if not compiled:
                self.model = load(model_dir, matmul=matmul, quantize=quantize)
                self._warm_up()
                lock.set_compiled_by(job)
        if compiled:
            self.model = load(model_dir, matmul=matmul, quantize=quantize)
            self._warm_up()
        self.dim = self.model.config.hidden_size

    def _warm_up(self) -> None:
        """Both engine plans once: a short batch (below 64 tokens: the serial kernels), then the parallel
        kernels and sgemm. The first time on a node this compiles them into Numba's cache."""
        self.model.encode_counted(WARM_UP_TEXTS[:1], **self.options)
        self.model.encode_counted(WARM_UP_TEXTS, **self.options)

    def __call__(self, batch):
        numba.set_num_threads(self.threads)  # per thread: this is not the thread that ran __init__
        texts = text_values(batch, self.column)
        started = time.perf_counter()
        vectors, truncated = self.model.encode_counted(texts, **self.options)  # [n, dim], texts cut
        seconds = time.perf_counter() - started
        if self.stats is not None:  # not waited for: one caller's calls reach the actor in order
            self.stats.record.remote(self.key, rows=len(texts), seconds=seconds, truncated=truncated,
                                     threads=numba.get_num_threads(), peak_rss=peak_rss())
        return with_embeddings(batch, self.output_column, vectors.reshape(len(texts), self.dim))


def peak_rss() -> int:
    """This process's peak resident memory in bytes (ru_maxrss: kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@ray.remote(num_cpus=0)
class _JobStats:
    """Collects what the Embedder actors did: per actor, rows, seconds embedding, threads, peak RSS."""

    def __init__(self):
        self.actors = {}

    def record(self, key: str, rows: int, seconds: float, truncated: int, threads: int, peak_rss: int) -> None:
        actor = self.actors.setdefault(key, {"actor": key, "calls": 0, "rows": 0, "seconds": 0.0, "truncated": 0,
                                             "threads": set(), "peak_rss": 0})
        actor["calls"] += 1
        actor["rows"] += rows
        actor["seconds"] += seconds
        actor["truncated"] += truncated
        actor["threads"].add(threads)
        actor["peak_rss"] = max(actor["peak_rss"], peak_rss)

    def node_id(self) -> str:
        """The Ray node this actor runs on (job_stats places it on the head node)."""
        return ray.get_runtime_context().get_node_id()

    def summary(self) -> list:
        """One dict per actor (a restarted actor is a new process: a new entry), threads as a sorted list."""
        return [{**actor, "threads": sorted(actor["threads"])} for actor in self.actors.values()]


def job_stats():
    """A new JobStats actor (pass it as embed_dataset(stats=...); read it with ray.get(stats.summary.remote())).

    It lives on the head node, which the cluster cannot lose anyway, so that
    losing another node loses no figure. The affinity is hard: Ray 2.60 places
    a soft-affine zero-CPU actor on another node about half the time.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    heads = [node["NodeID"] for node in ray.nodes() if node["Alive"] and "node:__internal_head__" in node["Resources"]]
    node = heads[0] if heads else ray.get_runtime_context().get_node_id()
    return _JobStats.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()


# ---------------------------------------------------------------- the job
def is_local_dir(model: str) -> bool:
    """Whether the model names a local directory (else a hub id): it exists here, or it is spelt like a path."""
    path = Path(model).expanduser()
    return path.is_dir() or path.is_absolute() or model.startswith((".", "~")) or not hub._REPO_ID.match(model)


def actor_memory(model: str, revision: str | None = None) -> int:
    """Bytes of memory to ask for each actor: the fixed part plus the model's weights (see ACTOR_FIXED_BYTES)."""
    path = Path(model).expanduser() / "model.safetensors"
    if not is_local_dir(model):
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(model, "model.safetensors", revision=revision)
        path = Path(cached) if isinstance(cached, str) else None
    weights = path.stat().st_size if path is not None and path.is_file() else E5_SMALL_WEIGHT_BYTES
    return ACTOR_FIXED_BYTES + weights


def free_cpus(total: float, settle: float = SETTLE_SECONDS) -> float:
    """The cluster's free CPUs, waiting up to `settle` seconds for them to reach `total`: the workers of
    tasks that just ended (this job's scan, a job that just finished) take a moment to give theirs back."""
    deadline = time.monotonic() + settle
    while True:
        free = ray.available_resources().get("CPU", 0)
        if free >= total or time.monotonic() > deadline:
            return free
        time.sleep(0.25)


def actor_pool_size(threads: int, actors: int | None, memory: int) -> int:
    """How many actors of `threads` CPUs and `memory` bytes the cluster holds with RESERVED_CPUS left free.

    Counted on the CPUs free now: what other jobs (or the leftovers of a
    failed one) hold is not there for this pool. actors=None: as many as fit.
    An explicit number that would leave no CPU for reading and writing is an
    error: that job would hang.
    """
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    total = free_cpus(sum(node.get("CPU", 0) for node in nodes))
    fit = sum(min(int(node.get("CPU", 0) // threads), int(node.get("memory", 0) // memory)) for node in nodes)
    most = min(fit, int((total - RESERVED_CPUS) // threads))
    if most < 1:
        raise Minie5Error(f"the Ray cluster has {total:g} CPUs free: no actor of {threads} thread(s) and "
                          f"{memory / 2**30:.1f} GiB fits and leaves {RESERVED_CPUS} CPU for reading and writing, "
                          f"without which the job would hang (ray-project/ray#44687); use fewer threads per actor "
                          f"or a larger cluster")
    if actors is None:
        return most
    if actors > most:
        raise Minie5Error(f"{actors} actors of {threads} thread(s) do not fit in the Ray cluster ({total:g} CPUs free) "
                          f"with {RESERVED_CPUS} CPU left for reading and writing, without which the job would "
                          f"hang (ray-project/ray#44687): at most {most}")
    return actors


def fail_on_errored_blocks(ds) -> None:
    """max_errored_blocks = 0 in the dataset's context: a non-zero value drops failed blocks without a word."""
    for context in {id(c): c for c in (ds.context, ray.data.DataContext.get_current())}.values():
        if context.max_errored_blocks != 0:
            warnings.warn(f"minie5: DataContext.max_errored_blocks was {context.max_errored_blocks}, set to 0: a "
                          f"failed block must fail the job, not disappear from the output", RuntimeWarning,
                          stacklevel=3)
            context.max_errored_blocks = 0


def embed_dataset(ds, model: str, *, column: str = "text", output_column: str = "embedding",
                  prefix: str | None = None, normalize: bool | None = None, max_length: int | None = None,
                  long: str = "truncate", batch_size: int = 32, threads_per_actor: int = 1,
                  actors: int | None = None, memory: int | None = None, rows_per_block: int = ROWS_PER_BLOCK,
                  matmul: str = "auto", quantize: str | None = None, revision: str | None = None, stats=None,
                  restart_actors: bool = True):
    """ds with `output_column` added to every row: the embedding of its `column`, on an actor pool.

    A lazy Dataset, like every Ray Data transform; write or iterate it to run
    the job. Row order is not kept. model: a hub id (fetched on each node) or
    a directory that exists at the same path on every node. Options as in
    Model.encode; quantize (None or "int8") as in minie5.load.
    threads_per_actor: Numba threads (and CPUs) per actor.
    actors: the pool size, by default as many as the cluster holds while
    leaving a CPU free (see actor_pool_size). memory: bytes per actor, by
    default actor_memory(model). stats: a JobStats actor handle, or None.
    restart_actors: Ray Data's default, True, restarts an actor that died and
    retries its tasks on it; on a cluster that lost a node, a restart may find
    no CPU free and those tasks wait forever. False fails the job instead (the
    `minie5 embed --ray` command then runs another attempt on the rows left).
    """
    for name, value in [("batch_size", batch_size), ("threads_per_actor", threads_per_actor),
                        ("rows_per_block", rows_per_block), ("actors", actors or 1)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if long not in LONG_MODES:
        raise ValueError(f"long must be one of {LONG_MODES}, got {long!r}")
    check_quantize(quantize)
    if not ray.is_initialized():
        ray.init()
    local_dir = is_local_dir(str(model))
    model = str(Path(model).expanduser().absolute()) if local_dir else str(model)  # actors run in other directories
    memory = memory or actor_memory(model, revision)
    pool = actor_pool_size(threads_per_actor, actors, memory)
    fail_on_errored_blocks(ds)
    embedder = dict(model=model, column=column, output_column=output_column, threads=threads_per_actor,
                    revision=revision, matmul=matmul, quantize=quantize, local_dir=local_dir, stats=stats,
                    job=uuid.uuid4().hex, prefix=prefix,
                    normalize=normalize, max_length=max_length, long=long, batch_size=batch_size)
    restarts = {} if restart_actors else {"max_restarts": 0}  # Ray 2.60 has no named parameter for it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Ray 2.60: "`ray_remote_args` is deprecated"
        return ds.repartition(target_num_rows_per_block=rows_per_block).map_batches(
            Embedder, batch_size=rows_per_block, batch_format="pyarrow", fn_constructor_kwargs=embedder,
            compute=ray.data.ActorPoolStrategy(size=pool, max_tasks_in_flight_per_actor=2),  # no hoarding of blocks
            num_cpus=threads_per_actor, memory=memory,
            runtime_env={"env_vars": {"NUMBA_NUM_THREADS": str(threads_per_actor)}},  # Numba's pool: the CPUs
            **restarts)
