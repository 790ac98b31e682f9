"""The Batcher alone, with a stand-in model: shared batches within the token budget, each request its own
rows, round robin for large requests, a failing batch failing only its requests, no rows after stop()."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from minie5.cli.batcher import BatchFailed, Batcher, BatcherStopped


class FakeModel:
    """Stands in for Model in Batcher: a row's "embedding" is [its first id, its length]; batches are recorded."""

    def __init__(self, fail_on: int | None = None, delay: float = 0.0):
        self.config = SimpleNamespace(hidden_size=2, max_positions=8)
        self.batches = []
        self.fail_on = fail_on  # a first id that makes the batch fail
        self.delay = delay

    def encode_ids(self, ids, batch_size=32):
        self.batches.append([list(row) for row in ids])
        time.sleep(self.delay)
        if any(row[0] == self.fail_on for row in ids):
            raise RuntimeError("boom")
        return np.array([[row[0], len(row)] for row in ids], dtype=np.float32)


def start_batcher(model, max_batch_tokens=8, max_wait=0.05):
    batcher = Batcher(model, max_batch_tokens=max_batch_tokens, max_wait=max_wait)
    batcher.start([[0, 1]])
    batcher.wait_ready()
    return batcher


def embed_in_threads(batcher, requests: list, stagger: float = 0.0) -> list:
    results = [None] * len(requests)

    def send(i):
        try:
            results[i] = batcher.embed(requests[i])
        except Exception as e:  # returned as the result
            results[i] = e

    threads = []
    for i in range(len(requests)):
        threads.append(threading.Thread(target=send, args=(i,)))
        threads[-1].start()
        time.sleep(stagger)
    for t in threads:
        t.join(30)
    return results


def test_batcher_shares_batches_within_the_token_budget_and_keeps_rows_apart():
    model = FakeModel()
    batcher = start_batcher(model)
    requests = [[[10 * i + j] * (1 + (i + j) % 4) for j in range(1 + i % 3)] for i in range(12)]
    results = embed_in_threads(batcher, requests)
    batcher.stop()
    for ids, got in zip(requests, results):
        np.testing.assert_array_equal(got, [[row[0], len(row)] for row in ids])
    work = model.batches[1:]  # after the warm-up
    assert all(sum(len(row) for row in batch) <= 8 for batch in work)
    assert sorted(row[0] for batch in work for row in batch) == sorted(row[0] for r in requests for row in r)
    assert len(work) < len(requests)  # shared batches


def test_batcher_round_robin_lets_a_small_request_pass_a_large_one():
    model = FakeModel(delay=0.02)
    batcher = start_batcher(model, max_wait=0.0)
    large = [[100 + k] * 8 for k in range(10)]  # 10 batches of one row each
    results = embed_in_threads(batcher, [large, [[7, 7]]], stagger=0.01)
    batcher.stop()
    assert results[1].tolist() == [[7, 2]] and len(results[0]) == 10
    small_batch = next(i for i, batch in enumerate(model.batches) if [7, 7] in batch)
    assert small_batch <= 3  # not behind all ten rows of the large request


def test_batcher_failure_fails_only_its_batch():
    model = FakeModel(fail_on=66)
    batcher = start_batcher(model, max_wait=0.0)
    bad = embed_in_threads(batcher, [[[66, 1]]])[0]
    good = batcher.embed([[5, 5, 5]])
    batcher.stop()
    assert isinstance(bad, BatchFailed)
    assert str(bad) == "the model failed on this batch: RuntimeError: boom"
    assert isinstance(bad.__cause__, RuntimeError)
    assert good.tolist() == [[5, 3]]


def test_batcher_takes_no_rows_after_stop():
    model = FakeModel()
    batcher = start_batcher(model)
    batcher.stop()
    with pytest.raises(BatcherStopped):
        batcher.embed([[5, 5]])
    assert len(model.batches) == 1  # the warm-up only


def test_warm_up_failure_is_raised_by_wait_ready():
    model = FakeModel(fail_on=0)  # the warm-up row starts with id 0
    batcher = Batcher(model, max_batch_tokens=8, max_wait=0.0)
    batcher.start([[0, 1]])
    with pytest.raises(RuntimeError, match="boom"):
        batcher.wait_ready()
