"""Texts from files, embeddings to files: the reading and writing behind the command line.

Reading. A TextFile is one text per line (a plain text file), or one JSON
object per line whose `field` holds the text (JSON Lines). It is read twice:

    source = TextFile("docs.txt")            # or "-" for stdin
    n = source.scan()                        # count the texts, check every line
    for text in source.texts(): ...          # then stream them, one line at a time

scan() reads the whole input once before any embedding work, so that a bad
line (bytes that are not UTF-8, a line that is not a JSON object...) is
reported at once, with its line number, and so that the row count is known
for an .npy file written incrementally. stdin and other streams that cannot
be read twice are copied to a temporary file during the scan. Memory stays
bounded by the longest line, whatever the number of lines.

Lines end at "\\n"; a "\\r" before it (Windows files) and a UTF-8 byte order
mark at the start of the file are dropped. Every line is a text: a blank line
is the empty string, never skipped, so row i of the output is line i + 1.

Writing. NpyWriter fills a float32 [rows, dim] .npy file a block at a time
(the file is created by numpy's open_memmap; each block is mapped, written
and unmapped, so memory does not grow with the row count); write_npy() and
saving_npy() feed it the blocks Model.encode_chunks yields. write_jsonl()
writes {"index": i, "embedding": [...]} lines, write_blocks_jsonl() and
write_jsonl_file() a stream of blocks. atomic_path() makes every output file
appear under its final name only when it is complete. saved_index() reads
back an .npy file if it still fits its corpus.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    import fcntl  # POSIX: locks the partial file of a resumable output
except ImportError:  # Windows
    fcntl = None

from ..errors import InputError, json_type
from ..embedding_precision import (BINARY_PRECISIONS, SCALAR_PRECISIONS, precision_dtype, quantization_ranges, quantize_embeddings,
                       stored_width)

STDIN = "-"
STDIN_NAME = "<stdin>"
JSONL_SUFFIXES = (".jsonl", ".ndjson")
DEFAULT_FIELD = "text"
ERROR_MODES = ("strict", "replace")
BOM = b"\xef\xbb\xbf"


@dataclass
class ScanReport:
    """What TextFile.scan() found: the number of texts and the lines whose bytes were replaced."""
    texts: int = 0
    replaced_lines: list = field(default_factory=list)  # line numbers (1-based) with undecodable bytes


def is_jsonl(path: str, field_name: str | None) -> bool:
    """JSON Lines input when a --field is given or the file is named *.jsonl / *.ndjson."""
    return field_name is not None or Path(path).suffix.lower() in JSONL_SUFFIXES


class TextFile:
    """One text per line of a file or of stdin; see the module docstring."""

    def __init__(self, path: str, field_name: str | None = None, errors: str = "strict"):
        if errors not in ERROR_MODES:
            raise InputError(f"errors must be one of {ERROR_MODES}, got {errors!r}")
        self.path = path
        self.name = STDIN_NAME if path == STDIN else str(path)
        self.jsonl = is_jsonl(path, field_name)
        self.field = field_name or DEFAULT_FIELD
        self.errors = errors
        self._spool = None  # the temporary copy of a stream that cannot be read twice
        self.report = None

    # ------------------------------------------------------------ the two passes
    def scan(self) -> int:
        """Read every line once, checking it; returns the number of texts. Raises InputError on a bad line."""
        report = ScanReport()
        with self._open_for_scan() as lines:
            for number, raw in lines:
                text, replaced = self.decode_line(raw, number)
                if replaced:
                    report.replaced_lines.append(number)
                if self.jsonl:
                    self._field_of(text, number)
                report.texts += 1
        self.report = report
        return report.texts

    def texts(self):
        """The texts, one per line, in order (lazily: one line in memory at a time)."""
        with self._open_again() as f:
            for number, raw in numbered_lines(f):
                text, _ = self.decode_line(raw, number)
                yield self._field_of(text, number) if self.jsonl else text

    def texts_at(self, indices) -> dict:
        """{index: text} for the given 0-based indices (one more pass over the file)."""
        wanted = set(int(i) for i in indices)
        found = {}
        for i, text in enumerate(self.texts()):
            if i in wanted:
                found[i] = text
                if len(found) == len(wanted):
                    break
        return found

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def __enter__(self) -> "TextFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ files
    def _is_regular_file(self) -> bool:
        return self.path != STDIN and stat.S_ISREG(os.stat(self.path).st_mode)

    @contextlib.contextmanager
    def _open_for_scan(self):
        """Numbered raw lines; a stream (stdin, a pipe) is copied to a temporary file on the way."""
        if self.path != STDIN and not os.path.exists(self.path):
            raise InputError("no such file", self.path)
        if self._is_regular_file():
            with open(self.path, "rb") as f:
                yield numbered_lines(f)
            return
        stream = sys.stdin.buffer if self.path == STDIN else open(self.path, "rb")
        self._spool = tempfile.TemporaryFile(prefix="minie5-input-")
        try:
            yield numbered_lines(stream, copy_to=self._spool)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()

    @contextlib.contextmanager
    def _open_again(self):
        if self._spool is not None:
            self._spool.seek(0)
            yield self._spool
        elif self._is_regular_file():
            with open(self.path, "rb") as f:
                yield f
        else:
            raise RuntimeError(f"{self.name}: call scan() before texts()")

    # ------------------------------------------------------------ one line
    def decode_line(self, raw: bytes, number: int) -> tuple[str, bool]:
        """Bytes of one line -> (text, whether bytes were replaced). Strict mode names the bad bytes."""
        try:
            return raw.decode("utf-8"), False
        except UnicodeDecodeError as e:
            if self.errors == "replace":
                return raw.decode("utf-8", errors="replace"), True
            bad = " ".join(f"0x{b:02x}" for b in raw[e.start:e.end])
            raise InputError(f"not valid UTF-8: byte {bad} at byte {e.start + 1} of the line (fix the file, "
                             f"or pass --errors replace to embed the line with U+FFFD in place of such bytes)",
                             self.name, number) from None

    def _field_of(self, text: str, number: int) -> str:
        """One JSON Lines line -> the string in its field."""
        return self.parse_record(text, number)[self.field]

    def parse_record(self, text: str, number: int) -> dict:
        """One JSON Lines line -> its object, checked to hold a string in the text field."""
        if not text.strip():
            raise InputError(f"empty line; a JSON Lines file needs one JSON object per line, "
                             f"each with a {self.field!r} string", self.name, number)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON ({e.msg} at column {e.colno})", self.name, number) from None
        if not isinstance(value, dict):
            raise InputError(f"expected a JSON object with a {self.field!r} field, got a JSON "
                             f"{json_type(value)}", self.name, number)
        if self.field not in value:
            have = ", ".join(repr(k) for k in list(value)[:10]) or "none"
            raise InputError(f"no {self.field!r} field (fields: {have}); choose one with --field",
                             self.name, number)
        if not isinstance(value[self.field], str):
            raise InputError(f"field {self.field!r} is a JSON {json_type(value[self.field])}, expected a string",
                             self.name, number)
        return value


def numbered_lines(f, copy_to=None):
    """(line number from 1, bytes without the line end) for each line of a binary file."""
    for number, raw in enumerate(f, start=1):
        if copy_to is not None:
            copy_to.write(raw)
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM):]
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        yield number, raw


# ---------------------------------------------------------------- writing
class NpyWriter:
    """A [rows, dim] .npy file (float32 unless dtype says otherwise), filled a block of rows at a time, in order.

    numpy's open_memmap writes the header and sizes the file; each block is
    then written through a memory map of its own rows only, flushed and
    unmapped, so the process never holds more than one block of the file.
    """

    def __init__(self, path, rows: int, dim: int, dtype=np.float32, start: int = 0):
        """A new file of [rows, dim], or with start > 0 an existing one whose first `start` rows are kept."""
        array = np.lib.format.open_memmap(path, mode="r+" if start else "w+", dtype=dtype, shape=(rows, dim))
        if array.dtype != np.dtype(dtype) or array.shape != (rows, dim):  # r+ reads the header instead
            raise ValueError(f"{path}: holds {array.dtype} {list(array.shape)}, expected {np.dtype(dtype)} "
                             f"[{rows}, {dim}]")
        self.data_offset = array.offset  # bytes of header before row 0
        del array
        self.path, self.rows, self.dim, self.dtype = str(path), rows, dim, np.dtype(dtype)
        self.written = start

    def write(self, block: np.ndarray) -> None:
        """Append rows [k, dim] after those already written."""
        k = block.shape[0]
        if k == 0:
            return
        if self.written + k > self.rows:
            raise ValueError(f"{self.path}: {self.written + k} rows written to a file sized for {self.rows}")
        row_bytes = self.dim * self.dtype.itemsize
        view = np.memmap(self.path, dtype=self.dtype, mode="r+", shape=(k, self.dim),
                         offset=self.data_offset + self.written * row_bytes)
        view[:] = block
        view.flush()
        del view
        self.written += k

    def close(self) -> None:
        if self.written != self.rows:
            raise ValueError(f"{self.path}: {self.written} rows written, {self.rows} expected")


def write_jsonl(stream, block: np.ndarray, first_index: int) -> None:
    """{"index": i, "embedding": [...]} per row; each float32 value is written exactly (it reads back equal)."""
    for i, row in enumerate(block.tolist(), start=first_index):
        stream.write(json.dumps({"index": i, "embedding": row}))
        stream.write("\n")


def write_blocks_jsonl(stream, blocks) -> None:
    """Blocks of embeddings -> {"index", "embedding"} lines on a text stream, indices counted across blocks."""
    index = 0
    for block in blocks:
        write_jsonl(stream, block, index)
        index += len(block)
    stream.flush()


def write_jsonl_file(path, blocks) -> None:
    """Blocks of embeddings -> a JSON Lines file, complete or absent."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        write_blocks_jsonl(f, blocks)


def write_npy(path, blocks, rows: int, dim: int, dtype=np.float32) -> None:
    """Blocks of embeddings -> a [rows, dim] .npy file (float32 by default), written incrementally, complete
    or absent."""
    for _ in saving_npy(path, blocks, rows, dim, dtype):
        pass


def saving_npy(path, blocks, rows: int, dim: int, dtype=np.float32):
    """Yield each block once it is written to the .npy file at path, as write_npy does, for a caller that
    uses the blocks too; the file appears at path after the last block, and never if the caller stops early."""
    with atomic_path(path) as tmp:
        writer = NpyWriter(tmp, rows, dim, dtype)
        for block in blocks:
            writer.write(block)
            yield block
        writer.close()


def write_quantized_npy(path, blocks, rows: int, dim: int, precision: str, calibration=None,
                        block_rows: int = 4096) -> None:
    """Blocks of float embeddings -> a .npy file at `precision` (embedding_precision.py), complete or absent.

    binary / ubinary: [rows, dim / 8] bytes, each block packed as it comes.
    int8 / uint8: [rows, dim], on the ranges of `calibration` ([m, dim] float
    embeddings) if given, else of all the embeddings written, as
    quantize_embeddings computes them on the whole array: the floats are then
    spooled to a temporary .npy beside the output (min and max taken on the way)
    and quantised from it block by block.
    """
    dtype, width = precision_dtype(precision), stored_width(precision, dim)
    if precision in BINARY_PRECISIONS or precision == "float32":
        write_npy(path, (quantize_embeddings(block, precision) for block in blocks), rows, width, dtype)
        return
    assert precision in SCALAR_PRECISIONS, precision
    if calibration is not None:
        ranges = quantization_ranges(calibration)  # [2, dim]
        write_npy(path, (quantize_embeddings(block, precision, ranges=ranges) for block in blocks), rows, dim, dtype)
        return
    if rows == 0:  # nothing to calibrate: an empty [0, dim] file, as quantize_embeddings returns
        write_npy(path, blocks, 0, dim, dtype)
        return
    if rows == 1:
        raise InputError(f"cannot compute {precision} quantization ranges from 1 embedding: give "
                         f"--calibration FILE.npy")
    path = Path(path)
    spool = path.with_name(f".{path.name}.{os.getpid()}.float32.npy")
    low = np.full(dim, np.inf, dtype=np.float32)  # running per-dimension min and max of the embeddings
    high = np.full(dim, -np.inf, dtype=np.float32)

    def tracked(blocks):
        for block in blocks:
            if len(block):
                np.minimum(low, block.min(axis=0), out=low)
                np.maximum(high, block.max(axis=0), out=high)
            yield block

    try:
        write_npy(spool, tracked(blocks), rows, dim)
        floats = np.load(spool, mmap_mode="r")  # [rows, dim] float32
        ranges = np.vstack((low, high))  # [2, dim]: what quantize_embeddings computes on the whole array
        quantized = (quantize_embeddings(floats[start:start + block_rows], precision, ranges=ranges)
                     for start in range(0, rows, block_rows))
        write_npy(path, quantized, rows, dim, dtype)
        del floats
    finally:
        with contextlib.suppress(OSError):
            os.unlink(spool)


def read_calibration(path, dim: int) -> np.ndarray:
    """--calibration FILE.npy: float embeddings [m, dim], m >= 1; InputError naming the file otherwise."""
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise InputError(f"not a readable .npy file ({e})", path) from None
    if array.dtype.kind != "f" or array.ndim != 2 or array.shape[0] < 1:
        raise InputError(f"holds {array.dtype} {list(array.shape)}; calibration embeddings are float [m, dim]", path)
    if array.shape[1] != dim:
        raise InputError(f"holds embeddings of {array.shape[1]} dimensions, the model's have {dim}: calibrate "
                         f"with embeddings of the same model", path)
    return np.asarray(array)


# ---------------------------------------------------------------- resuming
# What a resumed job's record names, by the option that sets it (or what it is, for the input's facts).
RECORDED_AS = {"model": "--model", "quantize": "--quantize", "prefix": "--prefix", "normalize": "--no-normalize",
               "max_length": "--max-length", "long": "--long", "field": "--field", "errors": "--errors",
               "id_field": "--id-field", "keep_columns": "--keep-columns", "input": "-i", "inputs": "-i",
               "format": "input format", "input_bytes": "input size", "input_mtime_ns": "input modification time",
               "rows": "input rows", "dim": "embedding size", "minie5_job": "job record version"}


def describe_differences(then: dict, now: dict) -> str:
    """What differs between a recorded job and this one, named by option: "--quantize: None then, 'int8' now"."""
    return "; ".join(f"{RECORDED_AS.get(key, key)}: {then.get(key)!r} then, {now.get(key)!r} now"
                     for key in sorted(set(then) | set(now)) if then.get(key) != now.get(key))


# ---------------------------------------------------------------- resumable .npy
class ResumableNpy:
    """The .npy output of `minie5 embed -i FILE -o big.npy`, which a killed run's successor can continue.

    Rows go to `.big.npy.partial` beside the output, in input order; after
    each block, `.big.npy.partial.json` records how many rows are complete and
    the job's signature (the input file, the model, the options that change
    the numbers). Whatever stops the run (Ctrl-C, an error, a kill), both stay;
    a run with --resume and the same signature keeps the recorded rows and
    embeds the rest. The partial file becomes big.npy when its last row is
    written, and the record is removed. While a run writes, it holds a lock on
    the partial file, so that two runs never write one output.
    """

    def __init__(self, path, rows: int, dim: int, signature: dict):
        self.path = Path(path)
        self.partial = self.path.with_name(f".{self.path.name}.partial")
        self.record = self.path.with_name(f".{self.path.name}.partial.json")
        self.rows, self.dim = rows, dim
        self.signature = {**signature, "rows": rows, "dim": dim}
        self.done = 0  # rows complete in the partial file
        self._lock = None
        self._disposable = False  # the partial file holds nothing worth resuming (this run made or emptied it)

    def __enter__(self) -> "ResumableNpy":
        """Lock the partial file (created if absent); InputError if another process holds it."""
        self._disposable = not self.partial.exists()
        self._lock = open(self.partial, "ab")
        if fcntl is not None:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock.close()
                raise InputError(f"-o {self.path}: another minie5 process is writing {self.partial}") from None
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self._disposable and self.done == 0:  # nothing worth resuming
            for path in (self.partial, self.record):
                with contextlib.suppress(OSError):
                    path.unlink()
        self._lock.close()  # releases the lock

    def saved(self) -> tuple[int, dict | None]:
        """(rows complete, the signature they were written with) of the partial file; (0, None) if unknown."""
        try:
            record = json.loads(self.record.read_text(encoding="utf-8"))
            rows, signature = int(record["rows_done"]), record["signature"]
            array = np.load(self.partial, mmap_mode="r")
            shape_ok = array.dtype == np.float32 and array.shape == (signature["rows"], signature["dim"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, None
        return (rows, signature) if shape_ok and 0 <= rows <= signature["rows"] else (0, None)

    def start(self, resume: bool) -> tuple[int, str]:
        """The first row to embed, and a line saying why: the saved rows with resume, else 0.

        resume with a partial file of another job (another input, model or
        option) raises InputError naming what differs.
        """
        rows, signature = self.saved()
        if not resume:
            self.done = 0
            return 0, (f"{self.partial} holds {rows} of {signature['rows']} rows of an earlier run: starting "
                       f"again (--resume continues it instead)" if signature else "")
        if signature is None:
            return 0, f"nothing to resume ({self.partial} has no saved rows): embedding all {self.rows} texts"
        if signature != self.signature:
            differs = describe_differences(signature, self.signature)
            raise InputError(f"--resume: {self.partial} was written by another job ({differs}); "
                             f"run without --resume to start again")
        self.done = rows
        return rows, f"resuming: {rows} of {self.rows} rows are saved in {self.partial}"

    def write(self, blocks) -> None:
        """Append the blocks after the saved rows, recording progress after each; rename when complete."""
        writer = NpyWriter(self.partial, self.rows, self.dim, start=self.done)
        if not self.done:
            self._disposable = True  # an earlier run's rows, if any, are overwritten from here on
            self._save_record()
        for block in blocks:
            writer.write(block)
            self.done = writer.written
            self._save_record()
        writer.close()
        os.replace(self.partial, self.path)
        self.record.unlink()

    def _save_record(self) -> None:
        with atomic_path(self.record) as tmp:
            tmp.write_text(json.dumps({"rows_done": self.done, "signature": self.signature}), encoding="utf-8")


def saved_index(path: Path, corpus: str, rows: int, dim: int) -> tuple[np.ndarray | None, str]:
    """Saved embeddings of a corpus: the float32 [rows, dim] .npy file at path, memory-mapped, if it fits
    and is newer than the corpus; else None, and why not."""
    if not path.is_file():
        return None, f"{path} does not exist"
    if path.stat().st_mtime < Path(corpus).stat().st_mtime:
        return None, f"{path} is older than {corpus}"
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        return None, f"{path} is not a readable .npy file ({e})"
    if array.dtype != np.float32 or array.shape != (rows, dim):
        return None, (f"{path} holds {array.dtype} {list(array.shape)}, the corpus needs float32 "
                      f"[{rows}, {dim}] (one row per line)")
    return array, ""


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside `path`, renamed to `path` if the block succeeds and removed if it fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
