"""The lock that keeps two pipeline runs on one output folder from overlapping: `image-retrain schedule` takes it for
each firing, `image-retrain run` before it starts (both default to OUTPUT_DIR/schedule.lock, --lock-file)."""
from __future__ import annotations

import contextlib
import fcntl
import os

DEFAULT_LOCK_FILE = "schedule.lock"  # under OUTPUT_DIR


@contextlib.contextmanager
def exclusive_lock(path: str):
    """Yields True while holding an exclusive, non-blocking flock on `path`, False if another holder has it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
