"""The input of `minie5 embed --ray`: files cut into shards, each read by one Ray task, each row with its id.

    inputs = list_inputs("corpus/*.jsonl", spec)         # the files, sorted by path, and their format
    shards = plan_shards(inputs, spec)                     # byte ranges of whole lines, or Parquet row groups
    scan = scan_shard(shard, spec)                         # on the cluster: rows, ids, the first bad row
    locate(shards, scans)                                  # on the driver: each shard's first line and first row
    table = read_shard(shard, spec, schema, skip)          # on the cluster: id, text, kept columns

A row's id is its --id-field value, or else its row number: 0-based, counted
over the files in sorted path order (for one text file, its line number - 1).
It is fixed here, when the input is split, before Ray sees a row, so it never
depends on scheduling: resuming and the final check key on it.

Every input is scanned in full before anything is embedded, as
`minie5 embed -i FILE` does: a bad row stops the job at once, with its file
and line (or Parquet row index), before hours of work. Text and JSON Lines
rows are decoded exactly as files.TextFile decodes them (a line ends at "\\n",
a "\\r" before it and a byte order mark at the start of a file are dropped, a
blank line is the empty text), so a corpus gives the same texts either way.
pyarrow is needed (it comes with `minie5[ray]`); files must be readable at the
same path on the driver and on every node (a shared file system).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError, json_type
from ..io.files import BOM, TextFile, is_jsonl

SHARD_BYTES = 32 << 20  # a text or JSON Lines shard: about this many bytes of whole lines
ID_COLUMN = "id"  # the id of every row, in the dataset and in the output
RESERVED_COLUMNS = (ID_COLUMN, "embedding")


@dataclass(frozen=True)
class ReadSpec:
    """How rows are read, the same on the driver and in every task."""
    format: str  # "text" (one text per line), "jsonl" or "parquet"
    field: str  # the text's JSON field or Parquet column; for text files, the column name "text"
    id_field: str | None  # the field or column holding each row's id; None: the row number is the id
    keep: tuple = ()  # other fields or columns copied to the output
    errors: str = "strict"  # bytes that are not UTF-8 (text, JSON Lines): "strict" or "replace"


@dataclass(frozen=True)
class Shard:
    """Part of one input file: whole lines in bytes [start, stop), or Parquet row groups [start, stop)."""
    path: str
    start: int
    stop: int
    first_line: int = 0  # the file's line number (1-based) or Parquet row index (0-based) of its first row
    first_row: int = 0  # the row number of its first row over all the input (0-based)
    rows: int = 0


class ShardError(Exception):
    """A bad row, found in a task that does not know the row's place in its file: (row within the shard, reason)."""

    def __init__(self, row: int, reason: str):
        super().__init__(row, reason)
        self.row, self.reason = row, reason


@dataclass
class ShardScan:
    """What scan_shard found in one shard."""
    rows: int = 0
    ids: pa.Array | None = None  # the --id-field values, in row order (None without --id-field)
    error: tuple | None = None  # (row within the shard, reason) of the first bad row
    replaced: list | None = None  # rows within the shard whose bytes were replaced (--errors replace)
    keep_schema: pa.Schema | None = None  # the types of the kept JSON fields in this shard
    keep_present: dict | None = None  # kept JSON field -> rows that have it


# ---------------------------------------------------------------- files
def list_inputs(spec_path: str) -> list[str]:
    """INPUT -> the files it names, sorted: a file, a directory (its files, recursively), or a glob.

    In a directory, names starting with "." or "_" are skipped, as Spark and
    Ray skip them (_SUCCESS, .crc files...).
    """
    if glob.has_magic(spec_path):
        files = sorted(p for p in glob.glob(spec_path, recursive=True) if os.path.isfile(p))
        if not files:
            raise InputError(f"-i {spec_path}: the pattern matches no file")
        return files
    path = Path(spec_path)
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and not any(
            part.startswith((".", "_")) for part in p.relative_to(path).parts))
        if not files:
            raise InputError(f"-i {spec_path}: the directory holds no input file")
        return files
    if not path.exists():
        raise InputError("no such file or directory", spec_path)
    return [str(path)]


def input_format(files: list[str], field: str | None) -> str:
    """"parquet" if the files are *.parquet, "jsonl" if JSON Lines (by suffix, or --field), else "text"."""
    def kind(path):
        if path.lower().endswith(".parquet"):
            return "parquet"
        return "jsonl" if is_jsonl(path, field) else "text"
    kinds = {path: kind(path) for path in files}
    if len(set(kinds.values())) > 1:
        first, other = files[0], next(p for p in files if kinds[p] != kinds[files[0]])
        raise InputError(f"-i: the files are of different formats: {first} is {kinds[first]}, {other} is "
                         f"{kinds[other]}; give files of one format")
    return kinds[files[0]]


def check_columns(spec: ReadSpec) -> None:
    """The names of the text, id and kept columns must not clash with each other or with id / embedding."""
    if spec.format == "text" and (spec.id_field or spec.keep):
        raise InputError("--id-field and --keep-columns need JSON Lines or Parquet input; a text file has "
                         "only its lines")
    if spec.field in RESERVED_COLUMNS:
        raise InputError(f"--field {spec.field}: {spec.field!r} is an output column; the text must have "
                         f"another name")
    if spec.id_field is not None and spec.id_field == spec.field:
        raise InputError(f"--id-field {spec.id_field}: that is the text field")
    for name in spec.keep:
        if name in RESERVED_COLUMNS or name == spec.id_field:
            raise InputError(f"--keep-columns {name}: the output always has {ID_COLUMN!r} (the id) and "
                             f"'embedding'; keep other columns")
    if len(set(spec.keep)) != len(spec.keep):
        raise InputError(f"--keep-columns {','.join(spec.keep)}: a column is named twice")


# ---------------------------------------------------------------- shards
def plan_shards(files: list[str], spec: ReadSpec, shard_bytes: int = SHARD_BYTES) -> list[Shard]:
    """The files cut into shards, in row order. Parquet: one per row group, its schema checked here."""
    shards = []
    for path in files:
        if spec.format == "parquet":
            shards += _parquet_shards(path, spec)
        else:
            shards += _line_shards(path, shard_bytes)
    return shards


def _line_shards(path: str, shard_bytes: int) -> list[Shard]:
    """Byte ranges of about shard_bytes, each ending just after a "\\n" (or at the end of the file)."""
    try:
        size = os.path.getsize(path)
        cuts = [0]
        with open(path, "rb") as f:
            while cuts[-1] + shard_bytes < size:
                f.seek(cuts[-1] + shard_bytes)
                f.readline()  # to the end of the line the cut falls in
                cuts.append(min(f.tell(), size))
    except OSError as e:
        raise InputError(f"cannot read the file: {e.strerror or e}", path) from None
    if cuts[-1] < size or size == 0:
        cuts.append(size)
    return [Shard(path, start, stop) for start, stop in zip(cuts, cuts[1:])]


def parquet_file(path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise InputError(f"not a readable Parquet file ({e})", path) from None


def _parquet_shards(path: str, spec: ReadSpec) -> list[Shard]:
    """One shard per row group; the columns checked against the file's schema first."""
    file = parquet_file(path)
    schema = file.schema_arrow
    names = ", ".join(repr(name) for name in schema.names[:10]) + (", ..." if len(schema.names) > 10 else "")
    for option, name in [("--field", spec.field), ("--id-field", spec.id_field)] + [
            ("--keep-columns", name) for name in spec.keep]:
        if name is not None and name not in schema.names:
            raise InputError(f"no column {name!r} (columns: {names}); choose one with {option}", path)
    text_type = schema.field(spec.field).type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise InputError(f"column {spec.field!r} holds {text_type}, expected strings", path)
    if spec.id_field is not None:
        id_type = schema.field(spec.id_field).type
        if not (pa.types.is_integer(id_type) or pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
            raise InputError(f"column {spec.id_field!r} holds {id_type}; ids must be integers or strings", path)
    rows = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(rows)]).astype(int)
    return [Shard(path, g, g + 1, first_line=int(starts[g]), rows=rows[g]) for g in range(file.num_row_groups)]


def keep_schema_of(files: list[str], spec: ReadSpec) -> pa.Schema:
    """The types of the kept Parquet columns, the same in every file (int32 and int64 give int64...)."""
    schemas = [parquet_file(path).schema_arrow for path in files]
    return unify_schemas([pa.schema([schema.field(name) for name in spec.keep]) for schema in schemas], files)


def unify_schemas(schemas: list, where: list) -> pa.Schema:
    """One schema for the kept columns of every shard; InputError names two places whose types clash."""
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    for name in schemas[0].names:
        typed = [(s.field(name).type, w) for s, w in zip(schemas, where) if not pa.types.is_null(s.field(name).type)]
        for field_type, place in typed[1:]:
            try:
                pa.unify_schemas([pa.schema([(name, typed[0][0])]), pa.schema([(name, field_type)])],
                                 promote_options="permissive")
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                raise InputError(f"--keep-columns {name}: {typed[0][0]} in {typed[0][1]} but {field_type} in "
                                 f"{place}; a kept column needs one type throughout") from None
    raise InputError("--keep-columns: the kept columns' types differ between files")


# ---------------------------------------------------------------- reading one shard
def _lines(shard: Shard) -> list[bytes]:
    """The shard's lines, without their line ends (and without the file's byte order mark)."""
    with open(shard.path, "rb") as f:
        f.seek(shard.start)
        data = f.read(shard.stop - shard.start)
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the shard ends with a line end (or is empty)
        lines.pop()
    if shard.start == 0 and lines and lines[0].startswith(BOM):
        lines[0] = lines[0][len(BOM):]
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _parse_lines(shard: Shard, spec: ReadSpec) -> tuple[dict, list]:
    """A text or JSON Lines shard -> ({column: values}, rows whose bytes were replaced); ShardError on a bad row."""
    source = TextFile(shard.path, field_name=spec.field if spec.format == "jsonl" else None, errors=spec.errors)
    columns = {spec.field: []}
    if spec.id_field is not None:
        columns[ID_COLUMN] = []
    for name in spec.keep:
        columns[name] = []
    replaced = []
    for row, raw in enumerate(_lines(shard)):
        try:
            text, was_replaced = source.decode_line(raw, row)
            if was_replaced:
                replaced.append(row)
            if spec.format == "text":
                columns[spec.field].append(text)
                continue
            record = source.parse_record(text, row)
        except InputError as e:
            raise ShardError(row, e.reason) from None
        columns[spec.field].append(record[spec.field])
        if spec.id_field is not None:
            columns[ID_COLUMN].append(_json_id(record, spec.id_field, row))
        for name in spec.keep:
            columns[name].append(record.get(name))
    return columns, replaced


def _json_id(record: dict, id_field: str, row: int):
    if id_field not in record:
        have = ", ".join(repr(k) for k in list(record)[:10]) or "none"
        raise ShardError(row, f"no {id_field!r} field (fields: {have}); choose the id with --id-field")
    value = record[id_field]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ShardError(row, f"field {id_field!r} is a JSON {json_type(value)}; an id must be a string or an "
                              f"integer")
    return value


def _id_array(values: list, spec: ReadSpec) -> pa.Array:
    """JSON ids -> int64 or string; ShardError at the first id whose type differs from the first id's."""
    try:
        return pa.array(values, type=pa.int64() if isinstance(values[0], int) else pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        first = type(values[0])
        row = next(i for i, v in enumerate(values) if type(v) is not first or (first is int and abs(v) >= 1 << 63))
        raise ShardError(row, f"field {spec.id_field!r} is {_kind(values[row])} here and {_kind(values[0])} in "
                              f"earlier rows; the ids must be all integers or all strings") from None


def _kind(value) -> str:
    return "an integer" if isinstance(value, int) and abs(value) < 1 << 63 else (
        "an integer beyond 64 bits" if isinstance(value, int) else "a string")


def _keep_array(values: list, name: str) -> pa.Array:
    """The values of one kept JSON field; ShardError at the first value of another JSON type than the first."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        present = [(i, v) for i, v in enumerate(values) if v is not None]
        first = json_type(present[0][1])
        row, value = next(((i, v) for i, v in present if json_type(v) != first), present[-1])
        raise ShardError(row, f"field {name!r} is a JSON {json_type(value)} here and a JSON {first} in earlier "
                              f"rows; --keep-columns needs one type per field") from None


def _parse_parquet(shard: Shard, spec: ReadSpec, columns: list, file: pq.ParquetFile | None = None) -> pa.Table:
    """A Parquet shard's columns; ShardError at the first null text or id (of the columns read)."""
    file = file or parquet_file(shard.path)
    table = file.read_row_groups(list(range(shard.start, shard.stop)), columns=columns)
    for name, what in [(spec.field, "text"), (spec.id_field, "id")]:
        if name is not None and name in table.column_names and table.column(name).null_count:
            row = int(np.flatnonzero(table.column(name).is_null().to_numpy(zero_copy_only=False))[0])
            raise ShardError(row, f"the {what} in column {name!r} is null")
    return table


def metadata_nulls(file: pq.ParquetFile, shard: Shard, name: str) -> int | None:
    """The nulls of a top-level column in the shard's row groups, from the file's statistics; None if any row
    group has no null count for it (then the column must be read to know)."""
    nulls = 0
    for group in range(shard.start, shard.stop):
        row_group = file.metadata.row_group(group)
        chunk = next((row_group.column(i) for i in range(row_group.num_columns)
                      if row_group.column(i).path_in_schema == name), None)
        statistics = chunk.statistics if chunk is not None and chunk.is_stats_set else None
        if statistics is None or not statistics.has_null_count:
            return None
        nulls += statistics.null_count
    return nulls


def scan_shard(shard: Shard, spec: ReadSpec) -> ShardScan:
    """Read a shard once, checking every row: its size, its ids, and where its first bad row is."""
    try:
        if spec.format == "parquet":  # the ids are read; the text only if the metadata cannot say it has no null
            file = parquet_file(shard.path)
            columns = ([spec.id_field] if spec.id_field else []) + (
                [] if metadata_nulls(file, shard, spec.field) == 0 else [spec.field])
            rows = sum(file.metadata.row_group(g).num_rows for g in range(shard.start, shard.stop))
            table = _parse_parquet(shard, spec, columns, file) if columns else None
            ids = table.column(spec.id_field) if spec.id_field else None
            return ShardScan(rows=rows, ids=None if ids is None else _as_id_array(ids.combine_chunks()))
        columns, replaced = _parse_lines(shard, spec)
        rows = len(columns[spec.field])
        ids = _id_array(columns[ID_COLUMN], spec) if spec.id_field and rows else None
        keep = pa.schema([(name, _keep_array(columns[name], name).type) for name in spec.keep]) if spec.keep else None
        present = {name: sum(v is not None for v in columns[name]) for name in spec.keep}
    except ShardError as e:
        return ShardScan(error=(e.row, e.reason))
    except OSError as e:
        return ShardScan(error=(None, f"cannot read the file: {e.strerror or e}"))
    return ShardScan(rows=rows, ids=ids, replaced=replaced, keep_schema=keep, keep_present=present)


def _as_id_array(ids: pa.Array) -> pa.Array:
    """Parquet ids -> int64 or string, the two id types of the output."""
    return ids.cast(pa.int64() if pa.types.is_integer(ids.type) else pa.string())


def read_shard(shard: Shard, spec: ReadSpec, keep_schema: pa.Schema | None, skip=None) -> pa.Table:
    """The shard's rows as a table: id, the text column (spec.field), the kept columns; rows in `skip` left out.

    skip: None, or a bool array [shard.rows] (True: the row is already embedded).
    Runs in a Ray task after the scan, so a bad row here means the file changed.
    """
    try:
        if spec.format == "parquet":
            table = _parse_parquet(shard, spec, [spec.field] + ([spec.id_field] if spec.id_field else [])
                                   + list(spec.keep))
            text = table.column(spec.field).cast(pa.string())
            ids = _as_id_array(table.column(spec.id_field).combine_chunks()) if spec.id_field else None
            kept = [table.column(name) for name in spec.keep]
        else:
            columns, _ = _parse_lines(shard, spec)
            text = pa.array(columns[spec.field], type=pa.string())
            ids = _id_array(columns[ID_COLUMN], spec) if spec.id_field and len(text) else None
            kept = [_keep_array(columns[name], name) for name in spec.keep]
    except ShardError as e:
        raise row_error(shard, spec, e.row, f"{e.reason} (the file changed after the scan?)") from None
    if len(text) != shard.rows:
        raise InputError(f"{len(text)} rows where the scan found {shard.rows}: the file changed during the job",
                         shard.path)
    if ids is None:
        ids = pa.array(np.arange(shard.first_row, shard.first_row + shard.rows, dtype=np.int64))
    names = [ID_COLUMN, spec.field, *spec.keep]
    arrays = [ids, text, *kept]
    if keep_schema is not None:
        arrays[2:] = [a.cast(keep_schema.field(name).type) for a, name in zip(kept, spec.keep)]
    table = pa.table(dict(zip(names, arrays)))
    return table if skip is None else table.filter(pa.array(~np.asarray(skip, dtype=bool)))


# ---------------------------------------------------------------- on the driver
def locate(shards: list[Shard], scans: list[ShardScan], spec: ReadSpec) -> list[Shard]:
    """Shards with their first line in their file and first row over the input, from the scans' row counts.

    Raises InputError for the first bad row (file and line, or Parquet row index).
    """
    located, row, line = [], 0, {}
    for shard, scan in zip(shards, scans):
        first_line = shard.first_line if spec.format == "parquet" else line.get(shard.path, 1)
        shard = replace(shard, first_line=first_line, first_row=row, rows=scan.rows)
        if scan.error is not None:
            raise row_error(shard, spec, *scan.error)
        line[shard.path] = first_line + scan.rows
        row += scan.rows
        located.append(shard)
    return located


def row_error(shard: Shard, spec: ReadSpec, row: int | None, reason: str) -> InputError:
    """The error for a bad row of a shard (row None: the file as a whole), naming the file and the line or row."""
    if row is None:
        return InputError(reason, shard.path)
    if spec.format == "parquet":
        return InputError(f"row index {shard.first_line + row}: {reason}", shard.path)
    return InputError(reason, shard.path, shard.first_line + row)


def describe_row(shards: list[Shard], spec: ReadSpec, row: int) -> str:
    """Where a row of the input is: "docs.jsonl line 12", "part-0.parquet row index 11"."""
    starts = [s.first_row for s in shards]
    shard = shards[int(np.searchsorted(starts, row, side="right")) - 1]
    offset = shard.first_line + row - shard.first_row
    return f"{shard.path} {'row index' if spec.format == 'parquet' else 'line'} {offset}"
