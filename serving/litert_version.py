"""--prefer_tflite_model: serve a version's `model.tflite` on LiteRT (XNNPACK) with the SavedModel's signatures.

TF Serving's convention: with --prefer_tflite_model, a version folder holding `model.tflite` is served from it, else
from its SavedModel. Our classifier's signatures take encoded images, which no TFLite builtin op decodes, so the
version's SavedModel also carries, per signature, the TF steps around the network (object `litert`, functions
`<signature>_inputs` and `<signature>_outputs`): decode/resize (or parse tf.Examples) before the LiteRT call, label
lookup after it. Clients see the same signatures, inputs, outputs and metadata as from the SavedModel path.

A version folder whose SavedModel lacks these steps, or that holds model.tflite alone, is served with model.tflite's
own signatures, as TF Serving serves it.
"""
from __future__ import annotations

import logging
import os
import queue
import time

import grpc
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.saved_model import loader_impl

from serving.errors import ServingError
from serving.model_format import LITERT_STEPS, NETWORK_SIGNATURE, TFLITE_FILE, inputs_step, outputs_step
from serving.servable import VersionLifecycle, convert_input
from serving.versions import is_complete

log = logging.getLogger(__name__)

INIT_OP_SIGNATURE = "__saved_model_init_op"  # tf.saved_model's table initializer, not a servable signature


class LiteRTVersion(VersionLifecycle):
    """A version served from its model.tflite, in one of two ways:

    * the SavedModel beside it carries TF steps for every signature: the SavedModel's signatures, with the network
      (model.tflite's `serving_default`) on LiteRT between the steps;
    * otherwise (no steps, or no SavedModel at all): model.tflite's own signatures, run as they are, which is what
      TF Serving's TfLiteSession serves.
    """

    def __init__(self, name: str, version: int, path: str, tags=("serve",), interpreters: int = 1,
                 threads: int | None = None):
        super().__init__()
        self.name, self.version, self.path = name, version, path
        # TF Serving's default pool is one interpreter. Each runs one call at a time on `threads` XNNPACK threads
        # (default: the cores shared out between the interpreters) and releases the GIL while it runs.
        interpreters = max(1, interpreters)
        threads = threads or max(1, (os.cpu_count() or 1) // interpreters)
        self._interpreters: queue.Queue = queue.Queue()
        # Read through tf.io.gfile (the version may be on gs://); the interpreter keeps this buffer for its life.
        with tf.io.gfile.GFile(os.path.join(path, TFLITE_FILE), "rb") as f:
            model = f.read()
        for _ in range(interpreters):
            interpreter = Interpreter(model_content=model, num_threads=threads)
            self._interpreters.put({key: interpreter.get_signature_runner(key)
                                    for key in interpreter.get_signature_list()})
        self.signatures, self._steps = _saved_model_steps(path, tags)
        if self._steps is None:
            runners = self._interpreters.get()
            self.signatures = {key: _signature_def(runner) for key, runner in runners.items()}
            self._interpreters.put(runners)

    def run(self, signature_name: str, inputs: dict[str, np.ndarray], output_keys, timeout_ms: int = 0):
        """VersionLifecycle.run: inputs by signature alias -> {output alias: ndarray}. A LiteRT invocation cannot be
        cancelled, so `timeout_ms` (> 0) is checked between the steps and between the images: a late request stops
        at the next one with DEADLINE_EXCEEDED."""
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else None
        signature = self.signatures[signature_name]
        feeds = {alias: convert_input(inputs[alias], signature.inputs[alias].dtype, i)
                 for i, alias in enumerate(sorted(inputs))}
        if self._steps is None:
            return {key: value for key, value in self._invoke(signature_name, feeds, deadline).items()
                    if key in output_keys}
        if signature_name not in self._steps:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f"signature {signature_name} is not runnable")
        inputs_fn, outputs_fn = self._steps[signature_name]
        try:
            network_inputs = {k: v.numpy() for k, v in inputs_fn(**feeds).items()}
            network_outputs = self._invoke_per_image(network_inputs, deadline)
            _check_deadline(deadline)
            outputs = outputs_fn({k: tf.constant(v) for k, v in network_outputs.items()})
        except tf.errors.OpError as error:
            raise ServingError.from_tf(error) from None
        return {key: np.asarray(outputs[key].numpy()) for key in output_keys}

    def _runners(self, deadline: float | None) -> dict:
        """An interpreter's signature runners, waiting for one until `deadline` at most."""
        try:
            return self._interpreters.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded while waiting for a LiteRT "
                               "interpreter") from None

    def _invoke(self, signature_name: str, inputs: dict[str, np.ndarray], deadline: float | None
                ) -> dict[str, np.ndarray]:
        runners = self._runners(deadline)
        try:
            # Copied out: the runner's outputs alias interpreter memory that its next call overwrites.
            return {k: np.array(v) for k, v in runners[signature_name](**inputs).items()}
        except ValueError as error:  # the interpreter's own words for a wrong input (name, rank, size)
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None
        finally:
            self._interpreters.put(runners)

    def _invoke_per_image(self, inputs: dict[str, np.ndarray], deadline: float | None) -> dict[str, np.ndarray]:
        """The network one image at a time: XNNPACK is fastest per image on single images, whose activations stay
        in the caches (see image_retrain/image_module/litert_engine.py); a batch still takes one interpreter once."""
        count = len(next(iter(inputs.values())))
        if count == 0:
            return self._invoke(NETWORK_SIGNATURE, inputs, deadline)
        runners = self._runners(deadline)
        try:
            network = runners[NETWORK_SIGNATURE]
            rows = []
            for i in range(count):
                _check_deadline(deadline)
                rows.append({k: np.array(v) for k, v in network(**{k: v[i:i + 1] for k, v in inputs.items()}).items()})
        finally:
            self._interpreters.put(runners)
        return {k: np.concatenate([row[k] for row in rows]) for k in rows[0]}

    def _close(self) -> None:
        while not self._interpreters.empty():
            self._interpreters.get()


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded while the LiteRT model ran")


def _saved_model_steps(path: str, tags) -> tuple[dict, dict | None]:
    """(the SavedModel's signatures, {signature: (inputs step, outputs step)}) when it has steps for every
    signature; ({}, None) when there is no SavedModel or a signature lacks them (then model.tflite serves its own)."""
    if not is_complete(path):
        return {}, None
    wanted_tags = set(tags)
    meta_graphs = [m for m in loader_impl.parse_saved_model(path).meta_graphs
                   if set(m.meta_info_def.tags) == wanted_tags]
    if not meta_graphs:
        return {}, None
    signatures = dict(meta_graphs[0].signature_def)
    holder = getattr(tf.saved_model.load(path, tags=list(tags)), LITERT_STEPS, None)
    steps = {}
    for signature in signatures:
        if signature == INIT_OP_SIGNATURE:
            continue
        inputs, outputs = (getattr(holder, step(signature), None) for step in (inputs_step, outputs_step))
        if inputs is None or outputs is None:
            log.info("%s has no %s.%s/%s: serving the signatures of %s itself", path, LITERT_STEPS,
                     inputs_step(signature), outputs_step(signature), TFLITE_FILE)
            return {}, None
        steps[signature] = (inputs, outputs)
    return signatures, steps


def _signature_def(runner):
    """A LiteRT signature as a SignatureDef (what GetModelMetadata shows and requests are checked against)."""
    signature = meta_graph_pb2.SignatureDef(method_name=tf.saved_model.PREDICT_METHOD_NAME)
    for field, details in ((signature.inputs, runner.get_input_details()),
                           (signature.outputs, runner.get_output_details())):
        for alias, tensor in details.items():
            info = field[alias]
            info.name = tensor["name"]
            info.dtype = tf.as_dtype(tensor["dtype"]).as_datatype_enum
            for size in tensor["shape_signature"]:
                info.tensor_shape.dim.add(size=int(size))
    return signature
