"""TF Serving conformance over gRPC (official tensorflow_serving.apis stubs) and REST (plain HTTP) on real models.

Expected values and messages are TF Serving's (tensorflow_model_server_test.py, http_rest_api_handler_test.cc).
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import free_port, prometheus_samples, write
from tensorflow.core.example import feature_pb2
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


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    from serving.server import ModelServer, ServerOptions

    tmp = tmp_path_factory.mktemp("conformance")
    config = write(tmp / "models.config", f"""
model_config_list {{
  config {{ name: "default" base_path: "{models_dir / 'half'}" model_platform: "tensorflow" }}
  config {{ name: "half_plus_three" base_path: "{models_dir / 'half_plus_three'}" model_platform: "tensorflow" }}
  config {{
    name: "two" base_path: "{models_dir / 'half_two_versions'}" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 123 versions: 124 }} }}
    version_labels {{ key: "stable" value: 123 }}
    version_labels {{ key: "canary" value: 124 }}
  }}
}}""")
    monitoring = write(tmp / "monitoring.config",
                       'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }')
    # Labels in a startup config point at versions not loaded yet: tensorflow_model_server refuses them without
    # --allow_version_labels_for_unavailable_models, and so do we (test_version_labels.py).
    server = ModelServer(ServerOptions(port=free_port(), rest_api_port=free_port(), model_config_file=config,
                                       monitoring_config_file=monitoring, rest_api_max_request_bytes=1 << 20,
                                       rest_api_enable_cors_support=True,
                                       allow_version_labels_for_unavailable_models=True,
                                       enable_reload_config_rpc=True, reload_config_allowed_paths=str(models_dir)))
    server.start()
    yield server
    server.stop(grace_seconds=2)


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(f"localhost:{server.grpc_port}", options=[
        ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel), model_service_pb2_grpc.ModelServiceStub(channel))
    channel.close()


def rest(server, path, body=None, method=None, raw=None, headers=None):
    """(status, parsed JSON or text, headers) for a REST call; body is JSON-encoded unless raw bytes are given."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"http://localhost:{server.rest_port}{path}", data=data, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text, response_headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, text, response_headers = error.code, error.read(), error.headers
    try:
        return status, json.loads(text), response_headers
    except ValueError:
        return status, text.decode("utf-8", "replace"), response_headers


def x_request(name="default", signature="", version=None, label=None, output_filter=("y",), values=(2.0,)):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(list(values), dtype=tf.float32, shape=[len(values)]))
    request.output_filter.extend(output_filter)
    return request


def example_input(request, x=2.0):
    example = request.input.example_list.examples.add()
    example.features.feature["x"].CopyFrom(feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[x])))
    return request


def grpc_error(call, request):
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=30)
    return error.value.code(), error.value.details()


# ------------------------------------------------------------------------------------------------------ gRPC

def test_grpc_predict_float_val_and_echoed_model_spec(stubs):
    predict, _ = stubs
    for output_filter in (("y",), ()):
        response = predict.Predict(x_request(output_filter=output_filter), timeout=30)
        assert list(response.outputs) == ["y"]
        assert response.outputs["y"].dtype == tf.float32.as_datatype_enum
        assert list(response.outputs["y"].float_val) == [3.0]
        assert (response.model_spec.name, response.model_spec.signature_name, response.model_spec.version.value) \
            == ("default", "serving_default", 123)
    response = predict.Predict(x_request(name="half_plus_three"), timeout=30)
    assert list(response.outputs["y"].float_val) == [4.0]


def test_grpc_versions_and_labels(stubs):
    predict, _ = stubs
    assert predict.Predict(x_request("two"), timeout=30).model_spec.version.value == 124  # latest available
    assert predict.Predict(x_request("two", version=123), timeout=30).model_spec.version.value == 123
    assert predict.Predict(x_request("two", label="stable"), timeout=30).model_spec.version.value == 123
    assert predict.Predict(x_request("two", label="canary"), timeout=30).model_spec.version.value == 124


@pytest.mark.parametrize("request_kwargs,code,message", [
    ({"name": "nope"}, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    ({"name": "two", "version": 7}, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(two, 7)"),
    ({"name": "two", "label": "beta"}, grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: beta"),
    ({"signature": "nope"}, grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
    ({"output_filter": ("z",)}, grpc.StatusCode.INVALID_ARGUMENT,
     "output tensor alias not found in signature: z Outputs expected to be in the set {y}."),
    ({"name": ""}, grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
])
def test_grpc_predict_errors(stubs, request_kwargs, code, message):
    assert grpc_error(stubs[0].Predict, x_request(**request_kwargs)) == (code, message)


def test_grpc_predict_input_mismatch_and_wrong_dtype(stubs):
    request = x_request()
    request.inputs["a"].CopyFrom(tf.make_tensor_proto([1.0]))
    code, message = grpc_error(stubs[0].Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == ("input size does not match signature: 2!=1 len({a,x}) != len({x}). Sent extra: {a}. "
                       "Missing but required: {}.")
    request = x_request()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(["text"]))
    assert grpc_error(stubs[0].Predict, request) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Expects arg[0] to be float but string is provided")


def test_grpc_no_4mb_message_cap(stubs):
    values = np.arange(2_000_000, dtype=np.float32)  # 8 MB each way
    request = x_request(values=())
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(values))
    response = stubs[0].Predict(request, timeout=60)
    assert np.allclose(tf.make_ndarray(response.outputs["y"]), values * 0.5 + 2)


def test_grpc_classify_regress_multi_inference(stubs):
    predict, _ = stubs
    request = example_input(classification_pb2.ClassificationRequest())
    request.model_spec.name, request.model_spec.signature_name = "default", "classify_x_to_y"
    response = predict.Classify(request, timeout=30)
    assert [(c.label, c.score) for c in response.result.classifications[0].classes] == [("", 3.0)]
    assert (response.model_spec.signature_name, response.model_spec.version.value) == ("classify_x_to_y", 123)

    request = example_input(regression_pb2.RegressionRequest())
    request.model_spec.name, request.model_spec.signature_name = "default", "regress_x_to_y"
    response = predict.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == [3.0]
    request.model_spec.signature_name = "regress_x_to_y2"
    assert [r.value for r in predict.Regress(request, timeout=30).result.regressions] == [4.0]
    request.model_spec.signature_name = "nope"
    assert grpc_error(predict.Regress, request) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                   "No signature was found with the name: nope")

    request = example_input(inference_pb2.MultiInferenceRequest())
    for signature, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                              ("classify_x_to_y", "tensorflow/serving/classify")):
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = "default", signature
    response = predict.MultiInference(request, timeout=30)
    assert response.results[0].regression_result.regressions[0].value == 3.0
    assert response.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert [(r.model_spec.name, r.model_spec.signature_name, r.model_spec.version.value) for r in response.results] \
        == [("default", "regress_x_to_y", 123), ("default", "classify_x_to_y", 123)]
    request.tasks[1].method_name = "tensorflow/serving/predict"
    assert grpc_error(predict.MultiInference, request) == (
        grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict")


def test_grpc_metadata_and_status(stubs):
    predict, models = stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "default"
    response = predict.GetModelMetadata(request, timeout=30)
    assert (response.model_spec.name, response.model_spec.version.value) == ("default", 123)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    assert signature_map.signature_def["classify_x_to_y"].method_name == "tensorflow/serving/classify"
    assert set(signature_map.signature_def["serving_default"].inputs) == {"x"}
    request.metadata_field[:] = []
    assert grpc_error(predict.GetModelMetadata, request) == (
        grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field")

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "two"
    response = models.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (124, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0),
        (123, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0)]
    request.model_spec.name = "nope"
    assert grpc_error(models.GetModelStatus, request) == (grpc.StatusCode.NOT_FOUND,
                                                          "Could not find any versions of model nope")
    request.model_spec.name = "two"
    request.model_spec.version.value = 5
    assert grpc_error(models.GetModelStatus, request) == (grpc.StatusCode.NOT_FOUND,
                                                          "Could not find version 5 of model two")


def test_grpc_reload_config_rejects_bad_config(stubs):
    _, models = stubs
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.config.add(name="x", base_path="relative/path", model_platform="tensorflow")
    code, message = grpc_error(models.HandleReloadConfigRequest, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message == "Expected model x to have an absolute path or URI; got base_path()=relative/path"


# ------------------------------------------------------------------------------------------------------ REST

def test_rest_predict_row_columnar_by_version_and_label(server):
    assert rest(server, "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})[:2] == (
        200, {"predictions": [3.0, 3.5, 4.0]})
    assert rest(server, "/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]})[:2] == (
        200, {"outputs": [3.0, 3.5, 4.0]})
    assert rest(server, "/v1/models/default:predict", {"instances": [[1.0, 2.0], [3.0, 4.0]]})[1] == {
        "predictions": [[2.5, 3.0], [3.5, 4.0]]}
    assert rest(server, "/v1/models/two/versions/123:predict", {"instances": [2.0]})[1] == {"predictions": [3.0]}
    assert rest(server, "/v1/models/two/labels/canary:predict", {"instances": [2.0]})[1] == {"predictions": [3.0]}
    status, body, headers = rest(server, "/v1/models/default:predict",
                                 {"signature_name": "sum_ab", "instances": [{"a": 1, "b": 2}, {"a": 5, "b": 1}]})
    assert (status, body) == (200, {"predictions": [{"sum": 3.0, "diff": -1.0}, {"sum": 6.0, "diff": 4.0}]})
    assert headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_rest_classify_regress(server):
    assert rest(server, "/v1/models/default:classify",
                {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})[:2] == (
        200, {"results": [[["", 3.0]]]})
    assert rest(server, "/v1/models/default:regress",
                {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]})[:2] == (
        200, {"results": [3.0, 4.0]})
    assert rest(server, "/v1/models/default:regress", {"signature_name": "regress_x_to_y"})[:2] == (
        400, {"error": 'JSON Value: {\n    "signature_name": "regress_x_to_y"\n} When method is regress, '
                       "key 'examples' is expected and was not found"})


def test_rest_status_and_metadata(server):
    assert rest(server, "/v1/models/default")[:2] == (200, {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    assert rest(server, "/v1/models/two/versions/123")[1]["model_version_status"][0]["version"] == "123"
    assert len(rest(server, "/v1/models/two/labels/whatever")[1]["model_version_status"]) == 2  # label ignored
    status, metadata, _ = rest(server, "/v1/models/default/metadata")
    assert status == 200
    assert metadata["model_spec"] == {"name": "default", "signature_name": "", "version": "123"}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict" and signature["defaults"] == {}
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert signature["inputs"]["x"]["tensor_shape"] == {"dim": [], "unknown_rank": True}
    classify = metadata["metadata"]["signature_def"]["signature_def"]["classify_x_to_y"]
    assert classify["inputs"]["inputs"]["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}],
                                                            "unknown_rank": False}
    assert rest(server, "/v1/models/two/labels/stable/metadata")[1]["model_spec"]["version"] == "123"


@pytest.mark.parametrize("method,path,body,status,message", [
    ("POST", "/v1/models/nope:predict", {"instances": [1.0]}, 404, "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/two/versions/9:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Specific(two, 9)"),
    ("POST", "/v1/models/two/labels/beta:predict", {"instances": [1.0]}, 400,
     "Unrecognized servable version label: beta"),
    ("POST", "/v1/models/default:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("POST", "/v1/models/default:classify", {"signature_name": "nope", "examples": [{"x": 1.0}]}, 400,
     "No signature was found with the name: nope"),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/default/versions/5", None, 404, "Could not find version 5 of model default"),
    ("GET", "/v1/models/nope/metadata", None, 404, "Servable not found for request: Latest(nope)"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("GET", "/v1/foo", None, 400, "Malformed request: GET /v1/foo"),
    ("POST", "/v1/models/default/version/50:predict", {}, 400,
     "Malformed request: POST /v1/models/default/version/50:predict"),
    ("DELETE", "/v1/models/default", None, 400, "Malformed request: DELETE /v1/models/default"),
    ("POST", "/v1/models/default:predict", {"instances": ["a"]}, 400,
     'JSON Value: "a" Type: String is not of expected type: float'),
    ("POST", "/v1/models/default:predict", {"signature_name": 5, "instances": [1.0]}, 400,
     "JSON Value: 5 not formatted correctly. 'signature_name' key must be a string value."),
])
def test_rest_errors(server, method, path, body, status, message):
    assert rest(server, path, body, method=method)[:2] == (status, {"error": message})


def test_rest_malformed_json_bad_b64_and_body_limit(server):
    assert rest(server, "/v1/models/default:predict", raw=b"")[:2] == (
        400, {"error": "JSON Parse error: The document is empty"})
    assert rest(server, "/v1/models/default:predict", raw=b"{\"instances\": [1.0,")[:2] == (
        400, {"error": "JSON Parse error: Invalid value. at offset: 19"})
    assert rest(server, "/v1/models/nope:predict", raw=b"not json")[0] == 400  # parsed before the model lookup
    status, body, _ = rest(server, "/v1/models/default:classify",
                           {"signature_name": "classify_x_to_y", "examples": [{"x": {"b64": "@@@"}}]})
    assert (status, body) == (400, {"error": "Unable to base64 decode"})
    status, body, _ = rest(server, "/v1/models/default:predict", raw=b" " * ((1 << 20) + 1))
    assert status == 413 and "exceeds the limit" in body["error"]


def test_rest_cors_preflight_404_and_prometheus(server, stubs):
    # One request per front end first: both run through the same InferenceService, which labels the latency with
    # the gRPC method name or the REST verb, as TF Serving does.
    assert rest(server, "/v1/models/default:predict", {"instances": [1.0]})[0] == 200
    assert rest(server, "/v1/models/default:classify",
                {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})[0] == 200
    stubs[0].Predict(x_request(), timeout=30)
    status, _, headers = rest(server, "/v1/models/default:predict", method="OPTIONS",
                              headers={"Origin": "http://example.org"})
    assert status == 200 and headers["Access-Control-Allow-Methods"] == "POST, GET"
    assert rest(server, "/v1/models/default:predict", method="OPTIONS")[0] == 400
    assert rest(server, "/nothing/here")[0] == 404
    status, text, headers = rest(server, "/monitoring/prometheus/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="default",status="OK",version="123"}' in text
    for api, entrypoint in (("predict", "REST"), ("classify", "REST"), ("Predict", "GRPC")):
        assert (f':tensorflow:serving:request_latency_count{{model_name="default",API="{api}",'
                f'entrypoint="{entrypoint}",version="123"}}') in text


def test_prometheus_counts_requests_under_the_version_that_answered(server, stubs):
    before = prometheus_samples(server.rest_port)
    predict = stubs[0].Predict
    predict(x_request("two", label="canary"), timeout=30)
    predict(x_request("two", label="stable"), timeout=30)
    assert rest(server, "/v1/models/two/labels/canary:predict", {"instances": [2.0]})[0] == 200
    for label in ("canary", "stable"):  # resolved, then refused: counted under the version
        assert grpc_error(predict, x_request("two", label=label, output_filter=("z",)))[0] == \
            grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_error(predict, x_request("two", label="beta"))[0] == grpc.StatusCode.INVALID_ARGUMENT  # no version
    after = prometheus_samples(server.rest_port)

    def added(name, **labels):
        key = (f":tensorflow:serving:{name}", frozenset(labels.items()))
        return after.get(key, 0) - before.get(key, 0)

    assert [added("request_count", model_name="two", status=status, version=version)
            for status, version in (("OK", "124"), ("OK", "123"), ("INVALID_ARGUMENT", "124"),
                                    ("INVALID_ARGUMENT", "123"), ("INVALID_ARGUMENT", ""))] == [2, 1, 1, 1, 1]
    assert [added("request_latency_count", model_name="two", API=api, entrypoint=entrypoint, version=version)
            for api, entrypoint, version in (("Predict", "GRPC", "124"), ("predict", "REST", "124"),
                                             ("Predict", "GRPC", "123"))] == [1, 1, 1]  # successes only
