"""What every loaded model version is to the server (`VersionLifecycle`), whichever runtime serves it: its signatures,
`run`, reference counting (unloaded only after its in-flight requests finish) and warm-up from the version's
warmup records. serving/saved_model_version.py (a TF session) and serving/litert_version.py (LiteRT) implement it.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import prediction_log_pb2

from serving.errors import invalid
from serving.model_format import WARMUP_FILE, WARMUP_MAX_RECORDS
from serving.tensors import NUMPY_BY_DTYPE, base_dtype, dtype_name


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

    def warmup(self, run_request) -> int:
        """Replays assets.extra/tf_serving_warmup_requests (PredictionLog TFRecords) through `run_request`."""
        path = os.path.join(self.path, WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            return 0
        count = 0
        for record in tf.compat.v1.io.tf_record_iterator(path):
            log_entry = prediction_log_pb2.PredictionLog.FromString(record)
            run_request(self, log_entry)
            count += 1
            if count >= WARMUP_MAX_RECORDS:
                break
        return count


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
