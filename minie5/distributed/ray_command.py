"""`minie5 embed --ray local|auto|ADDRESS -i INPUT -o OUTDIR`: a corpus through Ray Data into Parquet files.

    minie5 embed --ray local -i corpus/ -o vectors/ --prefix passage              # a one-node cluster here
    minie5 embed --ray auto -i 'corpus/*.jsonl' --id-field doc_id -o vectors/     # join a running cluster
    minie5 embed --ray auto -i 'corpus/*.jsonl' --id-field doc_id -o vectors/ --resume   # after a kill

The job, step by step:
  1. the input files are listed and cut into shards (shards.py), and OUTDIR is
     checked: empty, or with --resume holding this very job's output;
  2. every shard is scanned by a Ray task: rows counted, bad rows reported
     with their file and line, ids collected and checked for duplicates;
  3. with --resume, the ids already in OUTDIR are left out;
  4. Ray Data reads the shards, embeds them on an actor pool
     (distributed.embed_dataset) and writes Parquet files of id, embedding and
     the --keep-columns to OUTDIR;
  5. the ids in OUTDIR are counted against the input's: the command fails
     unless every id is there exactly once.

OUTDIR/_minie5_job.json records the job (inputs, model, options), so that
--resume continues only the job that wrote OUTDIR. Parquet files that a
killed writer left unreadable are moved to OUTDIR/_minie5_partial/ and
redone. Row order in the files is not the input's: the id is the key.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

# The first import raises MissingExtraError without ray:
from .ray_data import (RESERVED_CPUS, actor_memory, actor_pool_size, embed_dataset, is_local_dir, job_stats,
                       peak_rss)
from ..errors import InputError, Minie5Error
from ..io.files import DEFAULT_FIELD, describe_differences

import numpy as np  # noqa: E402 (after the import that names the missing extra)
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402
import ray.data  # noqa: E402

from . import shards as sh # noqa: E402
from . import id_index  # noqa: E402
from .id_index import IdIndex  # noqa: E402

MANIFEST = "_minie5_job.json"
PARTIAL_DIR = "_minie5_partial"
SHOWN_IDS = 5  # ids named in an error message
# Failures of the cluster rather than of the job: another attempt goes on where this one stopped.
RETRIED_ERRORS = tuple(getattr(ray.exceptions, name) for name in (
    "ActorDiedError", "ActorUnavailableError", "NodeDiedError", "ObjectLostError", "OwnerDiedError",
    "WorkerCrashedError", "ObjectReconstructionFailedError", "OutOfMemoryError") if hasattr(ray.exceptions, name))
MAX_ATTEMPTS = 4
RETRY_PAUSE = 5  # seconds between a failed attempt and the next
FIGURES_WAIT = 10  # seconds the driver waits for the actors' last figures of an attempt (sent without waiting)
# The stages of the driver's work, timed and printed at the end (scripts/ray_scale.py reads them).
STAGES = ("scan", "id checks", "rows already done", "writing", "de-duplication", "summary")


# ---------------------------------------------------------------- OUTDIR
class OutputDir:
    """OUTDIR: the Parquet files of one job, and the manifest that says which job."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.manifest = self.path / MANIFEST
        self._known = {}  # file name -> ((size, mtime, inode), input rows of its ids): what a pass of this run found

    def files(self) -> list[Path]:
        """The Parquet files written so far (names starting with "." or "_" are not output)."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_")))

    def check(self, job: dict, resume: bool) -> None:
        """OUTDIR must be new or empty, or with resume hold this job's output; InputError otherwise."""
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"-o {self.path}: not a directory (with --ray, -o names a directory of Parquet files)")
        others = [p.name for p in sorted(self.path.iterdir()) if p.name != MANIFEST] if self.path.is_dir() else []
        recorded = self._read_manifest()
        if not resume:
            if recorded is not None:
                raise InputError(f"-o {self.path}: holds the output of a minie5 job ({MANIFEST}); add --resume to "
                                 f"continue it, or choose an empty directory")
            if others:
                raise InputError(f"-o {self.path}: not empty ({', '.join(others[:3])}"
                                 f"{', ...' if len(others) > 3 else ''}); choose an empty or new directory")
            return
        if recorded is None:
            if others:
                raise InputError(f"-o {self.path}: holds files that no minie5 job wrote (no {MANIFEST}: "
                                 f"{', '.join(others[:3])}); --resume continues only a minie5 job's output")
            return
        differs = describe_differences(recorded, job)
        if differs:
            raise InputError(f"-o {self.path}: holds the output of another job ({differs}); --resume "
                             f"continues only the same command on the same input")

    def _read_manifest(self) -> dict | None:
        if not self.manifest.is_file():
            return None
        try:
            return json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"{self.manifest}: unreadable ({e}); it records which job wrote the directory") from None

    def start(self, job: dict) -> None:
        """Create OUTDIR if needed and record the job (atomically: the file is complete or absent)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.manifest.exists():
            tmp = self.path / f".{MANIFEST}.{os.getpid()}"
            tmp.write_text(json.dumps(job, indent=1), encoding="utf-8")
            os.replace(tmp, self.manifest)

    def written_ids(self, paths: list | None = None) -> tuple[list, list]:
        """[(file, its id column)] of every readable output file (or of paths), and the unreadable files, moved aside.

        A file is unreadable when its writer was killed before it wrote the
        footer: it goes to _minie5_partial/, and its rows count as not written.
        """
        ids, moved = [], []
        for path in self.files() if paths is None else paths:
            try:  # one file, one column, in this thread (pq.read_table's dataset scan, read-ahead and thread
                # pool take 1.5-2x the time for a column of 10,000 ids, and wait on other threads)
                with pq.ParquetFile(path, pre_buffer=False) as parquet:
                    ids.append((path, parquet.read(columns=[sh.ID_COLUMN], use_threads=False).column(sh.ID_COLUMN)))
            except (OSError, pa.ArrowException):
                (self.path / PARTIAL_DIR).mkdir(exist_ok=True)
                os.replace(path, self.path / PARTIAL_DIR / path.name)
                moved.append(path.name)
        return ids, moved

    def found_rows(self, input_ids: IdIndex | None, rows: int) -> tuple[list, list, list, list]:
        """(files, found, unexpected, moved): every readable output file in name order, the input row of each of
        its ids (one array per file, -1 for an id that is not in the input), up to SHOWN_IDS such ids, and the
        unreadable files, moved aside (written_ids).

        Only the files that are new or changed (size, modification time, inode) since an earlier pass of this
        run are read and looked up: after a job, the passes for rows already done, de-duplication and the
        summary meet the same files, and only the first of them needs their ids. A rewritten file (drop_rows
        replaces it) is read again. A file holding ids that are not in the input is never remembered.
        """
        files, fresh, known = self.files(), [], {}
        for path in files:
            try:
                stat = path.stat()
                key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
            except OSError:
                key = None  # gone: written_ids says so
            seen = self._known.get(path.name)
            if key is not None and seen is not None and seen[0] == key:
                known[path.name] = seen
            else:
                fresh.append((path, key))
        per_file, moved = self.written_ids([path for path, _ in fresh])
        new_rows = rows_of_files(per_file, input_ids, rows)
        unexpected = []
        keys = {path.name: key for path, key in fresh}
        for (path, column), file_rows in zip(per_file, new_rows):
            if len(file_rows) and file_rows.min() < 0:
                if len(unexpected) < SHOWN_IDS:
                    unexpected += ids_not_in_input(column, file_rows)
            elif keys[path.name] is not None:
                known[path.name] = (keys[path.name], file_rows)
        self._known = known  # the files of this pass only: a file moved aside is forgotten
        by_name = {path.name: file_rows for (path, _), file_rows in zip(per_file, new_rows)}
        readable = [path for path in files if path.name in by_name or path.name in known]
        found = [by_name[path.name] if path.name in by_name else known[path.name][1] for path in readable]
        return readable, found, unexpected[:SHOWN_IDS], moved

    def drop_rows(self, path: Path, keep: np.ndarray) -> None:
        """Rewrite one output file with only the rows where keep is True (atomically: a new file, renamed)."""
        table = pq.read_table(path).filter(pa.array(keep))
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        pq.write_table(table, tmp)
        os.replace(tmp, path)


# ---------------------------------------------------------------- ids
# Bookkeeping in time linear in the rows: the input's --id-field values are hashed once per command, at the id
# checks (id_index.IdIndex), and every pass looks each output file's ids up in that index, whatever the number
# of files; ids stay in Arrow and NumPy arrays (the driver's memory per million ids is measured in
# docs/scale-out.md). A pass keeps the rows it finds file by file, as views where it can, and marks them in one
# bool per input row: at millions of rows a pass costs what it allocates, so it allocates as little as it can.
def rows_of(written: pa.ChunkedArray, input_ids: IdIndex | None, rows: int) -> np.ndarray:
    """The input row of each id of one file's id column, -1 for an id that is not in the input."""
    if input_ids is not None:
        return input_ids.rows_of(written)
    # the ids are the row numbers: the column as it is (a view of Arrow's buffer when it is one chunk), unless
    # it holds other numbers
    if not pa.types.is_integer(written.type):
        return np.full(len(written), -1, dtype=np.int64)
    numbers = written.to_numpy()  # ids are never null
    outside = (numbers < 0) | (numbers >= rows)
    if outside.any():
        numbers = numbers.astype(np.int64)  # a copy to mark
        numbers[outside] = -1
    return numbers


def rows_of_files(per_file: list, input_ids: IdIndex | None, rows: int) -> list:
    """The input row of every id of OUTDIR's files (-1: not in the input): one array per file, in name order."""
    return [rows_of(written, input_ids, rows) for _, written in per_file]


def ids_not_in_input(column: pa.ChunkedArray, file_rows: np.ndarray) -> list:
    """Up to SHOWN_IDS ids of one file's id column whose input row is -1 (not in the input)."""
    return pc.filter(column, pa.array(file_rows < 0)).slice(0, SHOWN_IDS).to_pylist()


def in_input(found: list) -> list:
    """found (one array of input rows per file) without its -1 entries, the ids that are not in the input."""
    return [file_rows[file_rows >= 0] if len(file_rows) and file_rows.min() < 0 else file_rows for file_rows in found]


def written_rows(per_file: list, input_ids: IdIndex | None, rows: int) -> tuple[list, list]:
    """The input rows of the ids in OUTDIR, one array per file (a row may repeat; ids not in the input are
    left out), and up to SHOWN_IDS ids that are not in the input. (The command's passes use
    OutputDir.found_rows, which reads only the files that changed.)"""
    found = rows_of_files(per_file, input_ids, rows)
    unexpected = []
    for (_, column), file_rows in zip(per_file, found):
        if len(unexpected) < SHOWN_IDS and len(file_rows) and file_rows.min() < 0:
            unexpected += ids_not_in_input(column, file_rows)
    return in_input(found), unexpected[:SHOWN_IDS]


def count_rows(found: list, rows: int) -> tuple[np.ndarray, int]:
    """bool [rows]: the input rows that found (arrays of input rows, -1 for none) holds, and how many of its
    rows are a second (or later) copy of one. One mark per row, not a count per row (np.bincount's int64
    array is 8x the memory); counting each row's copies is left to the rare job that has repeats."""
    seen = np.zeros(rows, dtype=bool)
    total = 0
    for file_rows in found:
        if len(file_rows) and file_rows.min() < 0:
            file_rows = file_rows[file_rows >= 0]
        seen[file_rows] = True
        total += len(file_rows)
    return seen, total - int(np.count_nonzero(seen))


def id_of(row: int, input_ids: IdIndex | None):
    """The id of an input row: the row number, or its --id-field value."""
    return int(row) if input_ids is None else input_ids.ids[int(row)].as_py()


def collect_ids(shards: list, scans: list, spec: sh.ReadSpec) -> IdIndex | None:
    """The --id-field values of every row, in row order, hashed once (IdIndex); InputError on a duplicate,
    naming both rows."""
    if spec.id_field is None:
        return None
    typed = [(scan.ids.type, shard) for shard, scan in zip(shards, scans) if scan.ids is not None]
    if not typed:
        return IdIndex(pa.array([], type=pa.int64()))
    for id_type, shard in typed[1:]:
        if id_type != typed[0][0]:
            kind = {True: "integers", False: "strings"}
            raise InputError(f"--id-field {spec.id_field}: the ids are {kind[pa.types.is_integer(typed[0][0])]} in "
                             f"{typed[0][1].path} and {kind[pa.types.is_integer(id_type)]} in {shard.path}; they "
                             f"must be of one type")
    ids = pa.chunked_array([scan.ids for scan in scans if scan.ids is not None]).combine_chunks()
    index = IdIndex(ids)
    again = index.repeated()
    if len(again):  # the first row whose id came before: name it and that earlier row
        second = int(again[0])
        first = int(index.rows_of(ids.slice(second, 1))[0])
        repeated = len(pc.unique(ids.take(pa.array(again))))
        raise InputError(f"--id-field {spec.id_field}: the id {ids[second].as_py()!r} appears more than once: "
                         f"{sh.describe_row(shards, spec, first)} and {sh.describe_row(shards, spec, second)}"
                         f" ({repeated} id{'s' if repeated > 1 else ''} repeated); ids must be unique")
    return index


# ---------------------------------------------------------------- the job
def job_record(args, inputs: list[str], spec: sh.ReadSpec) -> dict:
    """What OUTDIR's manifest records: the inputs and everything that changes the vectors."""
    model = args.model
    files = []
    for path in inputs:
        stat = os.stat(path)
        files.append({"path": str(Path(path).absolute()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return {"minie5_job": 1, "inputs": files, "format": spec.format, "field": spec.field, "id_field": spec.id_field,
            "keep_columns": list(spec.keep), "errors": spec.errors,
            "model": str(Path(model).expanduser().absolute()) if is_local_dir(model) else model,
            "quantize": args.quantize, "prefix": args.prefix, "normalize": not args.no_normalize,
            "max_length": args.max_length, "long": args.long}


def connect(address: str, quiet: bool) -> bool:
    """Join or start the cluster; True when this process started it (and stops it at the end)."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled"
    options = dict(logging_level=logging.WARNING, configure_logging=True)
    if address == "local":  # one node, every core for actors and a logical CPU more for reading and writing
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ray.init(address="local", num_cpus=cores + RESERVED_CPUS, include_dashboard=False, **options)
    else:
        try:
            ray.init(address=address, **options)
        except ConnectionError as e:
            raise Minie5Error(f"--ray {address}: no Ray cluster to join ({e}); start one with `ray start --head`, "
                              f"or use --ray local") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = not quiet and sys.stderr.isatty()
    return address == "local"


def scan_all(shard_list: list, spec: sh.ReadSpec) -> list:
    """Every shard scanned by a Ray task (where the files are read from the shared file system)."""
    scan = ray.remote(num_cpus=1, max_retries=3)(sh.scan_shard)
    return ray.get([scan.remote(shard, spec) for shard in shard_list])


def read_shards(batch: pa.Table, spec: sh.ReadSpec, keep_schema) -> pa.Table:
    """map_batches function: a batch of shard descriptions -> their rows (id, text, kept columns)."""
    tables = []
    for item in batch.to_pylist():
        skip = item.pop("skip")
        shard = sh.Shard(**item)
        mask = None if skip is None else np.unpackbits(np.frombuffer(skip, np.uint8), count=shard.rows).astype(bool)
        tables.append(sh.read_shard(shard, spec, keep_schema, mask))
    return pa.concat_tables(tables)


def shard_items(shard_list: list, done: np.ndarray | None) -> list:
    """The shards still to embed, as rows for ray.data.from_items: the shard and its done rows (packed bits)."""
    items = []
    for shard in shard_list:
        mask = None if done is None else done[shard.first_row:shard.first_row + shard.rows]
        if shard.rows == 0 or (mask is not None and mask.all()):
            continue
        item = {name: getattr(shard, name) for name in ("path", "start", "stop", "first_line", "first_row", "rows")}
        item["skip"] = np.packbits(mask).tobytes() if mask is not None and mask.any() else None
        items.append(item)
    return items


def info(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"minie5: {message}", file=sys.stderr, flush=True)


def run(args) -> int:
    """The `minie5 embed --ray` command (arguments checked by cli/main.py); returns the exit code."""
    inputs = sh.list_inputs(args.input)
    spec = sh.ReadSpec(format=sh.input_format(inputs, args.field), field=args.field or DEFAULT_FIELD,
                       id_field=args.id_field, keep=tuple(args.keep_columns), errors=args.errors)
    sh.check_columns(spec)
    outdir = OutputDir(args.output)
    job = job_record(args, inputs, spec)
    outdir.check(job, args.resume)
    shard_list = sh.plan_shards(inputs, spec)  # Parquet schemas are checked here
    started_here = connect(args.ray, args.quiet)
    try:
        with system_allocator():
            return _run_job(args, spec, inputs, shard_list, outdir, job)
    except KeyboardInterrupt:
        info(f"interrupted: the rows written so far stay in {outdir.path}; the same command with --resume "
             f"embeds the others")
        raise
    finally:
        if started_here:
            ray.shutdown()


class Stages:
    """The driver's wall time, CPU time and peak RSS per stage of the job (STAGES), printed in one line at the end.

    The CPU time is the driver's main thread's (time.thread_time): the work of
    the stage itself, without Ray's threads in the process and without the
    waits of a machine that other work shares. The gc time is Python's cyclic
    garbage collector's, in any thread of the process (it holds the GIL, so
    it stops the main thread too): its full collections walk every Python
    object the process holds, Ray Data's state of the job included.
    """

    def __init__(self):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.cpu_seconds = dict.fromkeys(STAGES, 0.0)
        self.gc_seconds = dict.fromkeys(STAGES, 0.0)
        self.peak_rss = dict.fromkeys(STAGES, 0)
        self._collecting_since = None
        self._collected = 0.0  # seconds in the collector while a stage was timed

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._collecting_since = time.perf_counter()
        elif self._collecting_since is not None:
            self._collected += time.perf_counter() - self._collecting_since
            self._collecting_since = None

    @contextlib.contextmanager
    def timing(self, stage: str):
        gc.callbacks.append(self._on_gc)
        started, cpu, collected = time.perf_counter(), time.thread_time(), self._collected
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started
            self.cpu_seconds[stage] += time.thread_time() - cpu
            self.gc_seconds[stage] += self._collected - collected
            self.peak_rss[stage] = peak_rss()  # the process's high-water mark when the stage ends
            gc.callbacks.remove(self._on_gc)

    def line(self) -> str:
        return "driver: " + ", ".join(f"{stage} {self.seconds[stage]:.3f} s (cpu {self.cpu_seconds[stage]:.3f} s, "
                                      f"gc {self.gc_seconds[stage]:.3f} s, peak RSS {self.peak_rss[stage] / 2**20:.0f}"
                                      f" MiB)" for stage in STAGES)


@contextlib.contextmanager
def system_allocator():
    """pyarrow's buffers from malloc, and numpy's large arrays on 4 KiB pages, while the driver keeps its books;
    then the settings they had before.

    pyarrow's default pool (mimalloc) asks the kernel for transparent huge
    pages and hands idle memory back soon after. The driver's passes read one
    small id column per file, so each of them faulted in, and zeroed, 2 MiB
    at a time: after a job of 2 M rows the first passes spent 2-4x their
    time in the kernel (clear_page_erms under do_huge_pmd_anonymous_page, in
    perf). malloc's 4 KiB pages cost what is touched. numpy asks for huge
    pages too (madvise) for every array of 4 MiB or more: where the kernel
    compacts memory to find them (transparent_hugepage/defrag "madvise", a
    common default), hashing 2 M ids (id_index) took 2.5x its time on a fresh
    array of 16 MiB, 0.19 against 0.08 s per million ids.
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    hugepages = numpy_hugepages(False)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
        if hugepages is not None:
            numpy_hugepages(hugepages)


def numpy_hugepages(enabled: bool) -> bool | None:
    """Whether numpy advises huge pages for large arrays (NUMPY_MADVISE_HUGEPAGE at import): set it, return the
    setting before; None where this numpy has no such switch."""
    core = getattr(np, "_core", None) or getattr(np, "core", None)  # numpy 2, numpy 1
    switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    return None if switch is None else bool(switch(enabled))


def _run_job(args, spec, inputs, shard_list, outdir: OutputDir, job: dict) -> int:
    quiet = args.quiet
    stages = Stages()
    # the id index's kernels load while the driver waits for the scan (their first call takes about 0.3 s)
    warming = threading.Thread(target=id_index.warm_up, daemon=True) if spec.id_field else None
    if warming is not None:
        warming.start()
    with stages.timing("scan"):
        scans = scan_all(shard_list, spec)
        shard_list = sh.locate(shard_list, scans, spec)  # raises on the first bad row
        warn_replaced(shard_list, scans, spec)
        rows = sum(scan.rows for scan in scans)
        keep_schema = keep_columns_schema(inputs, shard_list, scans, spec)
    with stages.timing("id checks"):
        if warming is not None:
            warming.join()  # (a wait here, if the scan was quicker, counts as the id checks' time)
        input_ids = collect_ids(shard_list, scans, spec)
        del scans  # their ids are in input_ids now
    info(f"{rows} rows in {len(inputs)} file{'s' if len(inputs) > 1 else ''} ({len(shard_list)} shards)", quiet)

    outdir.start(job)
    with stages.timing("rows already done"):
        done = done_rows(outdir, input_ids, rows, quiet)
    before = int(done.sum())
    if args.resume:
        info(f"resuming: {before} of {rows} rows are in {outdir.path}; embedding the other {rows - before}", quiet)
    actors = []  # what each actor did, over all attempts
    started = time.perf_counter()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        items = shard_items(shard_list, done)
        if not items:
            break
        pool = args.actors
        if attempt > 1:  # a new Ray job: Ray ends the failed one's actors, which would hold their CPUs
            ray.shutdown()
            connect(args.ray, quiet)
            pool = actors_left(args, quiet)
        stats = job_stats()
        failed = False
        try:
            with stages.timing("writing"):
                embed_rows(args, spec, keep_schema, items, outdir, stats, pool)
        except Exception as e:  # noqa: BLE001 (sorted out by job_error)
            error = job_error(e, retry=attempt < MAX_ATTEMPTS)
            if error is not None:
                actors += attempt_figures(stats, attempt, 0)
                raise error from e
            failed = True
            info(f"attempt {attempt} failed ({one_line(e)}); in {RETRY_PAUSE} s attempt {attempt + 1} embeds the "
                 f"rows not yet in {outdir.path}")
            time.sleep(RETRY_PAUSE)  # dead tasks and nodes settle; no write of this attempt is left running
        with stages.timing("rows already done"):
            was = int(done.sum())
            done = done_rows(outdir, input_ids, rows, quiet)
        actors += attempt_figures(stats, attempt, 0 if failed else int(done.sum()) - was)
    seconds = time.perf_counter() - started
    with stages.timing("de-duplication"):
        removed = remove_duplicates(outdir, input_ids, rows)
    with stages.timing("summary"):
        code = summarize(outdir, input_ids, rows, before, actors, seconds, removed, quiet)
    info(stages.line())
    return code


def attempt_figures(stats, attempt: int, rows_written: int) -> list:
    """What the actors of one attempt did (distributed.job_stats); [] if those figures died with a node.

    The actors send their figures without waiting for them: the driver waits
    up to FIGURES_WAIT seconds for them to cover the rows the attempt wrote.
    """
    deadline = time.monotonic() + FIGURES_WAIT
    try:
        while True:
            figures = ray.get(stats.summary.remote())
            if sum(actor["rows"] for actor in figures) >= rows_written or time.monotonic() > deadline:
                return figures
            time.sleep(0.1)
    except ray.exceptions.RayError as e:
        info(f"the figures of attempt {attempt}'s actors were lost ({one_line(e)}); the rows were not")
        return []


def done_rows(outdir: OutputDir, input_ids, rows: int, quiet: bool) -> np.ndarray:
    """bool [rows]: the rows whose id is in OUTDIR. Unfinished files are moved aside (and said so)."""
    _, found, unexpected, moved = outdir.found_rows(input_ids, rows)
    if moved:
        info(f"{len(moved)} unfinished file{'s' if len(moved) > 1 else ''} of a stopped run moved to "
             f"{outdir.path / PARTIAL_DIR} (their rows are embedded again)", quiet)
    if unexpected:
        raise InputError(f"-o {outdir.path}: holds ids that are not in the input ({', '.join(map(repr, unexpected))}"
                         f"); was the input changed?")
    return count_rows(found, rows)[0]


def actors_left(args, quiet: bool) -> int | None:
    """--actors for an attempt after a failed one: no more than the cluster holds now.

    A lost node takes its CPUs with it. The first attempt refuses an --actors
    that does not fit; a later one runs the actors that still fit, and says so,
    rather than give up the rows it was started to finish.
    """
    if args.actors is None:
        return None  # as many as fit, counted again by embed_dataset
    fit = actor_pool_size(args.threads_per_actor, None, actor_memory(args.model))
    if fit < args.actors:
        info(f"--actors {args.actors}: the cluster now holds {fit} actor{'s' if fit > 1 else ''} of "
             f"{args.threads_per_actor} thread(s); this attempt runs {fit}", quiet)
        return fit
    return args.actors


def embed_rows(args, spec: sh.ReadSpec, keep_schema, items: list, outdir: OutputDir, stats,
               actors: int | None) -> None:
    """One Ray Data job: read the shards, embed their rows on an actor pool, write Parquet files to OUTDIR.

    Actors are not restarted (restart_actors=False): after a node is lost, a
    restarted actor may find no CPU left and its tasks would wait forever;
    instead the job fails, and the next attempt embeds what is missing.
    """
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(read_shards, batch_size=1, batch_format="pyarrow",
                        fn_kwargs=dict(spec=spec, keep_schema=keep_schema))
    ds = embed_dataset(ds, args.model, column=spec.field, quantize=args.quantize,
                       prefix=None if args.prefix == "none" else args.prefix,
                       normalize=False if args.no_normalize else None, max_length=args.max_length, long=args.long,
                       batch_size=args.batch_size, threads_per_actor=args.threads_per_actor, actors=actors,
                       stats=stats, restart_actors=False)
    ds.select_columns([sh.ID_COLUMN, "embedding", *spec.keep]).write_parquet(
        str(outdir.path.absolute()), min_rows_per_file=args.rows_per_file)



def causes(error: BaseException):
    """The error and the errors behind it (Ray wraps what a task raised)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__


def job_error(error: Exception, retry: bool) -> Exception | None:
    """What to raise for a failed Ray job: minie5's own error (a bad row, a missing model directory) as it is;
    None for a failure of the cluster (a lost actor or node) when another attempt may follow."""
    for cause in causes(error):
        if isinstance(cause, Minie5Error):
            return cause
    if retry and any(isinstance(cause, RETRIED_ERRORS) for cause in causes(error)):
        return None
    return Minie5Error(f"the Ray job failed: {one_line(error)}")


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def remove_duplicates(outdir: OutputDir, input_ids, rows: int) -> int:
    """Keep one row per id: a retried write may have written rows that another file holds too. Returns rows dropped.

    Both copies are the same text embedded by the same model; the first file
    in name order keeps its row, the others are rewritten without it.
    """
    files, found, _, _ = outdir.found_rows(input_ids, rows)  # each file's ids, in name order
    if count_rows(found, rows)[1] == 0:
        return 0  # the usual case, found in linear time: no id written twice
    starts = np.concatenate([[0], np.cumsum([len(file_rows) for file_rows in found])]).astype(np.int64)
    found = np.concatenate(found)  # all files' ids, in name order
    keep = found < 0  # ids not in the input are summarize's to report
    keep[np.unique(found, return_index=True)[1]] = True  # the first row of each id over all files
    removed = 0
    for number, path in enumerate(files):
        keep_here = keep[starts[number]:starts[number + 1]]
        if not keep_here.all():
            outdir.drop_rows(path, keep_here)
            removed += int((~keep_here).sum())
    return removed


def warn_replaced(shard_list: list, scans: list, spec: sh.ReadSpec) -> None:
    """--errors replace: one warning per file whose lines had bytes that are not UTF-8."""
    by_file = {}
    for shard, scan in zip(shard_list, scans):
        by_file.setdefault(shard.path, []).extend(shard.first_line + row for row in scan.replaced or [])
    for path, lines in by_file.items():
        if lines:
            shown = ", ".join(str(n) for n in lines[:10]) + (", ..." if len(lines) > 10 else "")
            print(f"minie5: warning: {path}: {len(lines)} line{'s' if len(lines) > 1 else ''} had bytes that are not "
                  f"valid UTF-8, embedded with U+FFFD in their place (line{'s' if len(lines) > 1 else ''} {shown})",
                  file=sys.stderr, flush=True)


def keep_columns_schema(inputs: list, shard_list: list, scans: list, spec: sh.ReadSpec):
    """One type per kept column: from the Parquet schemas, or from the JSON values every shard found."""
    if not spec.keep:
        return None
    if spec.format == "parquet":
        return sh.keep_schema_of(inputs, spec)
    present = {name: sum(scan.keep_present[name] for scan in scans if scan.keep_present) for name in spec.keep}
    for name, count in present.items():
        if count == 0:
            raise InputError(f"--keep-columns {name}: no row of the input has a {name!r} field")
    return sh.unify_schemas([scan.keep_schema for scan in scans if scan.keep_schema is not None],
                     [shard.path for shard, scan in zip(shard_list, scans) if scan.keep_schema is not None])


def summarize(outdir: OutputDir, input_ids, rows: int, before: int, actors: list, seconds: float, removed: int,
              quiet: bool) -> int:
    """Count OUTDIR's ids against the input's, print the closing summary; 0 if every id is there once, else 2."""
    _, found, unexpected, moved = outdir.found_rows(input_ids, rows)
    found = in_input(found)
    seen, copies = count_rows(found, rows)
    missing = np.flatnonzero(~seen)
    repeated = np.flatnonzero(np.bincount(np.concatenate(found), minlength=rows) > 1) if copies else missing[:0]
    embedded = sum(actor["rows"] for actor in actors)
    truncated = sum(actor["truncated"] for actor in actors)
    if truncated:
        print(f"minie5: warning: {truncated} of {embedded} texts were longer than the maximum length and were "
              f"truncated (--long window embeds all of a text)", file=sys.stderr, flush=True)
    for actor in actors:
        info(f"actor {actor['actor']}: {actor['rows']} rows in {actor['seconds']:.1f} s of embedding, "
             f"{'/'.join(map(str, actor['threads']))} thread(s), peak RSS {actor['peak_rss'] / 2**20:.0f} MiB", quiet)
    if removed:
        info(f"{removed} rows written twice by retried tasks were removed (each id keeps one row)")
    todo = rows - before
    rate = f"{todo / seconds:.1f} texts/s" if todo and seconds > 0 else "nothing to embed"
    info(f"rows read: {todo} (of {rows}; {before} were already in {outdir.path}), rows embedded: {embedded} by "
         f"{len(actors)} actor{'s' if len(actors) != 1 else ''}, rows written: {sum(map(len, found)) - before} in "
         f"{seconds:.1f} s ({rate})")
    problems = []
    if len(missing):
        problems.append(f"{len(missing)} ids missing ({', '.join(repr(id_of(r, input_ids)) for r in missing[:SHOWN_IDS])})")
    if len(repeated):
        problems.append(f"{len(repeated)} ids written more than once "
                        f"({', '.join(repr(id_of(r, input_ids)) for r in repeated[:SHOWN_IDS])})")
    if unexpected or moved:
        problems.append(f"{len(unexpected)} ids not in the input and {len(moved)} unreadable files")
    if problems:
        print(f"minie5: error: {outdir.path}: {'; '.join(problems)}; run the same command with --resume to "
              f"complete it", file=sys.stderr, flush=True)
        return 2
    info(f"{outdir.path}: all {rows} ids, each exactly once")
    return 0
