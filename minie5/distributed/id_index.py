"""The input's --id-field values, hashed once per command: the input row of any id, and the ids that repeat.

    index = IdIndex(ids)              # ids: a pa.Array of int64 or strings, one per input row
    index.repeated()                  # the rows whose id an earlier row has too, in row order
    index.rows_of(written)            # the input row of each id of an output file, -1 if not in the input

The driver of `minie5 embed --ray` looks every id of OUTDIR up in the
input's ids: after each attempt, to remove duplicates and for the summary
(ray_command.py). pyarrow's `pc.index_in` builds a hash set of all the input
ids for every call, so every pass paid for the hash set again, and its table
outgrows the caches: at 2 M string ids a pass took 1.2-1.5x the time per row
of one at 0.5 M. Here the ids are hashed once, into a sorted array, and the
lookups mostly need no hash at all:

    keys:   [rows] uint64, each row's 64-bit hash with the row number in its low `row_bits` bits, sorted
    starts: [2**dir_bits + 1] int64, where each value of the keys' top dir_bits bits begins in keys

- Building is one pass that hashes each id (reading the ids in order), one
  sort of 8-byte keys (numpy's vectorised sort) and one pass over the sorted
  keys: every access is in order, so the time per row hardly depends on how
  many rows there are (a hash table's random inserts do: they miss the
  caches more often as the table grows). Ids with the same hash are next to
  each other, smallest row first: the repeats are found in the same pass,
  each confirmed byte by byte.
- A lookup first compares the id with the input id after the one found
  before it: Ray Data writes a block's rows in their order, so an output
  file's ids are runs of consecutive input rows, and most lookups are one
  comparison of two ids read in order. Otherwise it hashes the id and scans
  its bucket of keys (about one key). Either way a match is the same bytes,
  never only the same hash.

Integer ids are compared as their 8 bytes, strings as their UTF-8 bytes, read
in place from the Arrow buffers (no copy of the ids). The twins, with
pyarrow's hash set: rows_of_reference and repeated_reference
(tests/test_id_index.py compares them).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine.kernels import njit

FNV_OFFSET = np.uint64(14695981039346656037)  # FNV-1a 64-bit, byte by byte
FNV_PRIME = np.uint64(1099511628211)
MIX_1 = np.uint64(0xFF51AFD7ED558CCD)  # MurmurHash3's finaliser: every bit of the hash depends on every byte
MIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
SHIFT_33 = np.uint64(33)


# ---------------------------------------------------------------- kernels
@njit(cache=True, inline="always")
def id_span(offsets, width, row):
    """The bytes of one id in its data buffer: [start, stop). width > 0: fixed-width ids (int64: 8 bytes)."""
    if width > 0:
        return row * width, row * width + width
    return np.int64(offsets[row]), np.int64(offsets[row + 1])


@njit(cache=True, inline="always")
def hash_bytes(data, start, stop):
    """The 64-bit hash of data[start:stop]."""
    h = FNV_OFFSET
    for k in range(start, stop):
        h = (h ^ np.uint64(data[k])) * FNV_PRIME
    h ^= h >> SHIFT_33
    h *= MIX_1
    h ^= h >> SHIFT_33
    h *= MIX_2
    h ^= h >> SHIFT_33
    return h


@njit(cache=True, inline="always")
def same_bytes(a, a_start, a_stop, b, b_start, b_stop):
    """a[a_start:a_stop] == b[b_start:b_stop]."""
    if a_stop - a_start != b_stop - b_start:
        return False
    for k in range(a_stop - a_start):
        if a[a_start + k] != b[b_start + k]:
            return False
    return True


@njit(cache=True)
def hash_keys(offsets, data, width, row_bits, keys):
    """keys[row] = the id's hash, its low row_bits bits replaced by the row. keys: [rows] uint64 (written)."""
    row_mask = (np.uint64(1) << np.uint64(row_bits)) - np.uint64(1)
    for row in range(len(keys)):
        start, stop = id_span(offsets, width, row)
        keys[row] = (hash_bytes(data, start, stop) & ~row_mask) | np.uint64(row)


@njit(cache=True)
def bucket_starts_and_repeats(keys, offsets, data, width, row_bits, dir_bits, starts, repeat):
    """One pass over the sorted keys: starts[b] = the first key whose top dir_bits bits are >= b, and
    repeat[row] = True where an earlier row holds the same bytes (keys of one hash are adjacent, rows rising)."""
    row_mask = (np.uint64(1) << np.uint64(row_bits)) - np.uint64(1)
    shift = np.uint64(64 - dir_bits)
    bucket = 0
    run = 0
    for k in range(len(keys)):
        top = np.int64(keys[k] >> shift)
        while bucket <= top:
            starts[bucket] = k
            bucket += 1
        hashed = keys[k] & ~row_mask
        if k == 0 or (keys[k - 1] & ~row_mask) != hashed:
            run = k  # the first key of this hash: the smallest row holding it
            continue
        row = np.int64(keys[k] & row_mask)  # a hash seen before: the same id, unless two ids share a hash
        start, stop = id_span(offsets, width, row)
        first = np.int64(keys[run] & row_mask)
        first_start, first_stop = id_span(offsets, width, first)
        if same_bytes(data, start, stop, data, first_start, first_stop):
            repeat[row] = True  # (many copies of one id: one comparison each)
            continue
        before = k - 1  # two ids with one hash (rare): compare with the first row of each id of the run
        while before > run:
            earlier = np.int64(keys[before] & row_mask)
            if not repeat[earlier]:
                earlier_start, earlier_stop = id_span(offsets, width, earlier)
                if same_bytes(data, start, stop, data, earlier_start, earlier_stop):
                    repeat[row] = True
                    break
            before -= 1
    while bucket < len(starts):
        starts[bucket] = len(keys)
        bucket += 1


@njit(cache=True)
def look_up(written_offsets, written_data, written_width, count, offsets, data, width, rows, keys, starts,
            row_bits, dir_bits, unique, found):
    """found[i] = the first input row whose id has the bytes of written id i, -1 if none. found: [count] int64.
    unique: no id repeats in the input (else the row after the last one found may hold a later copy).
    Returns how many ids were hashed: those that did not follow the one before in the input."""
    row_mask = (np.uint64(1) << np.uint64(row_bits)) - np.uint64(1)
    shift = np.uint64(64 - dir_bits)
    hashed_ids = 0
    guess = -1 if unique else rows  # the input row after the one found last: written ids mostly come in runs of consecutive rows
    for i in range(count):
        start, stop = id_span(written_offsets, written_width, i)
        if guess >= 0 and guess < rows:
            guess_start, guess_stop = id_span(offsets, width, guess)
            if same_bytes(written_data, start, stop, data, guess_start, guess_stop):
                found[i] = guess
                guess += 1
                continue
        hashed = hash_bytes(written_data, start, stop) & ~row_mask
        hashed_ids += 1
        bucket = np.int64(hashed >> shift)
        row = -1
        for k in range(starts[bucket], starts[bucket + 1]):
            if (keys[k] & ~row_mask) == hashed:
                candidate = np.int64(keys[k] & row_mask)
                candidate_start, candidate_stop = id_span(offsets, width, candidate)
                if same_bytes(written_data, start, stop, data, candidate_start, candidate_stop):
                    row = candidate
                    break
        found[i] = row
        if unique:
            guess = row + 1 if row >= 0 else -1
    return hashed_ids


# ---------------------------------------------------------------- the index
def id_bytes(ids: pa.Array) -> tuple[np.ndarray, np.ndarray, int]:
    """(offsets, data, width) of an int64 or string array, views of its Arrow buffers: id i is
    data[offsets[i]:offsets[i + 1]] (strings), or data[8 i:8 i + 8] with width 8 (int64)."""
    buffers = ids.buffers()
    if pa.types.is_integer(ids.type):
        values = np.frombuffer(buffers[1], dtype=np.uint8) if buffers[1] is not None else np.zeros(0, np.uint8)
        return np.zeros(1, dtype=np.int32), values[ids.offset * 8:(ids.offset + len(ids)) * 8], 8
    offset_type = np.int64 if pa.types.is_large_string(ids.type) else np.int32
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[ids.offset:ids.offset + len(ids) + 1] if len(ids) else (
        np.zeros(1, dtype=offset_type))
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    return offsets, data, 0


def id_kind(id_type: pa.DataType) -> str | None:
    """"int" for integer ids, "str" for string ids, None for any other type."""
    if pa.types.is_integer(id_type):
        return "int"
    return "str" if pa.types.is_string(id_type) or pa.types.is_large_string(id_type) else None


def comparable(written_type: pa.DataType, id_type: pa.DataType) -> bool:
    """Whether ids of these two types can be equal: both integers, or both strings."""
    return id_kind(written_type) is not None and id_kind(written_type) == id_kind(id_type)


class IdIndex:
    """The input's ids (int64 or strings, one per row), hashed once: see the module's notes."""

    def __init__(self, ids: pa.Array):
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        if id_kind(ids.type) is None:
            raise TypeError(f"ids must be integers or strings, not {ids.type}")
        if ids.null_count:
            raise ValueError(f"{ids.null_count} of the ids are null")
        if pa.types.is_integer(ids.type) and ids.type != pa.int64():
            ids = ids.cast(pa.int64())
        self.ids = ids
        rows = len(ids)
        self.row_bits = max(rows.bit_length(), 1)  # the low bits of a key: its row
        if self.row_bits > 32:  # the top dir_bits bits of a key must be hash bits
            raise ValueError(f"{rows} ids: an IdIndex holds at most 2**32 - 1")
        self.dir_bits = max(rows.bit_length() - 1, 1)  # about 1-2 keys per bucket
        self._bytes = id_bytes(ids)
        # keys: [rows] uint64 -> sorted (in place: one array of 8 bytes per id)
        self.keys = np.empty(rows, dtype=np.uint64)
        hash_keys(*self._bytes, self.row_bits, self.keys)
        self.keys.sort()
        # starts: [2**dir_bits + 1]; repeat: [rows] bool
        self.starts = np.empty((1 << self.dir_bits) + 1, dtype=np.int64)
        repeat = np.zeros(rows, dtype=np.bool_)
        bucket_starts_and_repeats(self.keys, *self._bytes, self.row_bits, self.dir_bits, self.starts, repeat)
        self._repeats = np.flatnonzero(repeat)  # the few repeats kept as rows, not [rows] bools
        self.hashed = 0  # how many looked-up ids were hashed (the others followed the id before them)

    def __len__(self) -> int:
        return len(self.ids)

    def repeated(self) -> np.ndarray:
        """The rows whose id an earlier row has too, in row order (int64)."""
        return self._repeats

    def rows_of(self, written: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """The input row of each written id, -1 for an id (or null) that is not in the input: int64 [len(written)].
        Ids of another kind (integers against strings) are never in the input."""
        if isinstance(written, pa.ChunkedArray):
            parts = [self.rows_of(chunk) for chunk in written.chunks]
            return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        found = np.empty(len(written), dtype=np.int64)
        if not comparable(written.type, self.ids.type):
            found.fill(-1)
            return found
        if pa.types.is_integer(written.type) and written.type != pa.int64():
            written = written.cast(pa.int64())
        self.hashed += look_up(*id_bytes(written), len(written), *self._bytes, len(self.ids), self.keys, self.starts,
                self.row_bits, self.dir_bits, len(self._repeats) == 0, found)
        if written.null_count:
            found[written.is_null().to_numpy(zero_copy_only=False)] = -1
        return found


def warm_up() -> None:
    """Load the kernels (from Numba's cache: about 0.3 s; compiled, without one: seconds). The driver does this in a
    thread while the cluster scans the input, so that the id checks time their own work."""
    IdIndex(pa.array(["a", "b"])).rows_of(pa.array(["b"]))


# ---------------------------------------------------------------- the twins, with pyarrow's hash set
def rows_of_reference(written: pa.Array, ids: pa.Array) -> np.ndarray:
    """IdIndex(ids).rows_of(written), with one pc.index_in (a hash set of the ids for each call)."""
    if not comparable(written.type, ids.type):
        return np.full(len(written), -1, dtype=np.int64)
    if pa.types.is_integer(written.type):
        written, ids = written.cast(pa.int64()), ids.cast(pa.int64())
    else:
        written, ids = written.cast(pa.large_string()), ids.cast(pa.large_string())
    return pc.index_in(written, value_set=ids).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def repeated_reference(ids: pa.Array) -> np.ndarray:
    """IdIndex(ids).repeated(), with pc.index_in: each id's first row, compared with its own."""
    first = pc.index_in(ids, value_set=ids).to_numpy(zero_copy_only=False)
    return np.flatnonzero(first != np.arange(len(ids)))
