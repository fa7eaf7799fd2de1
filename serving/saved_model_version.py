"""A version served from its SavedModel: a TF session, its signatures, and cached callables per (signature, in, out).

Like TF Serving's SavedModelBundle, the MetaGraph is loaded into a `Session` and signatures are run by tensor name
through the C API (no Python-side shape checks: TF Serving feeds the literal request shape too). A request with a
deadline runs through `TF_SessionRun` with `RunOptions.timeout_in_ms`, as TF Serving's `Session::Run(run_options, ...)`,
so TensorFlow cancels the step when the deadline passes. TF1 and TF2 SavedModels load the same way.
"""
from __future__ import annotations

import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.client import pywrap_tf_session as tf_session
from tensorflow.python.saved_model import loader_impl

from serving.errors import ServingError
from serving.servable import VersionLifecycle, convert_input
from serving.versions import is_complete


class SavedModelVersion(VersionLifecycle):
    def __init__(self, name: str, version: int, path: str, tags=("serve",), session_config=None):
        super().__init__()
        self.name, self.version, self.path = name, version, path
        if not is_complete(path):
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"SavedModel not found in export directory: {path} "
                               "(expected saved_model.pb or saved_model.pbtxt)")
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph, config=session_config)
        try:
            with self._graph.as_default():
                self.meta_graph = loader_impl.SavedModelLoader(path).load(self._session, list(tags))
        except Exception:
            self._session.close()
            raise
        self.signatures = dict(self.meta_graph.signature_def)
        self._session._extend_graph()  # hands the loaded graph to the C session once, before any run
        # Keyed by (signature, input aliases, output aliases).
        self._endpoints: dict[tuple, tuple] = {}  # -> (feed TF_Outputs, fetch TF_Outputs) for runs with a timeout
        self._callables: dict[tuple, object] = {}  # -> C API callables for runs without one
        self._callables_lock = threading.Lock()

    def _close(self) -> None:
        self._session.close()
        self._endpoints.clear()
        self._callables.clear()

    def run(self, signature_name: str, inputs: dict[str, np.ndarray], output_keys, timeout_ms: int = 0):
        """Runs a signature: inputs keyed by signature alias -> {output alias: ndarray}.

        timeout_ms > 0 bounds the run (RunOptions.timeout_in_ms): TensorFlow cancels the step and raises
        DEADLINE_EXCEEDED when it passes, so an abandoned request stops using CPU. Without a timeout the run goes
        through a cached C API callable, about half the per-call overhead of TF_SessionRun.
        """
        signature = self.signatures[signature_name]
        input_keys = tuple(sorted(inputs))
        output_keys = tuple(output_keys)
        feeds = [convert_input(inputs[alias], signature.inputs[alias].dtype, i) for i, alias in enumerate(input_keys)]
        try:
            if timeout_ms > 0:
                values = self._run_with_timeout(signature_name, signature, input_keys, output_keys, feeds, timeout_ms)
            else:
                values = self._callable(signature_name, signature, input_keys, output_keys)(*feeds)
        except tf.errors.OpError as error:
            raise ServingError.from_tf(error) from None
        return dict(zip(output_keys, (np.asarray(v) for v in values)))

    def _run_with_timeout(self, signature_name, signature, input_keys, output_keys, feeds, timeout_ms):
        key = (signature_name, input_keys, output_keys)
        endpoints = self._endpoints.get(key)
        if endpoints is None:  # graph endpoints (TF_Output) of the signature's tensors, looked up once
            def endpoint(name):
                return self._graph.get_tensor_by_name(name)._as_tf_output()
            endpoints = self._endpoints[key] = ([endpoint(signature.inputs[k].name) for k in input_keys],
                                                [endpoint(signature.outputs[k].name) for k in output_keys])
        feed_endpoints, fetch_endpoints = endpoints
        options = tf_session.TF_NewBufferFromString(config_pb2.RunOptions(timeout_in_ms=timeout_ms).SerializeToString())
        try:
            return tf_session.TF_SessionRun_wrapper(self._session._session, options, dict(zip(feed_endpoints, feeds)),
                                                    fetch_endpoints, [], None)
        finally:
            tf_session.TF_DeleteBuffer(options)

    def _callable(self, signature_name, signature, input_keys, output_keys):
        key = (signature_name, input_keys, output_keys)
        fn = self._callables.get(key)
        if fn is None:
            options = config_pb2.CallableOptions()
            options.feed.extend(signature.inputs[k].name for k in input_keys)
            options.fetch.extend(signature.outputs[k].name for k in output_keys)
            with self._callables_lock:
                fn = self._callables.get(key)
                if fn is None:
                    fn = self._callables[key] = self._session._make_callable_from_options(options)
        return fn
