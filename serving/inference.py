"""The serving API both front ends call: Predict, Classify, Regress, MultiInference, GetModelMetadata,
GetModelStatus, HandleReloadConfigRequest, with TF Serving's validation and messages. Raises ServingError.

The gRPC service (grpc_service.py) and the REST API (rest.py) are thin adapters over it, as TF Serving's
prediction_service_impl.cc and http_rest_api_handler.cc are over its Predictor, Classifier and Regressor."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import request_costs, tensors
from serving.config import validate_model_server_config
from serving.errors import ConfigError, ServingError, invalid
from serving.memory_budget import UNMETERED, RequestMemory
from serving.metrics import UNKNOWN_MODEL
from serving.servable import VersionLifecycle

DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
CLASSES, SCORES = tf.saved_model.CLASSIFY_OUTPUT_CLASSES, tf.saved_model.CLASSIFY_OUTPUT_SCORES
# The front ends, as the `entrypoint` label of /tensorflow/serving/request_latency names them.
GRPC, REST = "GRPC", "REST"


@dataclasses.dataclass(frozen=True)
class Prediction:
    """A Predict call's result: the model spec to echo (name, version served, signature), the signature that ran,
    its decoded inputs and its outputs by alias. gRPC writes the outputs as TensorProtos, REST as JSON."""
    model_spec: model_pb2.ModelSpec
    signature: meta_graph_pb2.SignatureDef
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    def grpc_response(self) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse(model_spec=self.model_spec)
        for alias, array in self.outputs.items():
            response.outputs[alias].CopyFrom(tensors.to_proto(array, self.signature.outputs[alias].dtype))
        return response

    def grpc_request(self, model_spec) -> predict_pb2.PredictRequest:
        """The PredictRequest a gRPC client would have sent for these inputs to `model_spec`."""
        request = predict_pb2.PredictRequest(model_spec=model_spec)
        for alias, array in self.inputs.items():
            request.inputs[alias].CopyFrom(tensors.to_proto(array, self.signature.inputs[alias].dtype))
        return request


def _set(names) -> str:
    return "{" + ",".join(sorted(names)) + "}"


def _bytes_values(example) -> list[bytes]:
    return [value for feature in example.features.feature.values() if feature.HasField("bytes_list")
            for value in feature.bytes_list.value]


# The deadline a warmup record runs under on the session path of requests with deadlines (see warmup_request).
WARMUP_DEADLINE_MS = 600_000


def _deadline(timeout_ms: int) -> float | None:
    return time.monotonic() + timeout_ms / 1000 if timeout_ms and timeout_ms > 0 else None


def _remaining_ms(deadline: float | None) -> int:
    """Milliseconds left before `deadline` (0: no deadline); DEADLINE_EXCEEDED once it has passed."""
    if deadline is None:
        return 0
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded before the model ran")
    return max(1, math.ceil(remaining * 1000))


class InferenceService:
    """What the requests of both front ends run on: version resolution, signature checks, batching, deadlines,
    errors, metrics and request logging. Not named after TF Serving's ServerCore, which manages models (that is
    serving.manager here); this is the part upstream splits into TensorflowPredictor, TensorFlowClassifier,
    TensorFlowRegressor and the GetModelMetadata/GetModelStatus implementations.

    `max_request_batch_size` (0 = unlimited) and `max_implied_tensor_elements` bound one request's cost; their
    defaults and meaning are in serving.server.ServerOptions. Every inference call charges what it allocates to the
    request's `memory` (serving/memory_budget.py) before allocating it."""

    def __init__(self, manager, *, max_request_batch_size: int, max_implied_tensor_elements: int, batcher=None,
                 metrics=None, request_logger=None, enable_method_name_check=False):
        self.manager = manager
        self.batcher = batcher
        self.metrics = metrics
        self.request_logger = request_logger
        self.enable_method_name_check = enable_method_name_check
        self.max_request_batch_size = max_request_batch_size
        self.max_implied_tensor_elements = max_implied_tensor_elements

    # -------------------------------------------------------------------------------------------- helpers
    @contextlib.contextmanager
    def _servable(self, name: str, version: int | None = None, label: str | None = None):
        loaded = self.manager.resolve(name, version, label)
        try:
            yield loaded
        finally:
            loaded.release()

    @staticmethod
    def _spec_args(model_spec) -> tuple[str, int | None, str | None]:
        choice = model_spec.WhichOneof("version_choice")
        version = model_spec.version.value if choice == "version" else None
        label = model_spec.version_label if choice == "version_label" else None
        return model_spec.name, version, label

    @contextlib.contextmanager
    def _observed(self, name: str, version: int | None, label: str | None, api: str, entrypoint: str):
        """The servable of an inference request (as _servable), with the request counted in
        /tensorflow/serving/request_count and request_latency. The API label is the gRPC method name, or the URL verb
        for REST (`predict`), as TF Serving labels them; `version` is ours: the version that answered, empty when the
        request failed before one was resolved. A name the server does not serve is counted as UNKNOWN_MODEL."""
        api = api if entrypoint == GRPC else api.lower()
        started = time.perf_counter()
        status, served = "OK", ""
        try:
            with self._servable(name, version, label) as loaded:
                served = str(loaded.version)
                yield loaded
        except ServingError as error:
            status = error.code.name
            raise
        except Exception:
            status = "UNKNOWN"
            raise
        finally:
            if self.metrics is not None:
                counted = name if self.manager.is_configured(name) else UNKNOWN_MODEL
                self.metrics.observe_request(counted, api, entrypoint, status, served, time.perf_counter() - started)

    def _check_batch_size(self, size: int) -> None:
        if self.max_request_batch_size and size > self.max_request_batch_size:
            raise invalid(f"Request batch size {size} is larger than the limit of {self.max_request_batch_size} "
                          "(--max_request_batch_size)")

    def _to_numpy(self, alias: str, proto, memory: RequestMemory) -> np.ndarray:
        shape = tensors.checked_shape(proto, self.max_implied_tensor_elements)
        memory.charge(request_costs.tensor_proto(proto, shape), f"decoding input {alias} of shape {shape}")
        return tensors.to_numpy(proto, self.max_implied_tensor_elements)

    def _examples(self, input_proto, memory: RequestMemory) -> np.ndarray:
        """tensorflow.serving.Input -> string [N] of serialized tf.Examples, each `context + example` (bytes
        concatenate, i.e. proto-merge). The batch cap and the cost (the context copied N times, the images the
        features hold) are checked before any of it is built (ByteSize encodes each example on its own: a passing
        copy of one example at a time)."""
        kind = input_proto.WhichOneof("kind")
        if kind == "example_list_with_context":
            context, examples = input_proto.example_list_with_context.context, \
                input_proto.example_list_with_context.examples
        else:
            context, examples = None, input_proto.example_list.examples if kind == "example_list" else []
        if not examples:
            raise invalid("Input is empty.")
        self._check_batch_size(len(examples))
        context_bytes = context.SerializeToString() if context is not None else b""
        memory.charge(request_costs.serialized_examples(len(context_bytes), [e.ByteSize() for e in examples]),
                      f"{len(examples)} serialized tf.Examples with a context of {len(context_bytes)} bytes")
        images = (_bytes_values(context) if context is not None else []) * len(examples)
        for example in examples:
            images += _bytes_values(example)
        memory.charge(request_costs.decoded_images(images, self.max_request_batch_size),
                      "decoding the images of the tf.Examples")
        array = np.empty(len(examples), dtype=object)
        array[:] = [context_bytes + e.SerializeToString() for e in examples]
        return array

    def _run_signature(self, loaded: VersionLifecycle, signature_name: str, inputs: dict, output_keys,
                      timeout_ms: int = 0) -> dict:
        """Runs through the batcher when batching is on; `timeout_ms` (> 0) bounds the wait and the model run."""
        deadline = _deadline(timeout_ms)
        if self.batcher is None:
            return loaded.run(signature_name, inputs, output_keys, _remaining_ms(deadline))
        _remaining_ms(deadline)  # a request already late is not queued
        key = (id(loaded), signature_name, tuple(sorted(inputs)), tuple(output_keys))
        return self.batcher.run(
            key, lambda merged, batch_timeout_ms: loaded.run(signature_name, merged, output_keys, batch_timeout_ms),
            inputs, deadline=deadline)

    # --------------------------------------------------------------------------------------------- predict
    def _predict_arrays(self, loaded: VersionLifecycle, signature_name: str, inputs: dict[str, np.ndarray],
                       memory: RequestMemory, output_filter=(), timeout_ms: int = 0) -> dict[str, np.ndarray]:
        signature_name = signature_name or DEFAULT_SIGNATURE
        signature = loaded.signatures.get(signature_name)
        if signature is None:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{signature_name}" not found.')
        expected = set(signature.inputs)
        sent = set(inputs)
        if sent != expected:
            if len(sent) != len(expected):
                raise invalid(f"input size does not match signature: {len(sent)}!={len(expected)} "
                              f"len({_set(sent)}) != len({_set(expected)}). Sent extra: {_set(sent - expected)}. "
                              f"Missing but required: {_set(expected - sent)}.")
            alias = sorted(sent - expected)[0]
            raise invalid(f"input tensor alias not found in signature: {alias}. "
                          f"Inputs expected to be in the set {_set(expected)}.")
        if output_filter:
            seen = set()
            for alias in output_filter:
                if alias not in signature.outputs:
                    raise invalid(f"output tensor alias not found in signature: {alias} "
                                  f"Outputs expected to be in the set {_set(signature.outputs)}.")
                if alias in seen:
                    raise invalid(f"duplicate output tensor alias: {alias}")
                seen.add(alias)
            output_keys = tuple(output_filter)
        else:
            output_keys = tuple(sorted(signature.outputs))
        for alias, array in inputs.items():
            if array.dtype != np.object_:  # numeric inputs cost in proportion to their bytes, charged on decoding
                continue
            if array.ndim:
                self._check_batch_size(array.shape[0])
            memory.charge(request_costs.decoded_images(array.reshape(-1), self.max_request_batch_size),
                          f"decoding the images of input {alias}")
        return self._run_signature(loaded, signature_name, inputs, output_keys, timeout_ms)

    def predict_tensors(self, model_spec, inputs_of: Callable[[dict], dict[str, np.ndarray]], output_filter=(),
                        *, entrypoint: str, memory: RequestMemory, timeout_ms: int = 0) -> Prediction:
        """Predict on the version `model_spec` names. `inputs_of(signature_defs)` decodes the request's inputs once the
        version is acquired: gRPC's TensorProtos need nothing from it, REST's JSON needs the signature's dtypes. The
        response the front end writes from the outputs is charged here."""
        name, version, label = self._spec_args(model_spec)
        with self._observed(name, version, label, "Predict", entrypoint) as loaded:
            inputs = inputs_of(loaded.signatures)
            outputs = self._predict_arrays(loaded, model_spec.signature_name, inputs, memory, output_filter,
                                           timeout_ms)
            memory.charge(request_costs.outputs(outputs, as_json=entrypoint == REST), "writing the response")
            echo = model_pb2.ModelSpec()
            self._echo(echo, name, loaded, model_spec.signature_name)
            return Prediction(echo, loaded.signatures[echo.signature_name], inputs, outputs)

    def predict(self, request, *, memory: RequestMemory, entrypoint=GRPC, timeout_ms: int = 0):
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        prediction = self.predict_tensors(
            request.model_spec,
            lambda _: {alias: self._to_numpy(alias, proto, memory) for alias, proto in request.inputs.items()},
            list(request.output_filter), entrypoint=entrypoint, memory=memory, timeout_ms=timeout_ms)
        response = prediction.grpc_response()
        self._log("predict_log", prediction.model_spec, lambda: request, lambda: response)
        return response

    def log_rest_predict(self, model_spec, prediction: Prediction) -> None:
        """A REST predict is logged as the PredictRequest and PredictResponse of the gRPC call it equals, built only
        when it is sampled; `model_spec` is the one its URL and body name."""
        self._log("predict_log", prediction.model_spec, lambda: prediction.grpc_request(model_spec),
                  prediction.grpc_response)

    def _log(self, kind: str, served_spec, request_of, response_of) -> None:
        if self.request_logger is not None:
            self.request_logger.log(kind, served_spec, request_of, response_of)

    @staticmethod
    def _echo(spec, name, loaded, signature_name):
        spec.name = name
        spec.version.value = loaded.version
        spec.signature_name = signature_name or DEFAULT_SIGNATURE

    # ------------------------------------------------------------------------------------ classify / regress
    def _checked_signature(self, loaded, signature_name, method, not_found_message):
        signature_name = signature_name or DEFAULT_SIGNATURE
        signature = loaded.signatures.get(signature_name)
        if signature is None:
            raise invalid(not_found_message + signature_name)
        kind = "classification" if method == tf.saved_model.CLASSIFY_METHOD_NAME else "regression"
        if self.enable_method_name_check and signature.method_name != method:
            raise invalid(f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}")
        if len(signature.inputs) != 1:
            raise invalid("Expected one input Tensor.")
        (input_alias, input_info), = signature.inputs.items()
        if input_info.dtype != types_pb2.DT_STRING:
            raise invalid(f"Expected {kind} signature input to be a string tensor of serialized tf.Examples, "
                          f"got {tensors.dtype_name(input_info.dtype)}")
        return signature_name, signature, input_alias

    def _classification_result(self, loaded, signature_name, examples_of: Callable[[], np.ndarray],
                               memory: RequestMemory, as_json: bool, timeout_ms=0):
        """`examples_of()`: the request's serialized examples (built once per request, on first use)."""
        signature_name, signature, input_alias = self._checked_signature(
            loaded, signature_name, tf.saved_model.CLASSIFY_METHOD_NAME, "No signature was found with the name: ")
        output_keys = [k for k in (CLASSES, SCORES) if k in signature.outputs]
        if not output_keys:
            raise invalid('Expected classification signature outputs to contain at least one of "classes" and '
                          '"scores".')
        examples = examples_of()
        outputs = self._run_signature(loaded, signature_name, {input_alias: examples}, output_keys, timeout_ms)
        memory.charge(request_costs.outputs(outputs, as_json), "writing the response")
        classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
        batch = len(examples)
        # classifier.cc PostProcessClassificationResult's checks, in its order and words.
        for alias, array, wanted in ((CLASSES, classes, types_pb2.DT_STRING), (SCORES, scores, types_pb2.DT_FLOAT)):
            if array is None:
                continue
            if array.ndim != 2:
                raise invalid(f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(array)}")
            dtype = tensors.dtype_of(array)
            if dtype != wanted:
                raise invalid(f"Expected {alias} Tensor of {types_pb2.DataType.Name(wanted)}. Got: "
                              f"{types_pb2.DataType.Name(dtype)}")
            if array.shape[0] != batch:
                raise invalid(f"Expected {alias} output batch size of {batch}. Got: {array.shape[0]}")
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise invalid(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                          f"{scores.shape[1]}")
        num_classes = (classes if classes is not None else scores).shape[1]
        result = classification_pb2.ClassificationResult()
        for i in range(batch):
            item = result.classifications.add()
            for j in range(num_classes):
                entry = item.classes.add()
                if classes is not None:
                    label = classes[i, j]
                    entry.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
                if scores is not None:
                    entry.score = float(scores[i, j])
        return signature_name, result

    def _regression_result(self, loaded, signature_name, examples_of: Callable[[], np.ndarray],
                           memory: RequestMemory, as_json: bool, timeout_ms=0):
        signature_name, signature, input_alias = self._checked_signature(
            loaded, signature_name, tf.saved_model.REGRESS_METHOD_NAME, "No signature was found with the name: ")
        if tf.saved_model.REGRESS_OUTPUTS not in signature.outputs:
            raise invalid('Expected regression signature outputs to contain "outputs".')
        examples = examples_of()
        outputs = self._run_signature(loaded, signature_name, {input_alias: examples}, [tf.saved_model.REGRESS_OUTPUTS],
                                      timeout_ms)
        memory.charge(request_costs.outputs(outputs, as_json), "writing the response")
        values = outputs[tf.saved_model.REGRESS_OUTPUTS]
        batch = len(examples)
        # regressor.cc PostProcessRegressionResult's checks, in its order and words.
        if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
            raise invalid("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                          f"{_shape_text(values)}")
        if values.shape[0] != batch:
            raise invalid(f"Input batch size did not match output batch size: {batch} vs. {values.shape[0]}")
        dtype = tensors.dtype_of(values)
        if dtype != types_pb2.DT_FLOAT:
            raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {types_pb2.DataType.Name(dtype)}")
        result = regression_pb2.RegressionResult()
        for value in values.reshape(-1).tolist():
            result.regressions.add(value=value)
        return signature_name, result

    def _single_result(self, request, api: str, compute, response_type, entrypoint: str, memory: RequestMemory,
                       timeout_ms: int):
        """Classify and Regress share everything but the result they compute and the response they fill."""
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        name, version, label = self._spec_args(request.model_spec)
        with self._observed(name, version, label, api, entrypoint) as loaded:
            signature_name, result = compute(loaded, request.model_spec.signature_name,
                                             lambda: self._examples(request.input, memory), memory,
                                             entrypoint == REST, timeout_ms)
            response = response_type(result=result)
            self._echo(response.model_spec, name, loaded, signature_name)
        self._log(f"{api.lower()}_log", response.model_spec, lambda: request, lambda: response)  # classify_log, ...
        return response

    def classify(self, request, *, memory: RequestMemory, entrypoint=GRPC, timeout_ms=0):
        return self._single_result(request, "Classify", self._classification_result,
                                   classification_pb2.ClassificationResponse, entrypoint, memory, timeout_ms)

    def regress(self, request, *, memory: RequestMemory, entrypoint=GRPC, timeout_ms=0):
        return self._single_result(request, "Regress", self._regression_result,
                                   regression_pb2.RegressionResponse, entrypoint, memory, timeout_ms)

    def multi_inference(self, request, *, memory: RequestMemory, entrypoint=GRPC, timeout_ms=0):
        _check_multi_inference(request)
        name, version, label = self._spec_args(request.tasks[0].model_spec)
        with self._observed(name, version, label, "MultiInference", entrypoint) as loaded:
            response = self._multi_inference_response(loaded, request, memory, timeout_ms)
            served_spec = model_pb2.ModelSpec(name=name)  # no one signature: each result names its own
            served_spec.version.value = loaded.version
        self._log("multi_inference_log", served_spec, lambda: request, lambda: response)
        return response

    def _multi_inference_response(self, loaded, request, memory: RequestMemory, timeout_ms=0):
        deadline = _deadline(timeout_ms)
        examples_of = functools.cache(lambda: self._examples(request.input, memory))  # shared by the tasks
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            signature = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature not in loaded.signatures:
                raise invalid(f"Requested signature not found in model graph: {signature}")
            result = response.results.add()
            remaining_ms = _remaining_ms(deadline)  # the tasks share the request's deadline
            if task.method_name == tf.saved_model.CLASSIFY_METHOD_NAME:
                _, classification = self._classification_result(loaded, signature, examples_of, memory, False,
                                                                remaining_ms)
                result.classification_result.CopyFrom(classification)
            else:
                _, regression = self._regression_result(loaded, signature, examples_of, memory, False, remaining_ms)
                result.regression_result.CopyFrom(regression)
            self._echo(result.model_spec, task.model_spec.name, loaded, signature)
        return response

    # ------------------------------------------------------------------------------------ metadata / status
    def metadata(self, request):
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        name, version, label = self._spec_args(request.model_spec)
        with self._servable(name, version, label) as loaded:
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = name
            response.model_spec.version.value = loaded.version
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature in loaded.signatures.items():
                signature_map.signature_def[key].CopyFrom(signature)
            response.metadata["signature_def"].Pack(signature_map)
            return response

    def status(self, request):
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for record in self.manager.status(spec.name, version):
            status = response.model_version_status.add(version=record.version)
            status.state = get_model_status_pb2.ModelVersionStatus.State.Value(record.state)
            status.status.error_code = _error_code_value(record.error_code)
            status.status.error_message = record.error_message
        return response

    def apply_config(self, config, *, startup: bool = False, deadline: float | None = None,
                     confine=lambda config: None) -> None:
        """ServerCore::ReloadConfig: the startup config, each change of --model_config_file, and the reload RPC
        (bounded by `deadline`, see ModelManager.apply_config; `confine(config)` refuses paths it may not use, once
        the config is valid). The request logger follows the models' logging_config once the models are applied."""
        try:
            validate_model_server_config(config)
        except ConfigError as error:
            raise invalid(str(error)) from None
        confine(config)

        def on_applied():
            if self.request_logger is not None:
                self.request_logger.update(config)
        self.manager.apply_config(config, startup=startup, deadline=deadline, on_applied=on_applied)

    # ---------------------------------------------------------------------------------------------- warmup
    def warmup_request(self, loaded: VersionLifecycle, log_entry) -> None:
        """Runs one PredictionLog record from assets.extra/tf_serving_warmup_requests against `loaded`, as TF Serving's
        RunWarmupRequest: the request's model name and version are not looked at, its signature is; the response is
        dropped. A record without a log_type does nothing; session_run and predict_streamed logs are UNIMPLEMENTED,
        named by their number in the oneof. The records are the model's own, like its graph: no memory budget.

        Each record runs once on each path a request takes through a TF session: a cached callable when it has no
        deadline, TF_SessionRun with RunOptions.timeout_in_ms when it has one (every REST request; gRPC calls with a
        deadline). Each path builds its own executor on first use (~0.4 s of graph optimisation for the classifier),
        so warming only one would leave the other's first request slow."""
        kind = log_entry.WhichOneof("log_type")
        if kind not in (None, "predict_log", "classify_log", "regress_log", "multi_inference_log"):
            number = log_entry.DESCRIPTOR.fields_by_name[kind].number
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}")
        for timeout_ms in (0, WARMUP_DEADLINE_MS):
            if kind == "predict_log":
                request = log_entry.predict_log.request
                inputs = {alias: self._to_numpy(alias, proto, UNMETERED) for alias, proto in request.inputs.items()}
                self._predict_arrays(loaded, request.model_spec.signature_name, inputs, UNMETERED,
                                     list(request.output_filter), timeout_ms)
            elif kind in ("classify_log", "regress_log"):
                request = getattr(log_entry, kind).request
                compute = self._classification_result if kind == "classify_log" else self._regression_result
                compute(loaded, request.model_spec.signature_name, lambda: self._examples(request.input, UNMETERED),
                        UNMETERED, False, timeout_ms)
            elif kind == "multi_inference_log":
                _check_multi_inference(log_entry.multi_inference_log.request)
                self._multi_inference_response(loaded, log_entry.multi_inference_log.request, UNMETERED, timeout_ms)


def _check_multi_inference(request) -> None:
    """multi_inference.cc's checks of a MultiInferenceRequest before any model runs, in its order and words."""
    if not request.tasks:
        raise invalid("Empty MultiInferenceRequest")
    names = {task.model_spec.name for task in request.tasks}
    if "" in names:
        raise invalid("Found ModelSpec with an empty model name.")
    if len(names) > 1:
        raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    seen = set()
    for task in request.tasks:
        signature = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature in seen:
            raise invalid(f"Duplicate evaluation of signature: {signature}")
        seen.add(signature)
        if task.method_name not in (tf.saved_model.CLASSIFY_METHOD_NAME, tf.saved_model.REGRESS_METHOD_NAME):
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Unsupported signature method_name: "
                               f"{task.method_name}")


def _shape_text(array: np.ndarray) -> str:
    """TensorShape::DebugString: [2,3]."""
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _error_code_value(name: str) -> int:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN).value[0]
