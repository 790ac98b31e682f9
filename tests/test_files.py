"""The line reader and the .npy / JSON Lines writers behind `minie5 embed` and `search` (minie5/io/files.py).

Expectations are written by hand: the lines each input must give, the
errors (with line numbers) each bad input must raise, the arrays read back.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from minie5.errors import InputError, json_type
from minie5.io.files import NpyWriter, TextFile, saving_npy, write_jsonl, write_jsonl_file, write_npy


# ---------------------------------------------------------------- reading lines
def read_all(path, **kwargs) -> list[str]:
    with TextFile(str(path), **kwargs) as source:
        n = source.scan()
        texts = list(source.texts())
    assert n == len(texts)
    return texts


def test_text_file_keeps_every_line(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_bytes(b"\xef\xbb\xbffirst\n\nthird\r\n   \nlast without newline")
    assert read_all(path) == ["first", "", "third", "   ", "last without newline"]
    path.write_bytes(b"one\n\n\n")
    assert read_all(path) == ["one", "", ""]
    path.write_bytes(b"")
    assert read_all(path) == []


def test_text_file_bad_utf8(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff here\nok\nbad \xc3 too\n")
    with pytest.raises(InputError, match=r"bad\.txt: line 3: not valid UTF-8: byte 0xff at byte 5") as info:
        TextFile(str(path)).scan()
    assert info.value.line == 3
    source = TextFile(str(path), errors="replace")
    assert source.scan() == 5
    assert source.report.replaced_lines == [3, 5]
    assert list(source.texts()) == ["fine", "also fine", "bad \ufffd here", "ok", "bad \ufffd too"]


def test_jsonl_lines(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "a", "id": 1}\n{"text": ""}\n{"id": 3, "text": "c\\nd"}\n', encoding="utf-8")
    assert read_all(path) == ["a", "", "c\nd"]
    path.write_text('{"body": "x"}\n', encoding="utf-8")
    assert read_all(path, field_name="body") == ["x"]


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\n{"text": "b"\n', r"line 2: not valid JSON"),
    ('{"text": "a"}\n\n{"text": "c"}\n', r"line 2: empty line"),
    ('{"text": "a"}\n["b"]\n', r"line 2: expected a JSON object with a 'text' field, got a JSON array"),
    ('{"text": "a"}\n{"body": "b", "id": 2}\n', r"line 2: no 'text' field \(fields: 'body', 'id'\)"),
    ('{"text": 3}\n', r"line 1: field 'text' is a JSON number, expected a string"),
    ('{"text": null}\n', r"line 1: field 'text' is a JSON null"),
])
def test_bad_jsonl_lines_name_the_line(tmp_path, content, message):
    path = tmp_path / "docs.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        TextFile(str(path)).scan()


@pytest.mark.parametrize("text, name, with_article", [
    ('{"a": 1}', "object", "an object"), ("[1]", "array", "a list"), ('"s"', "string", "a string"),
    ("3", "number", "a number"), ("2.5", "number", "a number"), ("true", "boolean", "a boolean"),
    ("null", "null", "null"),
])
def test_json_type_names_both_wordings(text, name, with_article):
    """files.py's messages say "a JSON array"; the server's say "is a list" (OpenAI's word)."""
    assert json_type(json.loads(text)) == name
    assert json_type(json.loads(text), article=True) == with_article


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        TextFile(str(tmp_path / "nope.txt")).scan()


# ---------------------------------------------------------------- writing
def test_npy_writer_fills_rows_block_by_block(tmp_path):
    path = tmp_path / "out.npy"
    data = np.arange(7 * 5, dtype=np.float32).reshape(7, 5) / 3
    writer = NpyWriter(path, 7, 5)
    for start, stop in [(0, 3), (3, 3), (3, 6), (6, 7)]:
        writer.write(data[start:stop])
    writer.close()
    loaded = np.load(path)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, data)


def test_npy_writer_checks_the_row_count(tmp_path):
    writer = NpyWriter(tmp_path / "out.npy", 2, 3)
    writer.write(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="1 rows written, 2 expected"):
        writer.close()
    with pytest.raises(ValueError, match="3 rows written to a file sized for 2"):
        writer.write(np.ones((2, 3), np.float32))


def test_write_jsonl_keeps_float32_values(tmp_path):
    block = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    path = tmp_path / "out.jsonl"
    with open(path, "w") as f:
        write_jsonl(f, block, first_index=10)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["index"] for r in records] == [10, 11, 12]
    assert np.array_equal(np.array([r["embedding"] for r in records], dtype=np.float32), block)


def blocks_of(data: np.ndarray, size: int, fail_after: int | None = None):
    """data in blocks of `size` rows, as Model.encode_chunks yields them; raises after fail_after blocks."""
    for n, start in enumerate(range(0, len(data), size)):
        if n == fail_after:
            raise RuntimeError("the model failed")
        yield data[start:start + size]


def test_output_files_are_complete_or_absent(tmp_path):
    data = np.arange(5 * 3, dtype=np.float32).reshape(5, 3) / 7
    npy, jsonl = tmp_path / "out.npy", tmp_path / "out.jsonl"
    write_npy(npy, blocks_of(data, 2), 5, 3)
    write_jsonl_file(jsonl, blocks_of(data, 2))
    assert np.array_equal(np.load(npy), data)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]  # counted across blocks
    assert np.array_equal(np.array([r["embedding"] for r in records], dtype=np.float32), data)
    for path in (npy, jsonl):
        path.unlink()
    with pytest.raises(RuntimeError):
        write_npy(npy, blocks_of(data, 2, fail_after=2), 5, 3)
    with pytest.raises(RuntimeError):
        write_jsonl_file(jsonl, blocks_of(data, 2, fail_after=2))
    assert list(tmp_path.iterdir()) == []  # neither the outputs nor their .partial files


def test_saving_npy_passes_the_blocks_on_and_saves_only_a_complete_file(tmp_path):
    data = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    path = tmp_path / "index.npy"
    stopped = saving_npy(path, blocks_of(data, 2), 5, 3)
    assert np.array_equal(next(stopped), data[:2])
    stopped.close()  # the caller stopped early
    assert list(tmp_path.iterdir()) == []
    passed = list(saving_npy(path, blocks_of(data, 2), 5, 3))
    assert np.array_equal(np.concatenate(passed), data) and np.array_equal(np.load(path), data)
    assert list(tmp_path.iterdir()) == [path]
