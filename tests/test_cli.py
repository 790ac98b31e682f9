"""The command line (`minie5 embed`, `python -m minie5`) and scripts/model_card_example.py.

The CLI tests run the real entry point in a subprocess, as a user would, and
compare its JSON with model.encode() in this process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minie5.cli import main as cli
from helpers import load_script

REPO = Path(__file__).resolve().parent.parent
HIDDEN = 384
TOL = 1e-6


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m minie5 ARGS...` in a subprocess; stdout and stderr captured as text."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "minie5", *args], capture_output=True, text=True,
                          env=full_env, timeout=600)


def embed_json(*args: str, env: dict | None = None):
    result = run_cli("embed", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


# ---------------------------------------------------------------- minie5 embed
@pytest.mark.slow
def test_embed_one_text_prints_one_vector(e5_dir, e5_model):
    text = "query: how much protein should a female eat"
    vector = embed_json(text, "--model", str(e5_dir))
    assert isinstance(vector, list) and len(vector) == HIDDEN
    assert all(isinstance(x, float) for x in vector)
    assert max_diff(vector, e5_model.encode(text)) <= TOL


@pytest.mark.slow
def test_embed_json_keeps_float32_precision(e5_dir, e5_model):
    # Each printed number reads back as exactly the float32 value it came from.
    vector = np.array(embed_json("hello world", "--model", str(e5_dir)), dtype=np.float64)
    assert np.array_equal(vector.astype(np.float32).astype(np.float64), vector)


@pytest.mark.slow
def test_embed_several_texts_prints_a_list_of_vectors(e5_dir, e5_model):
    texts = ["hello world", "南瓜的家常做法", "passage: Berlin is the capital of Germany."]
    vectors = embed_json(*texts, "--model", str(e5_dir))
    assert isinstance(vectors, list) and len(vectors) == len(texts)
    assert all(isinstance(v, list) and len(v) == HIDDEN for v in vectors)
    assert max_diff(vectors, e5_model.encode(texts)) <= TOL


@pytest.mark.slow
def test_embed_prefix_query(e5_dir, e5_model):
    text = "how much protein should a female eat"
    vector = embed_json(text, "--prefix", "query", "--model", str(e5_dir))
    assert max_diff(vector, e5_model.encode("query: " + text)) <= TOL


@pytest.mark.slow
def test_embed_model_from_environment(e5_dir, e5_model):
    vector = embed_json("hello", "--prefix", "passage", env={"MINIE5_MODEL": str(e5_dir)})
    assert max_diff(vector, e5_model.encode_passages("hello")) <= TOL


@pytest.mark.slow
def test_embed_missing_model_dir_is_a_one_line_error(tmp_path):
    missing = tmp_path / "no-such-model"
    result = run_cli("embed", "hello", "--model", str(missing))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("minie5: error: ") and str(missing) in lines[0]


@pytest.mark.slow
def test_embed_without_text_is_a_usage_error():
    result = run_cli("embed")
    assert result.returncode == 2
    assert "TEXT" in result.stderr


@pytest.mark.slow
def test_no_subcommand_is_a_usage_error():
    result = run_cli()
    assert result.returncode == 2
    assert "embed" in result.stderr


def test_main_in_process_returns_exit_codes(e5_dir, e5_model, tmp_path, capsys):
    assert cli.main(["embed", "hi", "--model", str(e5_dir)]) == 0
    assert max_diff(json.loads(capsys.readouterr().out), e5_model.encode("hi")) <= TOL
    assert cli.main(["embed", "hi", "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minie5: error: ") and err.count("\n") == 1
    assert cli.main(["embed"]) == 2  # usage error: returned, not raised
    assert cli.main(["--help"]) == 0


# ---------------------------------------------------------------- scripts/model_card_example.py
@pytest.mark.slow
def test_model_card_example(e5_dir, capsys):
    scores = load_script("model_card_example.py").main([str(e5_dir)])
    printed = capsys.readouterr().out
    with capsys.disabled():
        print(f"\nmodel card scores on the fixture: {np.round(scores.astype(float), 2).tolist()}")
    assert json.loads(printed) == np.round(scores.astype(np.float64), 2).tolist()
    assert scores.shape == (2, 2)
    # Each query scores highest with its own passage...
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]
    # ...at about the values the fixture gives (93.2 and 91.6; off-diagonal ~75).
    assert abs(scores[0, 0] - 93) < 3 and abs(scores[1, 1] - 92) < 3
    assert scores[0, 1] < 85 and scores[1, 0] < 85
