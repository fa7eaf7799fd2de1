"""Dynamic batching like TF Serving's BatchingSession + SharedBatchScheduler.

Concurrent Run calls on the same (version, signature, inputs, outputs, per-item shape) are concatenated along dim 0,
run once, and the outputs split back. A batch closes when it is full; an open batch is scheduled once a batch thread is
free and it is `batch_timeout_micros` old (0: as soon as a thread is free, so batches form only under load).

Deadlines: a request whose deadline passed while it waited is dropped from its batch before the batch runs (its
caller has already been answered DEADLINE_EXCEEDED), and the batch runs with the latest deadline of the requests left
as its RunOptions timeout, as BatchingSession does.
"""
from __future__ import annotations

import collections
import os
import threading
import time

import grpc
import numpy as np

from serving.errors import ServingError, invalid


class BatchingOptions:
    """SharedBatchScheduler defaults, overridden by a BatchingParameters text proto."""

    def __init__(self, max_batch_size=1000, batch_timeout_micros=0, max_enqueued_batches=10,
                 num_batch_threads=None, allowed_batch_sizes=(), thread_pool_name="model_server_batch_threads"):
        self.max_batch_size = int(max_batch_size)
        self.batch_timeout_micros = int(batch_timeout_micros)
        self.max_enqueued_batches = int(max_enqueued_batches)
        self.num_batch_threads = int(num_batch_threads or os.cpu_count() or 1)
        self.allowed_batch_sizes = tuple(int(s) for s in allowed_batch_sizes)
        self.thread_pool_name = thread_pool_name
        if self.max_batch_size < 1 or self.num_batch_threads < 1 or self.max_enqueued_batches < 1:
            raise ValueError("max_batch_size, num_batch_threads and max_enqueued_batches must be >= 1")
        if self.allowed_batch_sizes:
            if list(self.allowed_batch_sizes) != sorted(self.allowed_batch_sizes):
                raise ValueError("allowed_batch_sizes entries must be monotonically increasing")
            if self.allowed_batch_sizes[-1] != self.max_batch_size:
                raise ValueError("Final entry in allowed_batch_sizes must equal max_batch_size")

    @classmethod
    def from_proto(cls, params) -> "BatchingOptions":
        def value(field, default):
            return getattr(params, field).value if params.HasField(field) else default
        return cls(max_batch_size=value("max_batch_size", 1000),
                   batch_timeout_micros=value("batch_timeout_micros", 0),
                   max_enqueued_batches=value("max_enqueued_batches", 10),
                   num_batch_threads=value("num_batch_threads", None),
                   allowed_batch_sizes=list(params.allowed_batch_sizes),
                   thread_pool_name=value("thread_pool_name", "model_server_batch_threads"))


class _Task:
    __slots__ = ("inputs", "size", "deadline", "abandoned", "done", "outputs", "error")

    def __init__(self, inputs, size, deadline):
        self.inputs, self.size, self.deadline = inputs, size, deadline
        self.abandoned = False  # the caller stopped waiting (deadline passed): never run it
        self.done = threading.Event()
        self.outputs = self.error = None

    def expired(self, now: float) -> bool:
        return self.abandoned or (self.deadline is not None and self.deadline <= now)


class _Batch:
    __slots__ = ("key", "run", "tasks", "size", "created")

    def __init__(self, key, run):
        self.key, self.run = key, run
        self.tasks, self.size, self.created = [], 0, time.monotonic()


class BatchScheduler:
    """Shared by every model and version; `metrics` (optional) gets batch sizes and queueing latency."""

    def __init__(self, options: BatchingOptions, metrics=None):
        self.options = options
        self._metrics = metrics
        self._cond = threading.Condition()
        self._open: dict[tuple, _Batch] = {}
        self._closed: collections.deque[_Batch] = collections.deque()
        self._stopping = False
        self._threads = [threading.Thread(target=self._worker, name=f"{options.thread_pool_name}_{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    def run(self, key: tuple, run, inputs: dict[str, np.ndarray], deadline: float | None = None):
        """Runs `run(merged_inputs, timeout_ms)` as part of a batch; `deadline` (time.monotonic()) bounds the wait and
        the run. Inputs that cannot be batched (scalars, unequal dim 0) run alone."""
        sizes = {a.shape[0] if a.ndim else None for a in inputs.values()}
        if len(sizes) != 1 or None in sizes or 0 in sizes:
            return run(inputs, _timeout_ms([deadline], time.monotonic()))
        size = sizes.pop()
        if size > self.options.max_batch_size:
            raise invalid(f"Task size {size} is larger than maximum input batch size {self.options.max_batch_size}")
        # Items batch together only if their per-item shapes and dtypes agree.
        key = key + tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(inputs.items()))
        task = _Task(inputs, size, deadline)
        with self._cond:
            if self._stopping:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "Batch scheduler is shutting down")
            batch = self._open.get(key)
            if batch is not None and batch.size + size > self.options.max_batch_size:
                self._close(key)
                batch = None
            if batch is None:
                if len(self._closed) >= self.options.max_enqueued_batches:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                       "The batch scheduling queue to which this task was submitted is full")
                batch = self._open[key] = _Batch(key, run)
            batch.tasks.append(task)
            batch.size += size
            if batch.size >= self.options.max_batch_size:
                self._close(key)
            self._cond.notify()
        if not task.done.wait(None if deadline is None else max(0.0, deadline - time.monotonic())):
            with self._cond:
                task.abandoned = True
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded while waiting for the batch")
        if task.error is not None:
            raise task.error
        return task.outputs

    def _close(self, key):
        self._closed.append(self._open.pop(key))

    def _next_batch(self):
        """Called with the lock held: a closed batch, else the oldest open batch past its timeout."""
        if self._closed:
            return self._closed.popleft(), None
        timeout = self.options.batch_timeout_micros / 1e6
        now = time.monotonic()
        oldest = min(self._open.values(), key=lambda b: b.created, default=None)
        if oldest is None:
            return None, None
        due = oldest.created + timeout
        if due <= now:
            del self._open[oldest.key]
            return oldest, None
        return None, due - now

    def _worker(self):
        while True:
            with self._cond:
                while True:
                    batch, wait = self._next_batch()
                    if batch is not None:
                        break
                    if self._stopping:
                        return
                    self._cond.wait(wait)
            self._process(batch)

    def _process(self, batch: _Batch):
        started = time.monotonic()
        with self._cond:  # a task is either abandoned before this point or runs
            expired = [t for t in batch.tasks if t.expired(started)]
            tasks = [t for t in batch.tasks if not t.expired(started)]
        for task in expired:
            task.error = ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      "Run() timeout exceeded while waiting in batching queue")
            task.done.set()
        if not tasks:
            return
        size = sum(t.size for t in tasks)
        try:
            if len(tasks) == 1 and not self.options.allowed_batch_sizes:
                merged = tasks[0].inputs
            else:
                merged = {name: np.concatenate([t.inputs[name] for t in tasks]) for name in tasks[0].inputs}
            padded = self._padded_size(size)
            if padded > size:
                merged = {n: np.concatenate([a, np.repeat(a[:1], padded - size, axis=0)]) for n, a in merged.items()}
            outputs = batch.run(merged, _timeout_ms([t.deadline for t in tasks], started))
            if self._metrics is not None:
                self._metrics.record_batch(padded, (started - batch.created) * 1e6)
            offset = 0
            for task in tasks:
                split = {}
                for name, array in outputs.items():
                    if array.ndim == 0 or array.shape[0] != padded:
                        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                           "Batched output tensor's 0th dimension does not equal the sum of the "
                                           "0th dimension sizes of the input tensors")
                    split[name] = array[offset:offset + task.size]
                task.outputs = split
                offset += task.size
        except ServingError as error:
            for task in tasks:
                task.error = error
        except Exception as error:  # a bug must fail the requests, not kill the batch thread
            for task in tasks:
                task.error = ServingError(grpc.StatusCode.INTERNAL, f"Batch run failed: {error}")
        for task in tasks:
            task.done.set()

    def _padded_size(self, size: int) -> int:
        for allowed in self.options.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


def _timeout_ms(deadlines, now: float) -> int:
    """RunOptions.timeout_in_ms for a run serving requests with these deadlines: the latest one (0 = none)."""
    if any(deadline is None for deadline in deadlines):
        return 0
    return max(1, int((max(deadlines) - now) * 1000))
