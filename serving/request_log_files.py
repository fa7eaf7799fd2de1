"""Where logged requests go: TFRecord files `<filename_prefix>-<start>-<n>.tfrecord`, written by a thread of their own
from a queue bounded in bytes, so a slow or stuck disk never holds up a request: when the queue is full the record is
dropped and counted. Files rotate at --request_log_max_file_bytes; of the files with this prefix (earlier runs
included) the newest --request_log_max_files are kept.

`<start>` is when the writer started (UTC, to the microsecond: two writers never share a name) and `<n>` counts from
00000, so names sort in the order they were written. A prefix belongs to one server: another one writing the same
prefix would delete its files.
"""
from __future__ import annotations

import collections
import datetime
import logging
import os
import re
import threading
from collections.abc import Callable

import tensorflow as tf

from serving.errors import ServingError

log = logging.getLogger(__name__)

TFRECORD_FRAMING_BYTES = 16  # per record: its length (8 bytes) and two CRC32Cs (4 each)
_FILE_NAME = re.compile(r"-(\d{8}T\d{6}\.\d{6}Z)-(\d+)\.tfrecord")


class RequestLogFiles:
    """One filename_prefix's files and writer thread. `offer` never blocks; `on_result(model_name, status_code)` is
    called once per offered record: "OK" when written, the error's code name when writing failed, RESOURCE_EXHAUSTED
    when the queue was full, UNAVAILABLE when the writer was closing."""

    def __init__(self, prefix: str, *, max_file_bytes: int, max_files: int, max_queue_bytes: int,
                 on_result: Callable[[str, str], None]):
        self.prefix = prefix
        self.max_file_bytes, self.max_files, self.max_queue_bytes = max_file_bytes, max_files, max_queue_bytes
        self._on_result = on_result
        self._start = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        try:
            tf.io.gfile.makedirs(os.path.dirname(prefix))
        except tf.errors.OpError as error:
            raise ServingError.from_tf(error) from None
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()  # (model name, PredictionLog, its size)
        self._queued_bytes = 0
        self._closing = False
        self._file = None
        self._file_bytes = 0
        self._next_index = 0
        self._failing = False  # the last write failed: logged once, until one succeeds again
        self._thread = threading.Thread(target=self._run, name="request_log_writer", daemon=True)
        self._thread.start()

    def offer(self, model_name: str, entry) -> None:
        """Queues a PredictionLog to be written, or drops it when the queue has no room for it."""
        size = entry.ByteSize()
        with self._cond:
            refused = "UNAVAILABLE" if self._closing else (
                "RESOURCE_EXHAUSTED" if self._queued_bytes + size > self.max_queue_bytes else None)
            if refused is None:
                self._queue.append((model_name, entry, size))
                self._queued_bytes += size
                self._cond.notify()
        if refused is not None:
            self._on_result(model_name, refused)

    def close(self, timeout_s: float) -> None:
        """Writes what is queued (for up to `timeout_s`; a stuck disk keeps the rest) and closes the file."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("Request log %s: the writer did not finish within %.0f s; %d queued records are lost",
                        self.prefix, timeout_s, len(self._queue))

    # ------------------------------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    break
                model_name, entry, size = self._queue.popleft()
                self._queued_bytes -= size
                drained = not self._queue
            self._on_result(model_name, self._write(entry.SerializeToString(), flush=drained))
        if self._file is not None:
            self._file.close()

    def _write(self, record: bytes, flush: bool) -> str:
        """Appends one record (to a new file when it would take this one past max_file_bytes); the status code."""
        try:
            if self._file is None or self._file_bytes + len(record) + TFRECORD_FRAMING_BYTES > self.max_file_bytes:
                self._open_next_file()
            self._file.write(record)
            self._file_bytes += len(record) + TFRECORD_FRAMING_BYTES
            if flush:  # readers see every record once the queue is drained
                self._file.flush()
        except tf.errors.OpError as error:
            if not self._failing:
                log.error("Request log %s: writing failed, dropping records until it works again: %s", self.prefix,
                          error.message)
            self._failing = True
            self._discard_file()  # the next record tries a new file
            return ServingError.from_tf(error).code.name
        if self._failing:
            log.info("Request log %s: writing works again", self.prefix)
            self._failing = False
        return "OK"

    def _discard_file(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except tf.errors.OpError:
                pass  # already failing: the write's error was reported

    def _open_next_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        path = f"{self.prefix}-{self._start}-{self._next_index:05d}.tfrecord"
        self._next_index += 1
        self._file = tf.io.TFRecordWriter(path)
        self._file_bytes = 0
        self._delete_oldest_files()

    def _delete_oldest_files(self) -> None:
        """Keeps the newest max_files files of this prefix (the one just opened included); a failure to list or
        delete is logged, and the record is still written."""
        try:
            ours = []
            for path in tf.io.gfile.glob(f"{self.prefix}-*.tfrecord"):
                match = _FILE_NAME.fullmatch(path[len(self.prefix):])
                if match:
                    ours.append((match.group(1), int(match.group(2)), path))
            for _, _, path in sorted(ours)[:-self.max_files]:
                tf.io.gfile.remove(path)
        except tf.errors.OpError as error:
            log.warning("Request log %s: could not delete old files: %s", self.prefix, error.message)
