"""--prefer_tflite_model: serve a version's `model.tflite` on LiteRT (XNNPACK) with the SavedModel's signatures.

TF Serving's convention: with --prefer_tflite_model, a version folder holding `model.tflite` is served from it, else
from its SavedModel. Our classifier's signatures take encoded images, which no TFLite builtin op decodes, so the
version's SavedModel also carries, per signature, the TF steps around the network (object `litert`, functions
`<signature>_inputs` and `<signature>_outputs`): decode/resize (or parse tf.Examples) before the LiteRT call, label
lookup after it. Clients see the same signatures, inputs, outputs and metadata as from the SavedModel path.

A version whose SavedModel lacks these steps for any signature is served from its SavedModel, with a log line.
"""
from __future__ import annotations

import logging
import os
import queue

import numpy as np

from serving.errors import ServingError
from serving.servable import DEFAULT_SIGNATURE, VersionLifecycle, convert_input

log = logging.getLogger(__name__)

TFLITE_FILE = "model.tflite"
LITERT_STEPS = "litert"
INIT_OP_SIGNATURE = "__saved_model_init_op"  # tf.saved_model's table initializer, not a servable signature


def inputs_step(signature: str) -> str:
    return f"{signature}_inputs"


def outputs_step(signature: str) -> str:
    return f"{signature}_outputs"


class MissingLiteRTSteps(Exception):
    """The SavedModel has no TF steps for some signature: the version cannot be served from model.tflite."""


class LiteRTVersion(VersionLifecycle):
    def __init__(self, name: str, version: int, path: str, tags=("serve",), interpreters: int = 1,
                 threads: int | None = None):
        import tensorflow as tf
        from tensorflow.python.saved_model import loader_impl

        super().__init__()
        self.name, self.version, self.path = name, version, path
        wanted_tags = set(tags)
        meta_graphs = [m for m in loader_impl.parse_saved_model(path).meta_graphs
                       if set(m.meta_info_def.tags) == wanted_tags]
        if not meta_graphs:
            raise ServingError(_code("NOT_FOUND"), f"no MetaGraph with tags {sorted(wanted_tags)} in {path}")
        self.meta_graph = meta_graphs[0]
        self.signatures = dict(self.meta_graph.signature_def)
        steps = getattr(tf.saved_model.load(path, tags=list(tags)), LITERT_STEPS, None)
        self._steps = {}
        for signature in self.signatures:
            if signature == INIT_OP_SIGNATURE:
                continue
            inputs, outputs = (getattr(steps, step(signature), None) for step in (inputs_step, outputs_step))
            if inputs is None or outputs is None:
                raise MissingLiteRTSteps(f"{path} has no {LITERT_STEPS}.{inputs_step(signature)}/"
                                         f"{outputs_step(signature)} for signature {signature!r}")
            self._steps[signature] = (inputs, outputs)
        from ai_edge_litert.interpreter import Interpreter

        # TF Serving's default pool is one interpreter; each runs one call at a time on `threads` XNNPACK threads
        # (default: every core), and releases the GIL while it runs.
        self._interpreters: queue.Queue = queue.Queue()
        for _ in range(max(1, interpreters)):
            interpreter = Interpreter(model_path=os.path.join(path, TFLITE_FILE), num_threads=threads or os.cpu_count())
            self._interpreters.put(interpreter.get_signature_runner())

    def signature(self, name: str):
        return self.signatures.get(name or DEFAULT_SIGNATURE)

    def run(self, signature_name: str, inputs: dict[str, np.ndarray], output_keys, timeout_ms: int = 0):
        """Same contract as LoadedVersion.run: inputs by signature alias -> {output alias: ndarray}."""
        import tensorflow as tf

        signature = self.signatures[signature_name]
        if signature_name not in self._steps:
            raise ServingError(_code("FAILED_PRECONDITION"), f"signature {signature_name} is not runnable")
        inputs_fn, outputs_fn = self._steps[signature_name]
        feeds = {alias: convert_input(inputs[alias], signature.inputs[alias].dtype, i)
                 for i, alias in enumerate(sorted(inputs))}
        try:
            network_inputs = {k: v.numpy() for k, v in inputs_fn(**feeds).items()}
            network = self._interpreters.get()
            try:
                # Copied out: the runner's outputs alias interpreter memory that its next call overwrites.
                network_outputs = {k: np.array(v) for k, v in network(**network_inputs).items()}
            finally:
                self._interpreters.put(network)
            outputs = outputs_fn({k: tf.constant(v) for k, v in network_outputs.items()})
        except tf.errors.OpError as error:
            raise ServingError.from_tf(error) from None
        return {key: np.asarray(outputs[key].numpy()) for key in output_keys}

    def _close(self) -> None:
        self._steps.clear()


def _code(name):
    import grpc
    return getattr(grpc.StatusCode, name)
