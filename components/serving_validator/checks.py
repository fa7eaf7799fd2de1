"""The checks a candidate passes before it may be pushed: each returns None when it passes, else a one-line reason.

1. `op_check`: every op of its graph (function library included) is in the declared TF Serving release's op
   registry (image_retrain/op_compatibility.py);
2. `release_check`: the release's own TensorFlow (a side environment) loads it as TF Serving does (TF1 loader,
   `serve` tag, a Session) and answers the warmup requests as the Trainer's in-process model did;
3. `served_check`: our model server loads a staging copy (replaying its warmup records), and answers the same
   requests over gRPC Predict and Classify and REST :predict and :classify as the Trainer did; then the latency of
   single-image requests is measured.
"Answers as the Trainer did": the responses recorded in the warmup records (image_retrain/warmup_records.py), scores
within TOLERANCE, labels equal.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tfx.utils import io_utils

from image_retrain import op_compatibility
from serving.client import RestClient, ServerError
from serving.grpc_client import GrpcClient
from serving.process import model_server

TOLERANCE = 1e-5
RELEASE_PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "release_probe.py")
# Where `make setup` (and the Dockerfile) put the TensorFlow of a TF Serving release: <dir>/<release>/bin/python.
RELEASE_ENVIRONMENTS_ENV = "IMAGE_RETRAIN_SERVING_TF_DIR"
SERVER_START_TIMEOUT_S = 300  # TFX InfraValidator's default max_loading_time_seconds


def release_python(release: str) -> str | None:
    """The python of the side environment holding TensorFlow `release`, or None when there is none."""
    root = os.environ.get(RELEASE_ENVIRONMENTS_ENV) or os.path.join(sys.prefix, "serving-tf")
    python = os.path.join(root, release, "bin", "python")
    return python if os.access(python, os.X_OK) else None


def op_check(model_path: str, release: str) -> tuple[str | None, op_compatibility.OpReport]:
    report = op_compatibility.check(model_path, release)
    if report.missing_ops:
        return (f"it uses ops TensorFlow Serving {release} does not register: {', '.join(report.missing_ops)}",
                report)
    return None, report


# -- answers: what a record asked, what was answered, and whether they agree


def _predict_outputs(response) -> dict[str, np.ndarray]:
    return {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}


def _classifications(result) -> list[list[tuple[str, float]]]:
    return [[(c.label, c.score) for c in item.classes] for item in result.classifications]


def _difference(expected, answered, what: str) -> str | None:
    """None when `answered` equals `expected` (numbers within TOLERANCE), else what differs."""
    if isinstance(expected, dict):
        if set(answered) != set(expected):
            return f"{what}: outputs {sorted(answered)}, expected {sorted(expected)}"
        return next((d for alias in expected if (d := _difference(expected[alias], answered[alias],
                                                                  f"{what} {alias}"))), None)
    expected, answered = _as_text(np.asarray(expected)), _as_text(np.asarray(answered))
    if expected.shape != answered.shape:
        return f"{what}: shape {answered.shape}, expected {expected.shape}"
    if expected.dtype.kind in "fc":
        worst = float(np.max(np.abs(expected - answered))) if expected.size else 0.0
        return f"{what}: differs by {worst:.2e} (tolerance {TOLERANCE:.0e})" if worst > TOLERANCE else None
    return None if np.array_equal(expected, answered) else f"{what}: {answered.tolist()!r}, expected " \
                                                          f"{expected.tolist()!r}"


def _as_text(array: np.ndarray) -> np.ndarray:
    """Strings as text: TensorProtos carry bytes, REST JSON carries str."""
    if array.dtype.kind in "OS":
        return np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(array)
    return array


def _classification_difference(expected, answered, what: str) -> str | None:
    labels = [[label for label, _ in row] for row in expected]
    if [[label for label, _ in row] for row in answered] != labels:
        return f"{what}: classes differ"
    return _difference(np.array([[s for _, s in row] for row in expected], np.float32),
                       np.array([[s for _, s in row] for row in answered], np.float32), f"{what} scores")


# -- 2. the release's own TensorFlow


def _probe_requests(records: list[prediction_log_pb2.PredictionLog]) -> list[dict]:
    def encoded(proto) -> str:
        return base64.b64encode(proto.SerializeToString()).decode("ascii")

    requests = []
    for record in records:
        if record.HasField("predict_log"):
            request = record.predict_log.request
            requests.append({"signature": request.model_spec.signature_name,
                             "inputs": {alias: encoded(proto) for alias, proto in request.inputs.items()}})
        else:  # classify: the signature's one input is the serialized tf.Examples (TF Serving feeds it the same)
            request = record.classify_log.request
            examples = [example.SerializeToString() for example in request.input.example_list.examples]
            requests.append({"signature": request.model_spec.signature_name,
                             "inputs": {"inputs": encoded(tf.make_tensor_proto(examples, dtype=tf.string))}})
    return requests


def _probe_difference(record, answer: dict[str, str], what: str) -> str | None:
    outputs = {alias: tf.make_ndarray(tensor_pb2.TensorProto.FromString(base64.b64decode(value)))
               for alias, value in answer.items()}
    if record.HasField("predict_log"):
        return _difference(_predict_outputs(record.predict_log.response), outputs, what)
    expected = _classifications(record.classify_log.response.result)
    answered = [[(label.decode(), float(score)) for label, score in zip(classes, scores)]
                for classes, scores in zip(outputs["classes"], outputs["scores"])]
    return _classification_difference(expected, answered, what)


def release_check(model_path: str, records, release: str) -> tuple[str | None, str]:
    """(reason or None, what ran): the release's TensorFlow loading and answering, where its environment exists."""
    python = release_python(release)
    if python is None:
        return None, (f"skipped: no TensorFlow {release} environment (make setup creates it under "
                      f"${RELEASE_ENVIRONMENTS_ENV} or <venv>/serving-tf)")
    with tempfile.TemporaryDirectory() as scratch:
        requests, answers = os.path.join(scratch, "requests.json"), os.path.join(scratch, "answers.json")
        with open(requests, "w") as f:
            json.dump(_probe_requests(records), f)
        done = subprocess.run([python, RELEASE_PROBE, model_path, requests, answers], capture_output=True,
                              text=True, timeout=SERVER_START_TIMEOUT_S,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if done.returncode != 0 or not os.path.exists(answers):
            return f"TensorFlow {release} could not run the check: {done.stderr.strip()[-300:]}", "failed"
        with open(answers) as f:
            result = json.load(f)
    if "error" in result:
        return f"TensorFlow {release} cannot load or run it: {result['error'].splitlines()[0][:400]}", "failed"
    for index, (record, answer) in enumerate(zip(records, result["answers"])):
        difference = _probe_difference(record, answer, f"TensorFlow {release}, warmup record {index}")
        if difference:
            return difference, "failed"
    return None, f"TensorFlow {result['tensorflow']} loaded it with the TF1 loader and answered {len(records)} requests"


# -- 3. our model server


@dataclasses.dataclass
class ServedResult:
    reason: str | None
    latency_ms: dict[str, float] = dataclasses.field(default_factory=dict)  # e.g. grpc_predict_p50_ms


def _rest_instances(request) -> list[dict]:
    (alias,) = request.inputs
    return [{alias: {"b64": base64.b64encode(value).decode("ascii")}} for value in request.inputs[alias].string_val]


def _rest_examples(request) -> list[dict]:
    return [{name: {"b64": base64.b64encode(feature.bytes_list.value[0]).decode("ascii")}
             for name, feature in example.features.feature.items()} for example in request.input.example_list.examples]


def _served_differences(grpc_client: GrpcClient, rest: RestClient, model_name: str, records):
    for index, record in enumerate(records):
        what = f"warmup record {index}"
        if record.HasField("predict_log"):
            request = record.predict_log.request
            expected = _predict_outputs(record.predict_log.response)
            response = grpc_client.predict(model_name, dict(request.inputs), request.model_spec.signature_name)
            yield _difference(expected, _predict_outputs(response), f"gRPC Predict, {what}")
            body = {"signature_name": request.model_spec.signature_name, "instances": _rest_instances(request)}
            predictions = rest.request(f"/v1/models/{model_name}:predict", body)["predictions"]
            yield _difference(expected, {alias: [row[alias] for row in predictions] for alias in expected},
                              f"REST :predict, {what}")
        else:
            request = record.classify_log.request
            expected = _classifications(record.classify_log.response.result)
            answered = grpc_client.classify(model_name, request.input, request.model_spec.signature_name)
            yield _classification_difference(expected, _classifications(answered.result), f"gRPC Classify, {what}")
            body = {"signature_name": request.model_spec.signature_name, "examples": _rest_examples(request)}
            results = rest.request(f"/v1/models/{model_name}:classify", body)["results"]
            yield _classification_difference(expected, [[(label, score) for label, score in row] for row in results],
                                             f"REST :classify, {what}")


def _latency_ms(call, requests: int) -> tuple[float, float]:
    seconds = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    p50, p99 = np.percentile(seconds, [50, 99])
    return 1000 * float(p50), 1000 * float(p99)


def served_check(model_path: str, records, model_name: str, work_dir: str, latency_requests: int) -> ServedResult:
    """Our server on a staging copy of the model (a model base path in `work_dir` holding it as version 1)."""
    staging = os.path.join(work_dir, "staging", model_name)
    io_utils.copy_dir(model_path, os.path.join(staging, "1"))
    log_path = os.path.join(work_dir, "model_server.log")
    try:
        # One load attempt: a staging copy that fails to load will not load on a retry either (TF Serving would
        # retry for 5 minutes).
        with open(log_path, "wb") as log, model_server(f"--model_name={model_name}", f"--model_base_path={staging}",
                                                      "--max_num_load_retries=0", stdout=log, stderr=subprocess.STDOUT,
                                                      timeout_s=SERVER_START_TIMEOUT_S) as server:
            grpc_client, rest = GrpcClient(server.grpc_address), RestClient(server.rest_url)
            try:
                reason = next((d for d in _served_differences(grpc_client, rest, model_name, records) if d), None)
                if reason:
                    return ServedResult(reason)
                first = records[0].predict_log.request
                body = {"signature_name": first.model_spec.signature_name, "instances": _rest_instances(first)}
                latency = {}
                for api, call in (("grpc_predict", lambda: grpc_client.predict(
                                      model_name, dict(first.inputs), first.model_spec.signature_name)),
                                  ("rest_predict", lambda: rest.request(f"/v1/models/{model_name}:predict", body))):
                    latency[f"{api}_p50_ms"], latency[f"{api}_p99_ms"] = _latency_ms(call, latency_requests)
                return ServedResult(None, latency)
            finally:
                grpc_client.close()
    except RuntimeError:
        return ServedResult(f"our model server could not load it; its log ends: {_tail(log_path)}")
    except TimeoutError:
        return ServedResult(f"our model server did not load it within {SERVER_START_TIMEOUT_S} s; its log ends: "
                            f"{_tail(log_path)}")
    except ServerError as error:
        return ServedResult(f"our model server refused a warmup request: {error}")


def _tail(path: str, characters: int = 600) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.read()[-characters:].splitlines() if line.strip())
    except OSError:
        return ""
