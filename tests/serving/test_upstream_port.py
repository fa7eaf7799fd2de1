"""TF Serving's own integration test (tensorflow_serving/model_servers/tensorflow_model_server_test.py) ported to run
against `python -m serving` as a subprocess, started with the flags upstream's RunServer passes:

    --port=P --rest_api_port=R --rest_api_timeout_in_ms=5000 --grpc_socket_path=S
    (--model_name=N --model_base_path=P | --model_config_file=F) [--monitoring_config_file=F]
    [--model_config_file_poll_wait_seconds=N] [--enable_batching --batching_parameters_file=F]
    [--grpc_channel_arguments=...]

The upstream SavedModels are rebuilt by upstream_models.py; the config files are upstream's testdata text.
Deviations from upstream, all to keep this file fast: every server starts at once (upstream starts each on first use),
each has its own UDS path (upstream reuses /tmp/tf-serving.sock), the readiness probe polls every 0.2 s instead of
1 s, the reload test polls for the new model instead of sleeping, and the Prometheus check runs on the server that
also answers the other `default` tests (upstream starts a second one just for --monitoring_config_file).
TF Lite (testPredictOnTfLite: --prefer_tflite_model on a half_plus_two model.tflite) is covered in tests/test_litert.py.
Not ported: the profiler service, tf_text, the Keras/MirroredStrategy models and the SessionBundle (pre-SavedModel)
models: out of scope for this server.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import portpicker
import pytest
import upstream_models
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RPC_TIMEOUT = 5.0
HTTP_REST_TIMEOUT_MS = 5000
VERSION = 123

# testdata/batching_config.txt, bad_model_config.txt and monitoring_config.txt, verbatim.
BATCHING_CONFIG = """max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
"""
BAD_MODEL_CONFIG = "improperly formatted file"
MONITORING_CONFIG = """prometheus_config: {
  enable: true,
  path: "/monitoring/prometheus/metrics"
}
"""
# testdata/good_model_config.txt with its placeholders.
GOOD_MODEL_CONFIG = """model_config_list: {

  config: {
    name: "half_plus_two",
    base_path: "${TEST_HALF_PLUS_TWO_DIR}",
    model_platform: "tensorflow"
  },
  config: {
    name: "half_plus_three",
    base_path: "${TEST_HALF_PLUS_THREE_DIR}",
    model_platform: "tensorflow"
  }

}
"""
# testModelConfigReload's template.
BASE_CONFIG_PROTO = """
    model_config_list: {{
      config: {{
        name: "{name}",
        base_path: "{model_path}",
        model_platform: "tensorflow"
      }}
    }}
    """


def _tensor(shape, dtype, name=""):
    return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(size), "name": ""} for size in shape or []],
                                             "unknown_rank": shape is None}, "name": name}


def _signature(inputs, outputs, method):
    return {"inputs": inputs, "outputs": outputs, "method_name": f"tensorflow/serving/{method}", "defaults": {}}


# testdata/half_plus_two_model_metadata.json (HEAD: each SignatureDef also has "defaults": {}).
_EXAMPLES = {"inputs": _tensor(None, "DT_STRING", "tf_example:0")}
HALF_PLUS_TWO_MODEL_METADATA = {
    "model_spec": {"name": "default", "signature_name": "", "version": "123"},
    "metadata": {"signature_def": {"signature_def": {
        "regress_x2_to_y3": _signature({"inputs": _tensor([-1, 1], "DT_FLOAT", "x2:0")},
                                       {"outputs": _tensor([-1, 1], "DT_FLOAT", "y3:0")}, "regress"),
        "serving_default": _signature({"x": _tensor([-1, 1], "DT_FLOAT", "x:0")},
                                      {"y": _tensor([-1, 1], "DT_FLOAT", "y:0")}, "predict"),
        "classify_x_to_y": _signature(_EXAMPLES, {"scores": _tensor([-1, 1], "DT_FLOAT", "y:0")}, "classify"),
        "regress_x_to_y2": _signature(_EXAMPLES, {"outputs": _tensor([-1, 1], "DT_FLOAT", "y2:0")}, "regress"),
        "regress_x_to_y": _signature(_EXAMPLES, {"outputs": _tensor([-1, 1], "DT_FLOAT", "y:0")}, "regress"),
    }}},
}


def sorted_object(obj):
    """Upstream's SortedObject: order-insensitive comparison of parsed JSON."""
    if isinstance(obj, dict):
        return sorted((k, sorted_object(v)) for k, v in obj.items())
    if isinstance(obj, list):
        return sorted(sorted_object(x) for x in obj)
    return obj


class Server:
    """One `python -m serving` process with upstream RunServer's command line."""

    def __init__(self, tmp, key, model_name=None, model_path=None, model_config_file=None, monitoring_config_file=None,
                 batching_parameters_file=None, grpc_channel_arguments="", model_config_file_poll_period=None,
                 flags=()):
        self.port, self.rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
        self.socket_path = str(tmp / f"{key}.sock")
        command = [sys.executable, "-m", "serving", f"--port={self.port}", f"--rest_api_port={self.rest_port}",
                   f"--rest_api_timeout_in_ms={HTTP_REST_TIMEOUT_MS}", f"--grpc_socket_path={self.socket_path}"]
        if model_config_file:
            command.append(f"--model_config_file={model_config_file}")
        else:
            command += [f"--model_name={model_name}", f"--model_base_path={model_path}"]
        if monitoring_config_file:
            command.append(f"--monitoring_config_file={monitoring_config_file}")
        if model_config_file_poll_period is not None:
            command.append(f"--model_config_file_poll_wait_seconds={model_config_file_poll_period}")
        if batching_parameters_file:
            command += ["--enable_batching", f"--batching_parameters_file={batching_parameters_file}"]
        if grpc_channel_arguments:
            command.append(f"--grpc_channel_arguments={grpc_channel_arguments}")
        command += flags
        self.stderr_path = tmp / f"{key}.stderr"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(["nice", "-n", "10", *command], cwd=REPO, stdout=subprocess.DEVNULL,
                                            stderr=stderr)
        self._ready = False

    @property
    def address(self):
        self.wait_for_server_ready()
        return f"localhost:{self.port}"

    @property
    def rest(self):
        self.wait_for_server_ready()
        return f"http://localhost:{self.rest_port}"

    def wait_for_server_ready(self, timeout_s=90):
        """Upstream's WaitForServerReady: ready once Predict on a missing model fails with 'Servable' in details."""
        if self._ready:
            return
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "intentionally_missing_model"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"server exited: {self.stderr_path.read_text()[-3000:]}"
            with grpc.insecure_channel(f"localhost:{self.port}") as channel:
                try:
                    prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, RPC_TIMEOUT)
                except grpc.RpcError as error:
                    if "Servable" in (error.details() or ""):
                        self._ready = True
                        return
            time.sleep(0.2)
        raise TimeoutError(f"server not ready in {timeout_s}s: {self.stderr_path.read_text()[-3000:]}")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """Builds the upstream test models, then starts every server of this module at once (readiness awaited on use)."""
    tmp = tmp_path_factory.mktemp("upstream")
    testdata = tmp / "testdata"
    half_plus_two = testdata / "saved_model_half_plus_two_cpu"
    half_plus_three = testdata / "saved_model_half_plus_three"
    tf2 = testdata / "saved_model_half_plus_two_tf2_cpu"
    saved = tmp / "tf_saved_model_save"
    saved_multi = tmp / "tf_saved_model_save_multiple_signatures"
    upstream_models.write_half_plus_two_cpu(str(half_plus_two / upstream_models.UPSTREAM_VERSION_DIR))
    upstream_models.write_half_plus_three(str(half_plus_three / upstream_models.UPSTREAM_VERSION_DIR))
    upstream_models.write_half_plus_two_tf2(str(tf2 / upstream_models.UPSTREAM_VERSION_DIR))
    upstream_models.write_tf_saved_model_save(str(saved / upstream_models.UPSTREAM_VERSION_DIR))
    upstream_models.write_tf_saved_model_save_multiple_signatures(
        str(saved_multi / upstream_models.UPSTREAM_VERSION_DIR))

    def write(name, text):
        (tmp / name).write_text(text)
        return str(tmp / name)

    good_config = write("good_model_config.conf", GOOD_MODEL_CONFIG.replace("${TEST_HALF_PLUS_TWO_DIR}", str(
        half_plus_two)).replace("${TEST_HALF_PLUS_THREE_DIR}", str(half_plus_three)))
    two_config = BASE_CONFIG_PROTO.format(name="half_plus_two", model_path=half_plus_two)
    servers = {
        "default": Server(tmp, "default", "default", half_plus_two,
                          monitoring_config_file=write("monitoring_config.txt", MONITORING_CONFIG)),
        "tf2": Server(tmp, "tf2", "default", tf2),
        "batching": Server(tmp, "batching", "default", half_plus_two,
                           batching_parameters_file=write("batching_config.txt", BATCHING_CONFIG)),
        "channel_args": Server(tmp, "channel_args", "default", half_plus_two, grpc_channel_arguments=(
            "grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb,grpc.so_reuseaddr=1")),
        "good_config": Server(tmp, "good_config", model_config_file=good_config),
        "bad_config": Server(tmp, "bad_config", model_config_file=write("bad_model_config.txt", BAD_MODEL_CONFIG)),
        "reload": Server(tmp, "reload", model_config_file=write("reload_config.txt", two_config),
                         model_config_file_poll_period=1),
        # Upstream's test calls HandleReloadConfigRequest, which this server answers only when enabled.
        "no_reload": Server(tmp, "no_reload", model_config_file=write("no_reload_config.txt", two_config),
                            model_config_file_poll_period=0,
                            flags=["--enable_reload_config_rpc", f"--reload_config_allowed_paths={tmp}"]),
        "saved": Server(tmp, "saved", "default", saved),
        "saved_multi": Server(tmp, "saved_multi", "default", saved_multi),
    }
    paths = {"half_plus_two": half_plus_two, "half_plus_three": half_plus_three, "tmp": tmp}
    yield servers, paths
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def servers(upstream):
    return upstream[0]


@pytest.fixture(scope="module")
def paths(upstream):
    return upstream[1]


def prediction_stub(address):
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))


def verify_model_spec(model_spec, name, signature_name, version=VERSION):
    assert (model_spec.name, model_spec.signature_name, model_spec.version.value) == (name, signature_name, version)


def verify_predict_request(address, expected_output, expected_version=VERSION, model_name="default",
                           specify_output=True, batch_input=False, signature_name="serving_default"):
    """Upstream's VerifyPredictRequest: x = [2.0] (shape [1], or [1,1] with batch_input), float_val in the reply."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    result = prediction_stub(address).Predict(request, RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert len(result.outputs["y"].float_val) == 1
    assert result.outputs["y"].float_val[0] == expected_output
    verify_model_spec(result.model_spec, model_name, signature_name, expected_version)


def call_rest(url, request=None):
    """Upstream's CallREST (one attempt: a failure is reported at once, not after 60 retries)."""
    data = json.dumps(request).encode("utf-8") if request is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
        return response.read()


def example_input(input_proto):
    example = input_proto.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])


# --- gRPC -------------------------------------------------------------------------------------------------------------

def test_get_model_status(servers):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(servers["default"].address))
    result = stub.GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == VERSION
    assert result.model_version_status[0].status.error_code == 0


def test_get_model_metadata(servers):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = prediction_stub(servers["default"].address).GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == VERSION
    assert len(result.metadata) == 1
    assert "signature_def" in result.metadata
    # Beyond upstream: the Any packs a SignatureDefMap with the model's five signatures.
    assert result.metadata["signature_def"].type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    result.metadata["signature_def"].Unpack(signature_map)
    assert sorted(signature_map.signature_def) == sorted(
        HALF_PLUS_TWO_MODEL_METADATA["metadata"]["signature_def"]["signature_def"])


@pytest.mark.parametrize("server_key", ["default", "tf2"])
def test_classify(servers, server_key):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    example_input(request.input)
    result = prediction_stub(servers[server_key].address).Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    verify_model_spec(result.model_spec, "default", "classify_x_to_y")


@pytest.mark.parametrize("server_key", ["default", "tf2"])
def test_regress(servers, server_key):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    example_input(request.input)
    result = prediction_stub(servers[server_key].address).Regress(request, RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    verify_model_spec(result.model_spec, "default", "regress_x_to_y")


@pytest.mark.parametrize("server_key", ["default", "tf2"])
def test_multi_inference(servers, server_key):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
        task = request.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
        task.method_name = f"tensorflow/serving/{method}"
    example_input(request.input)
    result = prediction_stub(servers[server_key].address).MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        verify_model_spec(result.results[i].model_spec, "default", request.tasks[i].model_spec.signature_name)


@pytest.mark.parametrize("server_key", ["default", "batching"])
def test_predict(servers, server_key):
    """testPredictSavedModel and testPredictBatching (_TestPredict: with, then without output_filter)."""
    verify_predict_request(servers[server_key].address, expected_output=3.0)
    verify_predict_request(servers[server_key].address, expected_output=3.0, specify_output=False)


def test_good_model_config(servers):
    address = servers["good_config"].address
    verify_predict_request(address, model_name="half_plus_two", expected_output=3.0)
    verify_predict_request(address, model_name="half_plus_two", expected_output=3.0, specify_output=False)
    verify_predict_request(address, model_name="half_plus_three", expected_output=4.0)
    verify_predict_request(address, model_name="half_plus_three", expected_output=4.0, specify_output=False)


def test_bad_model_config(servers):
    process = servers["bad_config"].process
    assert process.wait(timeout=60) != 0
    stderr = servers["bad_config"].stderr_path.read_text()
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in stderr


def test_model_config_reload(servers, paths):
    server = servers["reload"]
    verify_predict_request(server.address, model_name="half_plus_two", expected_output=3.0, specify_output=False)
    config_path = paths["tmp"] / "reload_config.txt"
    config_path.write_text(BASE_CONFIG_PROTO.format(name="half_plus_three", model_path=paths["half_plus_three"]))
    deadline = time.monotonic() + 30  # upstream sleeps poll_period + 1 s; polling here is faster and less flaky
    while True:
        try:
            verify_predict_request(server.address, model_name="half_plus_three", expected_output=4.0,
                                   specify_output=False)
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
            assert time.monotonic() < deadline, "the rewritten config was not applied within 30 s"
            time.sleep(0.2)
    # The new config replaces the old one (server_core.cc ReloadConfig): half_plus_two is unloaded.
    deadline = time.monotonic() + 10
    while True:
        try:
            verify_predict_request(server.address, model_name="half_plus_two", expected_output=3.0)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
            break
        assert time.monotonic() < deadline, "half_plus_two still served 10 s after it left the config"
        time.sleep(0.2)


def test_model_config_reload_with_zero_poll_period_then_handle_reload_config_request(servers, paths):
    server = servers["no_reload"]
    verify_predict_request(server.address, model_name="half_plus_two", expected_output=3.0, specify_output=False)
    config_path = paths["tmp"] / "no_reload_config.txt"
    config_path.write_text(BASE_CONFIG_PROTO.format(name="half_plus_three", model_path=paths["half_plus_three"]))
    time.sleep(0 + 1)
    verify_predict_request(server.address, model_name="half_plus_two", expected_output=3.0, specify_output=False)

    # Beyond upstream: ModelService.HandleReloadConfigRequest blocks until the new model is available, and the new
    # config replaces the old one.
    request = model_management_pb2.ReloadConfigRequest()
    config = request.config.model_config_list.config.add()
    config.name, config.model_platform = "half_plus_three", "tensorflow"
    config.base_path = str(paths["half_plus_three"])
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server.address))
    response = stub.HandleReloadConfigRequest(request, 30)
    assert response.status.error_code == 0
    verify_predict_request(server.address, model_name="half_plus_three", expected_output=4.0)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "half_plus_two"
    deadline = time.monotonic() + 10
    while True:
        states = [s.state for s in stub.GetModelStatus(status_request, RPC_TIMEOUT).model_version_status]
        if states == [get_model_status_pb2.ModelVersionStatus.END]:
            break
        assert time.monotonic() < deadline, f"half_plus_two states {states}, expected [END]"
        time.sleep(0.2)

    # Only a ModelConfigList is accepted.
    bad = model_management_pb2.ReloadConfigRequest()
    bad.config.custom_model_config.type_url = "type.googleapis.com/some.Config"
    with pytest.raises(grpc.RpcError) as error:
        stub.HandleReloadConfigRequest(bad, RPC_TIMEOUT)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == ("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                     "Only ModelConfigList is currently supported")


def test_good_grpc_channel_args(servers):
    verify_predict_request(servers["channel_args"].address, expected_output=3.0, specify_output=False)


def test_predict_uds(servers):
    servers["default"].wait_for_server_ready()
    verify_predict_request(f"unix:{servers['default'].socket_path}", expected_output=3.0, specify_output=False)


def test_tf_saved_model_save(servers):
    verify_predict_request(servers["saved"].address, expected_output=12.0, specify_output=False)


def test_tf_saved_model_save_multiple_signatures(servers):
    address = servers["saved_multi"].address
    verify_predict_request(address, expected_output=2.0, signature_name="custom_signature_key")
    verify_predict_request(address, expected_output=1.0)


def test_missing_model_is_not_found_with_servable_in_message(servers):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "intentionally_missing_model"
    with pytest.raises(grpc.RpcError) as error:
        prediction_stub(servers["default"].address).Predict(request, RPC_TIMEOUT)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == "Servable not found for request: Latest(intentionally_missing_model)"


# --- REST -------------------------------------------------------------------------------------------------------------

def test_classify_rest(servers):
    response = call_rest(f"{servers['default'].rest}/v1/models/default:classify",
                         {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert json.loads(response) == {"results": [[["", 3.0]]]}


def test_regress_rest(servers):
    response = call_rest(f"{servers['default'].rest}/v1/models/default:regress",
                         {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert json.loads(response) == {"results": [3.0]}


def test_predict_rest(servers):
    response = call_rest(f"{servers['default'].rest}/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
    assert json.loads(response) == {"predictions": [3.0, 3.5, 4.0]}


def test_predict_columnar_rest(servers):
    response = call_rest(f"{servers['default'].rest}/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]})
    assert json.loads(response) == {"outputs": [3.0, 3.5, 4.0]}


def test_get_status_rest(servers):
    response = call_rest(f"{servers['default'].rest}/v1/models/default")
    assert json.loads(response) == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def test_get_model_metadata_rest(servers):
    response = call_rest(f"{servers['default'].rest}/v1/models/default/metadata")
    assert sorted_object(json.loads(response)) == sorted_object(HALF_PLUS_TWO_MODEL_METADATA)


def test_prometheus_endpoint(servers):
    response = call_rest(f"{servers['default'].rest}/monitoring/prometheus/metrics")
    assert "# TYPE" in response.decode("utf-8")


# --- Byte-level details beyond upstream's parsed-JSON comparisons (TF Serving sources cited) -------------------------

def test_status_json_bytes_use_protobuf_cpp_whitespace(servers):
    """http_rest_api_util.cc ToJsonString: MessageToJsonString(add_whitespace=true) indents by one space."""
    response = call_rest(f"{servers['default'].rest}/v1/models/default").decode()
    assert response.startswith('{\n "model_version_status": [\n  {\n   "version": "123",')


def test_json_value_in_error_messages_is_rapidjson_pretty(servers):
    """json_tensor.cc JsonValueToString uses rapidjson's PrettyWriter (4-space indent) for the echoed JSON value."""
    request = urllib.request.Request(f"{servers['default'].rest}/v1/models/default:predict",
                                     data=json.dumps({"instances": [1.0], "inputs": [1.0]}).encode())
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 400
    assert json.loads(error.value.read()) == {"error": (
        'JSON Value: {\n    "instances": [\n        1.0\n    ],\n    "inputs": [\n        1.0\n    ]\n} '
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist ")}
