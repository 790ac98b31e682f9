"""`minie5 info [MODEL]`: the architecture and a parameter table read from the safetensors header.

Run as a user runs it (a subprocess), and every figure is checked against an
independent count: safetensors.safe_open's shapes for the parameters, the file
size minus the header for the bytes, and the sizes config.json implies.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open

from cli_helpers import run_cli
from tiny_models import numpy_weights, tiny_config, write_model_dir


def independent_count(path: Path) -> tuple[int, int]:
    """(parameters, bytes of tensor data) of a .safetensors file, without minie5: shapes from
    safe_open (no tensor is read), bytes = file size - 8 - the header length."""
    with safe_open(str(path), framework="numpy") as f:
        parameters = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    with open(path, "rb") as f:
        (header_length,) = struct.unpack("<Q", f.read(8))
    return parameters, path.stat().st_size - 8 - header_length


def table_row(stdout: str, label: str) -> tuple[int, int]:
    """(parameters, bytes) of the row of the parameter table that starts with label."""
    for line in stdout.splitlines():
        row = re.match(rf"^\s+{re.escape(label)}\s+([\d,]+)\s+([\d,]+)\s+[\d.]+ %$", line)
        if row:
            return int(row[1].replace(",", "")), int(row[2].replace(",", ""))
    raise AssertionError(f"no row {label!r} in:\n{stdout}")


def test_info_e5_totals_match_the_file(e5_dir):
    result = run_cli("info", e5_dir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    print(out)
    parameters, data_bytes = independent_count(Path(e5_dir) / "model.safetensors")
    assert table_row(out, "total") == (parameters, data_bytes)
    assert 117_000_000 < parameters < 119_000_000  # "118 M" (the hub file adds a 148 k pooler)
    assert 465e6 < data_bytes < 475e6  # about 470 MB of float32
    word = table_row(out, "word_embeddings")
    assert word == (250037 * 384, 250037 * 384 * 4)
    assert word[0] > parameters / 2  # the vocabulary is most of the model
    assert table_row(out, "encoder (12 layers)")[0] == 12 * (4 * (384 * 384 + 384) + 2 * 384 * 1536 + 1536 + 384
                                                             + 2 * 2 * 384)
    for line in ("layers              12", "hidden size         384", "attention heads     12 (head_dim 32)",
                 "feed-forward size   1536 (gelu)", "vocabulary          250,037 tokens"):
        assert line in out
    assert f"file: {os.path.getsize(Path(e5_dir) / 'model.safetensors'):,} bytes" in out
    assert len([line for line in out.splitlines() if re.match(r"^  \d+ ", line)]) == 12  # one row per layer


def test_info_model_option_is_the_positional_argument(e5_dir):
    assert run_cli("info", "--model", e5_dir).stdout == run_cli("info", e5_dir).stdout
    both = run_cli("info", e5_dir, "--model", e5_dir)
    assert both.returncode == 2 and "not both" in both.stderr


def test_info_default_model_from_environment(e5_dir):
    result = run_cli("info", env={"MINIE5_MODEL": str(e5_dir)})
    assert result.returncode == 0 and "word_embeddings" in result.stdout


def test_info_pooler_and_heads_of_a_prefixed_checkpoint(tmp_path):
    """A BertForMaskedLM-style file: "bert." keys, a pooler and an MLM head tensor, counted apart."""
    cfg = tiny_config(hidden=24, heads=3, layers=2, intermediate=40, vocab=100)
    weights = numpy_weights(cfg, seed=3)  # includes pooler.dense.*
    weights["cls.predictions.bias"] = np.zeros(100, np.float32)
    model_dir = write_model_dir(tmp_path / "mlm", cfg, weights, prefix="bert.")
    result = run_cli("info", model_dir)
    assert result.returncode == 0, result.stderr
    parameters, data_bytes = independent_count(model_dir / "model.safetensors")
    assert table_row(result.stdout, "total") == (parameters, data_bytes)
    assert table_row(result.stdout, "pooler (not used by minie5)") == (24 * 24 + 24, 4 * (24 * 24 + 24))
    assert table_row(result.stdout, "cls.predictions.bias") == (100, 400)
    assert table_row(result.stdout, "attention")[0] == 2 * 4 * (24 * 24 + 24)


def test_info_missing_model_is_a_one_line_error(tmp_path):
    result = run_cli("info", tmp_path / "nowhere")
    assert result.error_line().startswith("minie5: error: ")


def test_info_hub_id(e5_dir, tmp_path):
    """A repo id resolves through huggingface_hub's cache (offline), as `embed` resolves it."""
    from test_hub import COMMIT, REPO_ID, REPO_ROOT, build_hub_cache

    cache = tmp_path / "home" / "hub"
    build_hub_cache(cache, REPO_ID, COMMIT, Path(e5_dir))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(tmp_path / "home"), HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-m", "minie5", "info", REPO_ID], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(REPO_ID)
    assert table_row(proc.stdout, "total") == independent_count(Path(e5_dir) / "model.safetensors")
