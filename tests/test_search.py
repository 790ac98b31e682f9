"""`minie5 search` through the real entry point (`python -m minie5` in a subprocess).

The expected ranking is computed here with model.encode: the corpus lines as
passages, the query as a query, cosine similarity, highest first.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from cli_helpers import EXAMPLES, max_diff, run_cli, write_lines

pytestmark = pytest.mark.slow  # the real `minie5 search` in a subprocess per test
TOL = 1e-6


@pytest.fixture()
def corpus(tmp_path):
    """A copy of examples/multilingual.txt (24 lines in 20 languages) in a fresh directory."""
    path = tmp_path / "docs.txt"
    shutil.copy(EXAMPLES / "multilingual.txt", path)
    return path


def corpus_lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def parse_results(stdout: str) -> list[tuple[float, int, str]]:
    """Lines "score<TAB>line number<TAB>text" -> tuples."""
    rows = []
    for line in stdout.splitlines():
        score, number, text = line.split("\t")
        rows.append((float(score), int(number), text))
    return rows


def expected_top(model, lines: list[str], query: str, k: int, passages=None) -> list[tuple[float, int, str]]:
    passages = model.encode_passages(lines) if passages is None else passages
    scores = passages @ model.encode_queries(query)
    order = np.argsort(-scores, kind="stable")[:k]
    return [(float(scores[i]), int(i) + 1, lines[i]) for i in order]


def assert_same_results(got, expected):
    assert [(n, t) for _, n, t in got] == [(n, t) for _, n, t in expected]
    assert max_diff([s for s, _, _ in got], [s for s, _, _ in expected]) <= 1e-4  # printed with 4 decimals


def test_search_prints_the_top_k_lines(e5_dir, e5_model, corpus):
    query = "the highest mountain in Africa"
    result = run_cli("search", "--corpus", corpus, query, "-k", "3", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    got = parse_results(result.stdout)
    assert len(got) == 3
    assert_same_results(got, expected_top(e5_model, corpus_lines(corpus), query, 3))
    assert got[0][1] == 17  # the Swahili line about Kilimanjaro, found from an English query
    assert result.stderr == ""
    assert not corpus.with_suffix(".npy").exists()  # nothing saved without --index


def test_several_queries_and_k_beyond_the_corpus(e5_dir, e5_model, tmp_path):
    lines = ["Berlin is the capital of Germany.", "", "Photosynthesis makes sugar from light."]
    path = write_lines(tmp_path / "small.txt", lines)
    queries = ["how do plants make sugar", "capital of Germany"]
    result = run_cli("search", "--corpus", path, *queries, "-k", "10", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("\n\n")
    assert len(blocks) == 2
    for query, block in zip(queries, blocks):
        header, *rows = block.strip("\n").split("\n")
        assert header == f"# {query}"
        got = parse_results("\n".join(rows))
        assert len(got) == 3  # k larger than the corpus: every line, the blank one included
        assert_same_results(got, expected_top(e5_model, lines, query, 10))


def test_index_is_saved_then_reused(e5_dir, e5_model, corpus, tmp_path):
    index = tmp_path / "saved" / "index.npy"
    index.parent.mkdir()
    query = "how much protein does a woman need"
    first = run_cli("search", "--corpus", corpus, query, "--index", index, "--model", e5_dir)
    assert first.returncode == 0, first.stderr
    assert f"saved the corpus embeddings in {index}" in first.stderr
    saved = np.load(index)
    lines = corpus_lines(corpus)
    assert saved.shape == (len(lines), 384) and saved.dtype == np.float32
    assert max_diff(saved, e5_model.encode_passages(lines)) <= TOL

    second = run_cli("search", "--corpus", corpus, query, "--index", index, "--model", e5_dir)
    assert second.returncode == 0, second.stderr
    assert f"using the corpus embeddings saved in {index}" in second.stderr
    assert second.stdout == first.stdout

    # Proof that the saved rows are what gets scored: shift them by one line, and the results follow.
    shifted = np.roll(saved, 1, axis=0)
    np.save(index, shifted)
    third = run_cli("search", "--corpus", corpus, query, "--index", index, "--model", e5_dir)
    assert third.returncode == 0, third.stderr
    assert_same_results(parse_results(third.stdout), expected_top(e5_model, lines, query, 5, passages=shifted))


def test_index_that_does_not_fit_the_corpus_is_rebuilt(e5_dir, e5_model, corpus, tmp_path):
    index = tmp_path / "index.npy"
    np.save(index, np.zeros((3, 384), np.float32))  # wrong number of rows
    result = run_cli("search", "--corpus", corpus, "capital", "--index", index, "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    assert "holds float32 [3, 384], the corpus needs float32 [24, 384]" in result.stderr
    assert "embedding the corpus again" in result.stderr
    rebuilt = np.load(index)
    assert max_diff(rebuilt, e5_model.encode_passages(corpus_lines(corpus))) <= TOL

    # An index older than the corpus is stale: rebuilt too.
    write_lines(corpus, corpus_lines(corpus) + ["A new line at the end."])
    past = os.stat(corpus).st_mtime - 100
    os.utime(index, (past, past))
    result = run_cli("search", "--corpus", corpus, "capital", "--index", index, "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    assert "is older than" in result.stderr
    assert np.load(index).shape == (25, 384)


def test_embeddings_saved_beside_the_corpus_are_found(e5_dir, e5_model, corpus):
    beside = corpus.with_suffix(".npy")
    made = run_cli("embed", "-i", corpus, "-o", beside, "--prefix", "passage", "--model", e5_dir)
    assert made.returncode == 0, made.stderr
    query = "comment faire une omelette aux pommes de terre"
    result = run_cli("search", "--corpus", corpus, query, "-k", "2", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    assert f"using the corpus embeddings saved in {beside}" in result.stderr
    assert_same_results(parse_results(result.stdout), expected_top(e5_model, corpus_lines(corpus), query, 2))


def test_json_lines_corpus(e5_dir, e5_model, tmp_path):
    lines = ["Berlin is the capital of Germany.", "Photosynthesis makes sugar\tfrom light.", "Der Rhein."]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(lines)))
    result = run_cli("search", "--corpus", path, "--field", "body", "plants and sugar", "-k", "1",
                     "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    (score, number, text), = parse_results(result.stdout)
    expected = expected_top(e5_model, lines, "plants and sugar", 1)[0]
    assert number == expected[1] == 2
    assert text == "Photosynthesis makes sugar from light."  # printed on one line: the tab became a space
    assert abs(score - expected[0]) <= 1e-4


@pytest.mark.parametrize("content, message", [
    (b"", "the corpus has no lines to search"),
    (b"ok\nbad \xff\n", "line 2: not valid UTF-8"),
])
def test_bad_corpus_is_an_error(tmp_path, content, message):
    path = tmp_path / "docs.txt"
    path.write_bytes(content)
    result = run_cli("search", "--corpus", path, "query", "--model", tmp_path / "no-model")
    assert message in result.error_line()
    assert result.stdout == ""


def test_long_texts_options_apply_to_corpus_and_queries(e5_dir, e5_model, tmp_path):
    lines = ["Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen. " * 3,
             "Berlin is the capital of Germany.", "A whale is a mammal, not a fish."]
    path = write_lines(tmp_path / "docs.txt", lines)
    query = "how do plants make sugar from light"
    result = run_cli("search", "--corpus", path, query, "--long", "window", "--max-length", "16", "--model", e5_dir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # windows: nothing truncated
    passages = e5_model.encode_passages(lines, long="window", max_length=16)
    queries = e5_model.encode_queries([query], long="window", max_length=16)
    scores = passages @ queries[0]
    order = np.argsort(-scores, kind="stable")
    assert_same_results(parse_results(result.stdout), [(float(scores[i]), int(i) + 1, lines[i]) for i in order])
