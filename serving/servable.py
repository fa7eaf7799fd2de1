"""What every loaded model version is to the server (`VersionLifecycle`), whichever runtime serves it: its signatures,
`run`, reference counting (unloaded only after its in-flight requests finish) and warm-up from the version's
warmup records. serving/saved_model_version.py (a TF session) and serving/litert_version.py (LiteRT) implement it.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import message
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import prediction_log_pb2

from serving.errors import ServingError, invalid
from serving.model_format import WARMUP_FILE, WARMUP_MAX_RECORDS
from serving.tensors import NUMPY_BY_DTYPE, base_dtype, dtype_name

log = logging.getLogger(__name__)


class VersionLifecycle:
    """A loaded version: `signatures` and `run` from the runtime that serves it; reference counting and warm-up, the
    same for every runtime."""

    name: str
    version: int
    path: str
    signatures: dict[str, meta_graph_pb2.SignatureDef]

    def __init__(self):
        self._in_flight = 0
        self._idle = threading.Condition()
        self._closed = False

    # -- reference counting: a version is unloaded only after its in-flight requests finish.
    def acquire(self) -> bool:
        with self._idle:
            if self._closed:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def unload(self) -> None:
        with self._idle:
            self._closed = True
            while self._in_flight:
                self._idle.wait()
        self._close()

    def run(self, signature_name: str, inputs: dict[str, np.ndarray], output_keys,
            timeout_ms: int = 0) -> dict[str, np.ndarray]:
        """Runs a signature: inputs keyed by signature alias -> {output alias: ndarray}; timeout_ms > 0 bounds it."""
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def warmup(self, run_request, iterations: int = 1) -> int:
        """Replays assets.extra/tf_serving_warmup_requests (PredictionLog TFRecords) through `run_request`, as TF
        Serving's RunSavedModelWarmup does: in file order, each record `iterations` times back to back; any error
        fails the version's load. A missing file is fine; more than WARMUP_MAX_RECORDS records is an error (raised
        after the 1001st has run, as upstream). Returns the number of records."""
        path = os.path.join(self.path, WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            log.info("No warmup data file found at %s", path)
            return 0
        started = time.monotonic()
        count = 0
        for record in _records(path):
            try:
                log_entry = prediction_log_pb2.PredictionLog.FromString(record)
            except message.DecodeError:
                raise invalid(f"Failed to parse warmup record: {record.decode('utf-8', 'backslashreplace')} "
                              f"from {path}") from None
            for _ in range(max(1, iterations)):
                run_request(self, log_entry)
            count += 1
            if count > WARMUP_MAX_RECORDS:
                raise invalid(f"Number of warmup records exceeds the maximum ({WARMUP_MAX_RECORDS}) at {path}")
        log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d. Elapsed time "
                 "(microseconds): %d.", path, count, (time.monotonic() - started) * 1e6)
        return count


def _records(path: str):
    """The TFRecords of `path`; a file that is not TFRecord is TF Serving's DATA_LOSS."""
    try:
        yield from tf.compat.v1.io.tf_record_iterator(path)
    except tf.errors.DataLossError as error:
        raise ServingError(grpc.StatusCode.DATA_LOSS,
                           f"{error.message}. Please verify your warmup data is in TFRecord format.") from None


def convert_input(array: np.ndarray, dtype: int, index: int) -> np.ndarray:
    """Casts an input to the signature dtype; a kind mismatch is TF's `Expects arg[i] to be X but Y is provided`."""
    dtype = base_dtype(dtype)
    wanted = NUMPY_BY_DTYPE.get(dtype)
    if wanted is None:
        raise invalid(f"Unsupported input dtype {dtype_name(dtype)}")
    if dtype == types_pb2.DT_STRING:
        if array.dtype == np.object_ or array.dtype.kind in "SU":
            return array if array.dtype == np.object_ else array.astype(object)
        raise invalid(f"Expects arg[{index}] to be string but {_numpy_type_name(array)} is provided")
    if array.dtype == wanted:
        return array
    if array.dtype == np.object_ or array.dtype.kind in "SU":
        raise invalid(f"Expects arg[{index}] to be {dtype_name(dtype)} but string is provided")
    raise invalid(f"Expects arg[{index}] to be {dtype_name(dtype)} but {_numpy_type_name(array)} is provided")


def _numpy_type_name(array: np.ndarray) -> str:
    return {"float32": "float", "float64": "double", "bool": "bool"}.get(str(array.dtype), str(array.dtype))
