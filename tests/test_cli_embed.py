"""`minie5 embed` on files and stdin, through the real entry point (`python -m minie5` in a subprocess).

Every output is compared with model.encode() on the same texts in this
process, with the texts the test itself wrote into the input file.
The invariant throughout: row i of the output is line i + 1 of the input;
blank lines are embedded (as ""), never dropped.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import EXAMPLES, max_diff, run_cli, run_cli_on_terminal, write_lines

pytestmark = pytest.mark.slow  # the real `minie5 embed` in a subprocess per test
HIDDEN = 384
TOL = 1e-6

LINES = [
    "Berlin is the capital of Germany.",
    "",  # blank lines are texts too
    "南瓜的家常做法",
    "   ",
    "query: how much protein should a female eat",
    "",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
]


def load_jsonl(text: str) -> np.ndarray:
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["index"] for r in records] == list(range(len(records)))
    return np.array([r["embedding"] for r in records], dtype=np.float64)


# ---------------------------------------------------------------- inputs and outputs
def test_file_to_npy_equals_encode(e5_dir, e5_model, tmp_path):
    path = write_lines(tmp_path / "docs.txt", LINES)
    result = run_cli("embed", "-i", path, "-o", tmp_path / "out.npy", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""  # no bar, no message: stderr is not a terminal
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == np.float32 and out.shape == (len(LINES), HIDDEN)
    assert max_diff(out, e5_model.encode(LINES)) <= TOL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.txt", "out.npy"]  # no temporary left behind


def test_windows_line_ends_and_no_final_newline(e5_dir, e5_model, tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes("\r\n".join(LINES).encode("utf-8"))  # CRLF, and the last line has no line end
    result = run_cli("embed", "-i", path, "-o", tmp_path / "out.npy", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    assert max_diff(np.load(tmp_path / "out.npy"), e5_model.encode(LINES)) <= TOL


def test_stdin_to_npy_with_prefix_and_batch_size(e5_dir, e5_model, tmp_path):
    stdin = "".join(line + "\n" for line in LINES).encode("utf-8")
    result = run_cli("embed", "-o", tmp_path / "out.npy", "--prefix", "passage", "--batch-size", "3",
                     "--model", e5_dir, stdin=stdin)
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (len(LINES), HIDDEN)
    assert max_diff(out, e5_model.encode_passages(LINES)) <= TOL


def test_stdin_dash_to_stdout_json_lines(e5_dir, e5_model):
    stdin = "".join(line + "\n" for line in LINES).encode("utf-8")
    result = run_cli("embed", "-i", "-", "--prefix", "query", "--model", e5_dir, stdin=stdin)
    assert result.returncode == 0, result.stderr
    out = load_jsonl(result.stdout)
    assert out.shape == (len(LINES), HIDDEN)
    assert max_diff(out, e5_model.encode_queries(LINES)) <= TOL
    assert np.array_equal(out.astype(np.float32).astype(np.float64), out)  # float32 values, written exactly


def test_jsonl_input_and_jsonl_output(e5_dir, e5_model, tmp_path):
    records = [{"id": i, "text": t, "title": f"doc {i}"} for i, t in enumerate(LINES)]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    result = run_cli("embed", "-i", path, "-o", tmp_path / "out.jsonl", "--model", e5_dir)  # field "text"
    assert result.returncode == 0, result.stderr
    assert max_diff(load_jsonl((tmp_path / "out.jsonl").read_text()), e5_model.encode(LINES)) <= TOL
    # --field picks another field, on stdin too
    stdin = path.read_bytes()
    result = run_cli("embed", "--field", "title", "-o", tmp_path / "titles.npy", "--model", e5_dir, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert max_diff(np.load(tmp_path / "titles.npy"), e5_model.encode([r["title"] for r in records])) <= TOL


def test_text_arguments_to_npy_and_no_normalize(e5_dir, e5_model, tmp_path):
    texts = ["hello world", "", "南瓜的家常做法"]
    result = run_cli("embed", *texts, "-o", tmp_path / "out.npy", "--no-normalize", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "out.npy")
    assert max_diff(out, e5_model.encode(texts, normalize=False)) <= TOL
    assert np.all(np.abs(np.linalg.norm(out, axis=1) - 1) > 1e-3)  # really not normalised


def test_explicit_defaults_prefix_none_and_long_truncate(e5_dir, e5_model, tmp_path):
    """--prefix none and --long truncate spelled out: the texts are embedded exactly as given."""
    path = write_lines(tmp_path / "docs.txt", LINES)
    result = run_cli("embed", "-i", path, "-o", tmp_path / "out.npy", "--prefix", "none", "--long", "truncate",
                     "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "out.npy")
    assert max_diff(out, e5_model.encode(LINES)) <= TOL
    assert max_diff(out, e5_model.encode_queries(LINES)) > 1e-2  # no prompt was added


def test_empty_file_gives_an_empty_array(e5_dir, tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    result = run_cli("embed", "-i", tmp_path / "empty.txt", "-o", tmp_path / "out.npy", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (0, HIDDEN) and out.dtype == np.float32


def test_example_file_streams_2000_lines(e5_dir, e5_model, tmp_path):
    """2,000 lines, blank ones among them: the rows come back in order, one per line."""
    words = (EXAMPLES / "multilingual.txt").read_text(encoding="utf-8").split()  # short texts: a word and a number
    lines = [f"{words[i % len(words)]} {i}" if i % 7 else "" for i in range(2000)]
    path = write_lines(tmp_path / "big.txt", lines)
    result = run_cli("embed", "-i", path, "-o", tmp_path / "big.npy", "--batch-size", "128", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "big.npy")
    assert out.shape == (2000, HIDDEN)
    assert max_diff(out, e5_model.encode(lines, batch_size=128)) <= TOL


# ---------------------------------------------------------------- long texts
LONG = "passage: " + " ".join(f"Sentence {i} says something about the river." for i in range(120))  # > 512 tokens


def test_truncation_is_announced_once_with_the_count(e5_dir, e5_model, tmp_path):
    lines = ["short", LONG, "another short one", LONG + " and more"]
    path = write_lines(tmp_path / "docs.txt", lines)
    result = run_cli("embed", "-i", path, "-o", tmp_path / "out.npy", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    warning_lines = result.stderr.strip().splitlines()
    assert len(warning_lines) == 1, result.stderr
    assert warning_lines[0].startswith("minie5: warning: 2 of 4 texts were longer than 512 tokens")
    with pytest.warns(UserWarning):
        expected = e5_model.encode(lines)
    assert max_diff(np.load(tmp_path / "out.npy"), expected) <= TOL


def test_long_window_and_max_length(e5_dir, e5_model, tmp_path):
    lines = ["short", LONG[:600], "", "another short one"]
    path = write_lines(tmp_path / "docs.txt", lines)
    result = run_cli("embed", "-i", path, "-o", tmp_path / "w.npy", "--long", "window", "--max-length", "48",
                     "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # nothing truncated, nothing to say
    window = np.load(tmp_path / "w.npy")
    assert max_diff(window, e5_model.encode(lines, long="window", max_length=48)) <= TOL
    # Window mode equals plain mode for the lines that fit.
    fits = [0, 2, 3]
    assert max_diff(window[fits], e5_model.encode([lines[i] for i in fits], max_length=48)) <= TOL
    # --max-length alone truncates there, and says so.
    result = run_cli("embed", "-i", path, "-o", tmp_path / "t.npy", "--max-length", "48", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    assert "1 of 4 texts were longer than 48 tokens" in result.stderr
    with pytest.warns(UserWarning):
        expected = e5_model.encode(lines, max_length=48)
    assert max_diff(np.load(tmp_path / "t.npy"), expected) <= TOL


def test_max_length_above_the_model_is_an_error(e5_dir, tmp_path):
    result = run_cli("embed", "hello", "-o", tmp_path / "out.npy", "--max-length", "513", "--model", e5_dir)
    line = result.error_line()
    assert "max_length 513 exceeds the 512 positions" in line and "(max_position_embeddings 512)" in line
    assert not (tmp_path / "out.npy").exists()


# ---------------------------------------------------------------- bad input
def test_undecodable_bytes_name_the_line(e5_dir, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\n\nnot \xff fine\nok\n")
    result = run_cli("embed", "-i", path, "-o", tmp_path / "out.npy", "--model", e5_dir)
    line = result.error_line()
    assert f"{path}: line 3: not valid UTF-8" in line and "--errors replace" in line
    assert result.stdout == "" and not (tmp_path / "out.npy").exists()


def test_errors_replace_goes_on_and_counts_the_lines(e5_dir, e5_model, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine\nnot \xff fine\n\nalso \xc3 bad\n")
    result = run_cli("embed", "-i", path, "-o", tmp_path / "out.npy", "--errors", "replace", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == (f"minie5: warning: {path}: 2 lines had bytes that are not valid UTF-8, "
                                     f"embedded with U+FFFD in their place (lines 2, 4)")
    expected = e5_model.encode(["fine", "not \ufffd fine", "", "also \ufffd bad"])
    assert max_diff(np.load(tmp_path / "out.npy"), expected) <= TOL


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\nnot json\n', "line 2: not valid JSON"),
    ('{"text": "a"}\n{"body": "b"}\n', "line 2: no 'text' field (fields: 'body'); choose one with --field"),
    ('{"text": ["a"]}\n', "line 1: field 'text' is a JSON array, expected a string"),
])
def test_bad_json_lines_name_the_line(tmp_path, content, message):
    path = tmp_path / "docs.jsonl"
    path.write_text(content, encoding="utf-8")
    # The input is checked before the model is loaded: no model needed for these errors.
    result = run_cli("embed", "-i", path, "-o", tmp_path / "out.npy", "--model", tmp_path / "no-model")
    assert f"{path}: {message}" in result.error_line()


@pytest.mark.parametrize("args, message", [
    (["hello", "-i", "docs.txt"], "not both"),
    (["hello", "-o", "out.csv"], "unknown output format '.csv'"),
    (["hello", "-o", "no-such-dir/out.npy"], "no-such-dir does not exist"),
    (["-i", "missing.txt"], "missing.txt: no such file"),
    (["hello", "--batch-size", "0"], "--batch-size"),
    (["hello", "--long", "split"], "--long"),
])
def test_usage_errors(tmp_path, args, message):
    result = run_cli("embed", *args, "--model", tmp_path / "no-model", cwd=tmp_path)
    assert message in result.error_line()
    assert result.stdout == ""


def test_empty_stdin_without_arguments_is_a_usage_error(tmp_path):
    result = run_cli("embed", "--model", tmp_path / "no-model", stdin=b"")
    assert "no texts" in result.error_line() and "TEXT" in result.stderr


# ---------------------------------------------------------------- progress
def test_progress_bar_on_a_terminal(e5_dir, tmp_path):
    path = write_lines(tmp_path / "docs.txt", LINES * 3)
    out = tmp_path / "out.npy"
    code, shown = run_cli_on_terminal("embed", "-i", path, "-o", out, "--model", e5_dir, progress_delay=0)
    assert code == 0, shown
    assert "21/21" in shown and "texts/s" in shown and "tokens/s" in shown
    code, shown = run_cli_on_terminal("embed", "-i", path, "-o", out, "--model", e5_dir, "--quiet",
                                      progress_delay=0)
    assert code == 0 and shown.strip() == "", shown
    # With the real delay (2 s), a job this small finishes before any bar is drawn.
    code, shown = run_cli_on_terminal("embed", "-i", path, "-o", out, "--model", e5_dir)
    assert code == 0 and "texts/s" not in shown, shown
