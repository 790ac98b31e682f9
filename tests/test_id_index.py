"""IdIndex (minie5/distributed/id_index.py) against its twins on pyarrow's hash set (pc.index_in), and by hand."""
import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")  # the ray extra

from minie5.distributed.id_index import (IdIndex, bucket_starts_and_repeats, hash_bytes, id_bytes,  # noqa: E402
                                         look_up, repeated_reference, rows_of_reference)


def random_strings(rng, count: int, alphabet: str = "abé中\U0001F600-_ ") -> list:
    return ["".join(rng.choice(list(alphabet), size=rng.integers(0, 6))) for _ in range(count)]


@pytest.mark.parametrize("kind", ["string", "large_string", "int64"])
def test_rows_and_repeats_equal_pyarrows_hash_set(kind):
    rng = np.random.default_rng(7)
    if kind == "int64":
        pool = pa.array(rng.integers(-2**63, 2**63 - 1, size=300, dtype=np.int64).tolist() + [0, -1, 1])
        written_pool = pa.array(rng.integers(-5, 5, size=50).tolist() + pool.to_pylist()[:100], pa.int64())
    else:
        pool = pa.array(random_strings(rng, 400), pa.string() if kind == "string" else pa.large_string())
        written_pool = pa.array(random_strings(rng, 150) + pool.to_pylist()[:100])
    for rows in (0, 1, 2, 5, 64, len(pool)):  # short random ids repeat often; the empty string is among them
        ids = pool.slice(len(pool) - rows, rows)  # a slice: its buffers start before its first id
        index = IdIndex(ids)
        np.testing.assert_array_equal(index.repeated(), repeated_reference(ids))
        for written in (written_pool, written_pool.slice(30, 60), ids, ids.slice(rows // 2)):
            np.testing.assert_array_equal(index.rows_of(written), rows_of_reference(written, ids))


def test_unique_ids_in_and_out_of_order():
    """Unique ids, as the driver has them: a file in input order (runs, a gap, ids not in the input) and
    the same ids shuffled; chunked arrays and nulls."""
    rng = np.random.default_rng(3)
    ids = pa.array([f"doc-{i}" for i in range(5000)])
    index = IdIndex(ids)
    assert len(index.repeated()) == 0
    runs = [f"doc-{i}" for i in list(range(10, 900)) + list(range(1200, 1300)) + [4999]] + ["doc-5000", "x", "doc-0"]
    for written in (runs, list(rng.permutation(runs))):
        written = pa.array(written)
        np.testing.assert_array_equal(index.rows_of(written), rows_of_reference(written, ids))
    chunked = pa.chunked_array([pa.array(["doc-3", None, "doc-4"]), pa.array([], pa.string()), pa.array(["doc-9"])])
    np.testing.assert_array_equal(index.rows_of(chunked), [3, -1, 4, 9])
    assert len(index.rows_of(pa.chunked_array([], pa.string()))) == 0  # a file with no chunk
    index.hashed = 0
    assert (index.rows_of(ids) == np.arange(5000)).all() and index.hashed == 1  # in order: one hashed id


def test_ids_of_another_type_are_not_in_the_input():
    strings, numbers = IdIndex(pa.array(["1", "2"])), IdIndex(pa.array([1, 2]))
    np.testing.assert_array_equal(strings.rows_of(pa.array([1, 2])), [-1, -1])
    np.testing.assert_array_equal(numbers.rows_of(pa.array(["1", "2"])), [-1, -1])
    np.testing.assert_array_equal(numbers.rows_of(pa.array([2, 1, 3], pa.int32())), [1, 0, -1])  # int32 as int64
    np.testing.assert_array_equal(numbers.rows_of(pa.array([1.0])), [-1])
    with pytest.raises(TypeError, match="integers or strings"):
        IdIndex(pa.array([1.5]))
    with pytest.raises(ValueError, match="1 of the ids are null"):
        IdIndex(pa.array(["a", None]))


def test_ids_that_share_a_hash_are_told_apart_by_their_bytes():
    """Keys made by hand: three ids with one hash, "a", "b", "a" (rows 0-2). The kernels must compare bytes:
    row 2 repeats row 0, not row 1, and "b" is found at row 1."""
    ids = pa.array(["a", "b", "a"])
    offsets, data, width = id_bytes(ids)
    row_bits, dir_bits = 2, 1
    same_hash = np.uint64(0xABCDEF0123456780)  # low row_bits bits zero
    keys = np.array([same_hash | np.uint64(row) for row in range(3)], dtype=np.uint64)
    starts = np.empty(3, dtype=np.int64)
    repeat = np.zeros(3, dtype=np.bool_)
    bucket_starts_and_repeats(keys, offsets, data, width, row_bits, dir_bits, starts, repeat)
    assert repeat.tolist() == [False, False, True] and starts.tolist() == [0, 0, 3]
    # look_up hashes the written id itself: hand-made keys of that hash, rows 0-2, all in its bucket
    for written, expected in (("b", 1), ("a", 0), ("c", -1)):
        w_offsets, w_data, w_width = id_bytes(pa.array([written]))
        found = np.empty(1, dtype=np.int64)
        hashed = hash_bytes(w_data, 0, len(w_data)) & ~np.uint64(3)
        hand_keys = np.array([hashed | np.uint64(row) for row in range(3)], dtype=np.uint64)
        bucket = int(hashed >> np.uint64(63))
        hand_starts = np.array([0, 0, 3] if bucket else [0, 3, 3], dtype=np.int64)
        look_up(w_offsets, w_data, w_width, 1, offsets, data, width, 3, hand_keys, hand_starts, row_bits, dir_bits,
                False, found)
        assert found[0] == expected, written
