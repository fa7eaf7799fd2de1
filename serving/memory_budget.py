"""The one accountant of request memory: every request charges what it is about to allocate before allocating it,
against its own budget and the server's total.

    memory = budget.open()                  # one per request, on either front end
    memory.received(len(body))              # the request's own bytes, as they arrive
    memory.charge(cost, "decoded tensor x") # before each allocation the request's data implies
    memory.close()                          # once the request's work is done (answered or failed)

A request's budget grows with its size: `floor + factor x its bytes`, capped at --max_request_memory_bytes, so a
small request cannot cost gigabytes while a large one may cost in proportion. A charge beyond it is the client's
fault (INVALID_ARGUMENT, HTTP 400). A charge that fits but finds the total budget (--max_total_request_memory_bytes)
taken by requests in flight is the server's state right now (RESOURCE_EXHAUSTED, HTTP 429): the client may retry.
What a request will allocate is estimated by serving/request_costs.py.
"""
from __future__ import annotations

import os
import threading

import grpc

from serving.errors import ServingError, invalid

MIB = 1 << 20
# Every request may cost this much, whatever its size: a 30 KB camera JPEG decodes to ~200 MB of pixels.
REQUEST_MEMORY_FLOOR_BYTES = 64 * MIB
# Defaults derived from the machine: the total is a quarter of its memory, one request at most half of that.
TOTAL_SHARE_OF_MEMORY = 4
REQUEST_SHARE_OF_TOTAL = 2


def machine_memory_bytes() -> int:
    """The memory this process may use: its cgroup's limit (containers) when there is one, else the machine's RAM."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):  # cgroup v2, v1
        try:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(ram, int(text))
    return ram


def default_total_bytes() -> int:
    return machine_memory_bytes() // TOTAL_SHARE_OF_MEMORY


def default_request_cap_bytes(total_bytes: int) -> int:
    return total_bytes // REQUEST_SHARE_OF_TOTAL


class MemoryBudget:
    """The server's budget: `total_bytes` for all requests in flight, each at most
    min(`request_cap_bytes`, REQUEST_MEMORY_FLOOR_BYTES + `factor` x its bytes)."""

    def __init__(self, *, total_bytes: int, request_cap_bytes: int, factor: int):
        self.total_bytes = total_bytes
        self.request_cap_bytes = request_cap_bytes
        self.factor = factor
        self._lock = threading.Lock()
        self._in_use = 0

    def open(self) -> RequestMemory:
        return RequestMemory(self)

    def request_limit(self, request_bytes: int) -> int:
        return min(self.request_cap_bytes, REQUEST_MEMORY_FLOOR_BYTES + self.factor * request_bytes)

    def _take(self, nbytes: int, held: int, what: str) -> None:
        with self._lock:
            if self._in_use + nbytes > self.total_bytes:
                free = max(0, self.total_bytes - self._in_use)
                raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"Not enough memory for this request right now: {what} needs {nbytes} more bytes "
                                   f"(the request holds {held}), {free} of the server's {self.total_bytes} bytes for "
                                   "requests in flight are free (--max_total_request_memory_bytes); retry later")
            self._in_use += nbytes

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self._in_use -= nbytes


class RequestMemory:
    """One request's share of the budget; close() gives it back."""

    def __init__(self, budget: MemoryBudget):
        self._budget = budget
        self._lock = threading.Lock()  # REST charges on the event loop, then on a worker thread
        self.request_bytes = 0
        self.held = 0

    def received(self, nbytes: int) -> None:
        """The request's own bytes (body, message): they raise its budget as well as using it."""
        with self._lock:
            self.request_bytes += nbytes
        self.charge(nbytes, "the request's bytes")

    def charge(self, nbytes: int, what: str) -> None:
        """Takes `nbytes` for `what` before it is allocated; raises ServingError when it does not fit."""
        if nbytes <= 0:
            return
        with self._lock:
            limit = self._budget.request_limit(self.request_bytes)
            if self.held + nbytes > limit:
                budget = self._budget
                raise invalid(
                    f"Request needs more memory than its budget of {limit} bytes (the least of "
                    f"--max_request_memory_bytes={budget.request_cap_bytes} and {REQUEST_MEMORY_FLOOR_BYTES >> 20} MiB "
                    f"+ --request_memory_factor={budget.factor} x its {self.request_bytes} bytes): {what} needs "
                    f"{nbytes} bytes on top of {self.held}")
            self._budget._take(nbytes, self.held, what)
            self.held += nbytes

    def close(self) -> None:
        with self._lock:
            held, self.held = self.held, 0
        self._budget._give_back(held)


class _Unmetered(RequestMemory):
    """What the server's own work (warmup records from the model's folder) runs with: trusted, not charged."""

    def __init__(self):
        self.request_bytes = self.held = 0

    def received(self, nbytes: int) -> None:
        pass

    def charge(self, nbytes: int, what: str) -> None:
        pass

    def close(self) -> None:
        pass


UNMETERED = _Unmetered()
