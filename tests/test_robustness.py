"""Reliability of the fast path: determinism, concurrency, fork, the Numba cache,
and property tests against the reference path.

Each test would fail if the behaviour it names regressed: a text's vector
depending on its batch-mates, a crash or a different answer under threads, a
child process killed after fork, an import that dies on a read-only install.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minie5
from helpers import ROUNDING, load_script

REPO = Path(__file__).resolve().parent.parent

TEXTS = [
    "query: how much protein should a female eat",
    "passage: Der schnelle braune Fuchs springt über den faulen Hund.",
    "南瓜的家常做法",
    "",
    "   ",
    "passage: " + "Long text about many things. " * 90,  # over 512 tokens: truncated
    "x",
    "مرحبا بالعالم",
]


@pytest.fixture(scope="module")
def model(e5_dir):
    return minie5.load(e5_dir)


def test_embedding_independent_of_batch_mates(model):
    """A text's embedding alone == in any batch, any batch size (packed tokens: no padding)."""
    alone = np.stack([model.encode(t) for t in TEXTS])
    worst = 0.0
    for batch_size in (1, 2, 3, 8, 32):
        together = model.encode(TEXTS, batch_size=batch_size)
        worst = max(worst, float(np.abs(together - alone).max()))
    reversed_batch = model.encode(TEXTS[::-1])[::-1]
    worst = max(worst, float(np.abs(reversed_batch - alone).max()))
    print(f"parity padding invariance (fast path, batch sizes 1-32, reversed order): max|diff| {worst:.1e}")
    assert worst <= ROUNDING


def test_repeated_calls_are_bit_identical(model):
    """The same call (texts, batches, threads) on the same machine: the same bits, on any BLAS kernel."""
    first = model.encode(TEXTS)
    for _ in range(3):
        assert np.array_equal(model.encode(TEXTS), first)


@pytest.mark.parametrize("kernel", ["native", "haswell"])
@pytest.mark.slow
def test_invariance_under_each_openblas_kernel(e5_dir, tmp_path, kernel):
    """docs/behaviour.md, "Determinism", under OpenBLAS's own kernel choice (OPENBLAS_CORETYPE and
    OPENBLAS_L2_SIZE removed) and under its Haswell kernel (OPENBLAS_CORETYPE=Haswell, as some
    machines set it), whichever of the two this run's environment has: scripts/invariance.py in
    child processes, NUMBA_NUM_THREADS 1 and 2, on texts that take both the Numba and the sgemm path."""
    invariance = load_script("invariance.py")
    if kernel == "haswell" and not invariance.has_avx2():
        pytest.skip("OpenBLAS's Haswell kernel needs AVX2")
    lines = [t for t in TEXTS if t.strip()] + (REPO / "tests" / "data" / "multilingual.txt").read_text(
        encoding="utf-8").splitlines()[:40]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    figures = invariance.measure(str(e5_dir), str(corpus), kernels=(kernel,))[kernel]
    print(f"parity invariance ({figures['kernel']}, {figures['texts']} texts): batch-mates "
          f"{figures['batch_mates']:.1e}, duplicates in one call {figures['duplicates']:.1e}, "
          f"NUMBA_NUM_THREADS 1 vs 2 {figures['threads']:.1e}")
    assert max(figures["batch_mates"], figures["duplicates"], figures["threads"]) <= ROUNDING


def test_eight_threads_get_what_sequential_calls_get(model):
    """encode() from 8 Python threads at once on one model: no crash, no abort, same numbers."""
    batches = [TEXTS[i:] + TEXTS[:i] for i in range(8)]
    expected = [model.encode(b) for b in batches]
    results: list = [None] * 8
    errors: list = []

    def work(i):
        try:
            for _ in range(2):
                results[i] = model.encode(batches[i])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors
    for got, want in zip(results, expected):
        assert np.array_equal(got, want)


def _encode_in_child(model, queue):
    queue.put(model.encode(TEXTS))


def test_fork_after_load_works(model):
    """multiprocessing with Linux's default start method (fork) after the kernels have run."""
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    expected = model.encode(TEXTS)  # the parallel kernels have run in this process
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_encode_in_child, args=(model, queue))
    child.start()
    got = queue.get(timeout=300)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("how", ["default", "environment", "numba.config"])
def test_threading_layer_is_workqueue_unless_the_user_chose_one(e5_dir, how):
    """kernels.py selects Numba's fork-safe workqueue layer for the process, unless NUMBA_THREADING_LAYER
    is set or numba.config.THREADING_LAYER was set before minie5 was imported (docs/behaviour.md)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    setup = ""
    if how == "environment":
        env["NUMBA_THREADING_LAYER"] = "omp"
    elif how == "numba.config":
        setup = "import numba; numba.config.THREADING_LAYER = 'omp'; "
    code = (f"{setup}import numba, minie5; minie5.load({str(e5_dir)!r}).encode(['query: x'] * 40); "
            f"print(numba.threading_layer())")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == ("workqueue" if how == "default" else "omp")


@pytest.mark.slow
def test_numba_cache_dir_is_honoured(e5_dir, tmp_path):
    cache = tmp_path / "numba-cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    code = f"import minie5; print(minie5.load({str(e5_dir)!r}).encode('hi')[:2])"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=600)
    assert any(p.suffix in (".nbi", ".nbc") for p in cache.rglob("*")), "no Numba cache files written"


def _can_mount_read_only() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs root and unshare -m for a read-only bind mount")
@pytest.mark.slow
def test_read_only_install_imports_and_embeds(e5_dir, tmp_path):
    """Package dir and HOME read-only, no NUMBA_CACHE_DIR: import and the first call still work."""
    ro = tmp_path / "ro"
    shutil.copytree(REPO / "minie5", ro / "minie5", ignore=shutil.ignore_patterns("__pycache__"))
    code = (f"import sys; sys.path.insert(0, {str(ro)!r}); import minie5; "
            f"assert minie5.__file__.startswith({str(ro)!r}); "
            f"print(minie5.load({str(e5_dir)!r}).encode('hi')[:2])")
    script = (f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && "
              f"! touch {ro}/probe 2>/dev/null && HOME={ro} {sys.executable} -c \"{code}\"")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["TMPDIR"] = str(tmp_path)  # where the redirected cache goes
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no writable Numba cache directory" in result.stderr  # the note is given
    assert list(tmp_path.glob("minie5-numba-cache-*")), "cache was not redirected to TMPDIR"


# ---------------------------------------------------------------- property tests
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(_text, min_size=1, max_size=4))
def test_random_unicode_fast_equals_reference(model, texts):
    fast = model.encode(texts)
    ref = model.encode(texts, backend="reference")
    cosine = np.sum(fast * ref, axis=1)
    assert fast.shape == (len(texts), model.config.hidden_size)
    assert np.all(np.isfinite(fast))
    assert cosine.min() >= 0.99999


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.integers(0, len(TEXTS) - 1), min_size=1, max_size=10), batch_size=st.integers(1, 12))
def test_random_batch_compositions_match_single_texts(model, picks, batch_size):
    texts = [TEXTS[i] for i in picks]
    singles = {i: model.encode(TEXTS[i]) for i in set(picks)}
    got = model.encode(texts, batch_size=batch_size)
    expected = np.stack([singles[i] for i in picks])
    assert np.abs(got - expected).max() <= ROUNDING
