"""BatchScheduler: concurrent tasks merge along dim 0 and split back; size, queue and timeout limits."""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from serving.batching import BatchingOptions, BatchScheduler
from serving.errors import ServingError


def test_concurrent_tasks_merge_into_one_batch_and_split_back():
    calls = []

    def run(inputs, timeout_ms):
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2, "n": np.full(len(inputs["x"]), len(inputs["x"]))}

    # The batch only closes when full (4 items) because the timeout is far away.
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=4, batch_timeout_micros=30_000_000,
                                               num_batch_threads=1))
    results = {}

    def submit(i):
        results[i] = scheduler.run(("k",), run, {"x": np.array([float(i), float(i) + 0.5])})

    try:
        threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert calls == [4]
        for i in range(2):
            assert results[i]["y"].tolist() == [2.0 * i, 2.0 * i + 1.0]
    finally:
        scheduler.stop()


def test_limits_and_padding():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=4, allowed_batch_sizes=(2, 4), num_batch_threads=1))
    seen = []

    def run(inputs, timeout_ms):
        seen.append(inputs["x"].size)
        return {"y": inputs["x"] + 1}

    try:
        assert scheduler.run(("k",), run, {"x": np.array([1.0, 2.0, 3.0])})["y"].tolist() == [2.0, 3.0, 4.0]
        assert seen == [4]  # padded to the next allowed batch size, padding sliced off
        with pytest.raises(ServingError) as error:
            scheduler.run(("k",), run, {"x": np.zeros(5)})
        assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.message == "Task size 5 is larger than maximum input batch size 4"
        assert scheduler.run(("k",), run, {"x": np.array(1.0)})["y"] == 2.0  # scalars run unbatched
    finally:
        scheduler.stop()
    with pytest.raises(ValueError):
        BatchingOptions(max_batch_size=8, allowed_batch_sizes=(2, 4))


def test_a_request_whose_deadline_passed_in_the_queue_is_dropped_before_the_run():
    release, started = threading.Event(), threading.Event()
    runs = []

    def run(inputs, timeout_ms):
        runs.append((inputs["x"].tolist(), timeout_ms))
        started.set()
        release.wait(10)  # the first batch occupies the only batch thread
        return {"y": inputs["x"]}

    scheduler = BatchScheduler(BatchingOptions(max_batch_size=1, num_batch_threads=1))
    first = threading.Thread(target=scheduler.run, args=(("k",), run, {"x": np.array([1.0])}))
    try:
        first.start()
        assert started.wait(10)
        late_started = time.monotonic()
        with pytest.raises(ServingError) as error:
            scheduler.run(("k",), run, {"x": np.array([2.0])}, deadline=time.monotonic() + 0.3)
        assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - late_started < 5  # answered at its deadline, not when the queue moved
        # A request with time left runs with that time as its RunOptions timeout.
        deadline = time.monotonic() + 20
        waiter = threading.Thread(target=scheduler.run, args=(("k",), run, {"x": np.array([3.0])}),
                                  kwargs={"deadline": deadline})
        waiter.start()
        release.set()
        first.join(10)
        waiter.join(10)
    finally:
        release.set()
        scheduler.stop()
    assert [x for x, _ in runs] == [[1.0], [3.0]]  # the late request never ran
    assert runs[0][1] == 0 and 0 < runs[1][1] <= 20_000
