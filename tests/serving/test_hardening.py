"""Hostile and broken requests over real gRPC stubs and HTTP, deadlines, TF Serving's output checks, `*_REF` outputs,
and the flags this server refuses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import model_fixtures
import pytest
import tensorflow as tf
from conftest import free_port, write
from model_fixtures import solid_image_bytes
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from image_fixtures import png_bomb  # noqa: E402

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
RED = (230, 20, 20)


@pytest.fixture(scope="module")
def hostile_models(models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_models")
    model_fixtures.write_ref_output_model(str(root / "ref" / "1"))
    model_fixtures.write_bad_outputs_model(str(root / "bad" / "1"))
    model_fixtures.write_slow_model(str(root / "slow" / "1"))
    lines = [f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}' for name, path in (
        ("half", models_dir / "half"), ("classifier", models_dir / "classifier"), ("ref", root / "ref"),
        ("bad", root / "bad"), ("slow", root / "slow"))]
    return write(root / "models.config", "model_config_list {\n" + "\n".join(lines) + "\n}\n")


@pytest.fixture(scope="module")
def server(hostile_models):
    from serving.server import ModelServer, ServerOptions

    server = ModelServer(ServerOptions(port=free_port(), rest_api_port=free_port(), model_config_file=hostile_models,
                                       rest_api_timeout_in_ms=1000))
    server.start()
    yield server
    server.stop(grace_seconds=2)


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"localhost:{server.grpc_port}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def predict_request(model="half", signature="", **inputs) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for alias, proto in inputs.items():
        request.inputs[alias].CopyFrom(proto)
    return request


def declared(dtype, shape, **values) -> tensor_pb2.TensorProto:
    """A TensorProto with exactly the given dtype, shape and payload (no validation on the client side)."""
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def images(*blobs) -> tensor_pb2.TensorProto:
    return declared(types_pb2.DT_STRING, [len(blobs)], string_val=list(blobs))


def examples(request, count: int, signature: str, model: str):
    request.model_spec.name, request.model_spec.signature_name = model, signature
    for _ in range(count):
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    return request


def classify(model, signature, count=1):
    return examples(classification_pb2.ClassificationRequest(), count, signature, model)


def regress(model, signature, count=1):
    return examples(regression_pb2.RegressionRequest(), count, signature, model)


FLOAT_X = declared(types_pb2.DT_FLOAT, [1], float_val=[2.0])

# (id, method, request, expected code, words the message must contain)
MALFORMED = [
    ("no_model_spec", "Predict", predict_pb2.PredictRequest(), INVALID, "Missing ModelSpec"),
    ("unknown_model", "Predict", predict_request("nope", x=FLOAT_X), NOT_FOUND, "Servable not found"),
    ("unknown_signature", "Predict", predict_request("half", "nope", x=FLOAT_X), grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
    ("shape_1e5_squared_without_data", "Predict", predict_request(x=declared(types_pb2.DT_FLOAT, [100_000, 100_000])),
     INVALID, "declares 10000000000 elements but the request carries 0 values"),
    ("shape_12000_squared_one_value", "Predict",
     predict_request(x=declared(types_pb2.DT_FLOAT, [12000, 12000], float_val=[1.0])), INVALID,
     "at most 1048576 elements may be filled in"),
    ("negative_dimension", "Predict", predict_request(x=declared(types_pb2.DT_FLOAT, [-5], float_val=[1.0])), INVALID,
     "negative dimension"),
    ("string_for_float", "Predict", predict_request(x=declared(types_pb2.DT_STRING, [1], string_val=[b"2"])), INVALID,
     "Expects arg[0] to be float but string is provided"),
    ("int_for_float", "Predict", predict_request(x=declared(types_pb2.DT_INT32, [1], int_val=[2])), INVALID,
     "Expects arg[0] to be float but int32 is provided"),
    ("resource_dtype", "Predict", predict_request(x=declared(types_pb2.DT_RESOURCE, [1])), INVALID,
     "unsupported dtype DT_RESOURCE"),
    ("ref_dtype_in_request", "Predict", predict_request(x=declared(types_pb2.DT_FLOAT_REF, [1], float_val=[1.0])),
     INVALID, "unsupported dtype DT_FLOAT_REF"),
    ("tensor_content_too_short", "Predict",
     predict_request(x=declared(types_pb2.DT_FLOAT, [3], tensor_content=b"\0" * 8)), INVALID, "Invalid TensorProto"),
    ("extra_input", "Predict", predict_request(x=FLOAT_X, z=FLOAT_X), INVALID, "input size does not match signature"),
    ("wrong_alias", "Predict", predict_request(z=FLOAT_X), INVALID, "input tensor alias not found in signature: z"),
    ("string_shape_1e9_one_value", "Predict",
     predict_request("classifier", image_bytes=declared(types_pb2.DT_STRING, [10**9], string_val=[b"x"])), INVALID,
     "declares 1000000000 elements"),
    ("batch_of_1000_images", "Predict", predict_request("classifier", image_bytes=images(
        *[solid_image_bytes(RED)] * 1000)), INVALID,
     "Request batch size 1000 is larger than the limit of 64 (--max_request_batch_size)"),
    # Refused by the memory budget from its header, before the model's own pixel check would run.
    ("png_bomb", "Predict", predict_request("classifier", image_bytes=images(png_bomb())), INVALID,
     "decoding the images of input image_bytes needs 8464000000 bytes"),
    ("not_an_image", "Predict", predict_request("classifier", image_bytes=images(b"hello")), INVALID, ""),
    ("classify_empty_input", "Classify", classify("half", "classify_x_to_y", 0), INVALID, "Input is empty."),
    ("classify_1000_examples", "Classify", classify("half", "classify_x_to_y", 1000), INVALID,
     "Request batch size 1000 is larger than the limit of 64"),
    ("classify_integer_classes", "Classify", classify("bad", "int_classes"), INVALID,
     "Expected classes Tensor of DT_STRING. Got: DT_INT64"),
    ("classify_double_scores", "Classify", classify("bad", "double_scores"), INVALID,
     "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"),
    ("classify_rank1_scores", "Classify", classify("bad", "rank1_scores"), INVALID,
     "Expected Tensor shape: [batch_size num_classes] but got [1]"),
    ("regress_integer_output", "Regress", regress("bad", "int_regression"), INVALID,
     "Expected output Tensor of DT_FLOAT.  Got: DT_INT32"),
    ("regress_unknown_signature", "Regress", regress("half", "nope"), INVALID,
     "No signature was found with the name: nope"),
    ("multi_inference_predict_task", "MultiInference", inference_pb2.MultiInferenceRequest(
        tasks=[inference_pb2.InferenceTask(model_spec={"name": "half"}, method_name="tensorflow/serving/predict")]),
     grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name"),
    ("metadata_unknown_field", "GetModelMetadata", get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec={"name": "half"}, metadata_field=["nope"]), INVALID, "Metadata field nope is not supported"),
]


@pytest.mark.parametrize("method,request_proto,code,words", [case[1:] for case in MALFORMED],
                         ids=[case[0] for case in MALFORMED])
def test_malformed_grpc_request_gets_its_status(stub, method, request_proto, code, words):
    with pytest.raises(grpc.RpcError) as error:
        getattr(stub, method)(request_proto, timeout=60)
    assert error.value.code() == code, error.value.details()
    assert words in error.value.details()
    # The server is unharmed: a valid request right after is answered correctly.
    response = stub.Predict(predict_request(x=FLOAT_X), timeout=30)
    assert list(response.outputs["y"].float_val) == [3.0]


def test_well_formed_outputs_pass_the_checks_and_ref_outputs_serialize(server, stub):
    response = stub.Regress(regress("bad", "regression", 2), timeout=30)
    assert [r.value for r in response.result.regressions] == [1.0, 1.0]
    # A TF1 signature output that is a variable (DT_FLOAT_REF) comes back as a plain float tensor.
    response = stub.Predict(predict_request("ref", x=declared(types_pb2.DT_FLOAT, [2], float_val=[1.0, 3.0])),
                            timeout=30)
    assert response.outputs["v"].dtype == types_pb2.DT_FLOAT
    assert tf.make_ndarray(response.outputs["v"]).tolist() == [1.0, 2.0]
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [2.0, 6.0]
    request = urllib.request.Request(f"http://localhost:{server.rest_port}/v1/models/ref:predict",
                                     data=json.dumps({"inputs": {"x": [1.0, 3.0]}}).encode())
    with urllib.request.urlopen(request, timeout=30) as http_response:
        assert json.loads(http_response.read()) == {"outputs": {"v": [1.0, 2.0], "y": [2.0, 6.0]}}


def _spin(n: int):
    return predict_request("slow", n=declared(types_pb2.DT_INT64, [1], int64_val=[n]))


def _cpu_seconds_over(seconds: float) -> float:
    """CPU time this process (the in-process server) uses during the next `seconds`."""
    started = time.process_time()
    time.sleep(seconds)
    return time.process_time() - started


def test_grpc_deadline_bounds_the_model_run(stub):
    assert stub.Predict(_spin(5), timeout=30).outputs["y"].float_val == [5.0]
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as error:
        stub.Predict(_spin(1_000_000), timeout=1.0)  # ~1000 s of matmuls if it ran to the end
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    waited = time.monotonic() - started
    # The run was cancelled at the deadline: the server is idle again at once, not computing for the gone client.
    idle_cpu = _cpu_seconds_over(1.5)
    print(f"deadline answer after {waited:.2f}s, server CPU in the next 1.5 s: {idle_cpu:.3f}s")
    assert idle_cpu < 0.5


def test_rest_timeout_bounds_the_model_run(server):
    request = urllib.request.Request(f"http://localhost:{server.rest_port}/v1/models/slow:predict",
                                     data=json.dumps({"instances": [1_000_000]}).encode())
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=60)
    assert error.value.code == 504  # DEADLINE_EXCEEDED after --rest_api_timeout_in_ms=1000
    assert _cpu_seconds_over(1.5) < 0.5


def test_with_batching_a_request_whose_deadline_passed_is_dropped_before_it_runs(hostile_models, make_server, tmp_path):
    batching = write(tmp_path / "batching.config", "max_batch_size { value: 8 } num_batch_threads { value: 1 }")
    server = make_server(model_config_file=hostile_models, enable_batching=True, batching_parameters_file=batching)
    channel = grpc.insecure_channel(f"localhost:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        busy = threading.Thread(target=stub.Predict, args=(_spin(2500),), kwargs={"timeout": 60})
        busy.start()  # ~2.5 s on the only batch thread
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(_spin(1_000_000), timeout=0.5)  # queued behind it; its deadline passes in the queue
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        busy.join(30)
        # Had the late request run, the batch thread would now spin for ~1000 s.
        assert _cpu_seconds_over(1.5) < 0.5
        assert stub.Predict(_spin(3), timeout=30).outputs["y"].float_val == [3.0]
    finally:
        channel.close()


def test_unimplemented_flags_refuse_to_start():
    import argparse

    from serving.errors import ConfigError
    from serving.main import add_arguments, refuse_unimplemented_flags

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for harmless in ([], ["--enable_profiler=false"], ["--num_load_threads=0"], ["--platform_config_file="]):
        refuse_unimplemented_flags(parser.parse_args(harmless))
    for flags in (["--enable_profiler"], ["--num_load_threads=4"], ["--tensorflow_session_config_file=s.pbtxt"],
                  ["--use_alts_credentials=true"]):
        with pytest.raises(ConfigError, match="not implemented by this server"):
            refuse_unimplemented_flags(parser.parse_args(flags))
    # As a process: a clear message and a non-zero exit, before any model loads.
    result = subprocess.run([sys.executable, "-m", "serving", "--platform_config_file=/etc/platform.config",
                             f"--port={free_port()}", "--model_base_path=/nonexistent"],
                            capture_output=True, text=True, timeout=120, check=False,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert result.returncode == 1
    assert "--platform_config_file=/etc/platform.config: not implemented by this server" in result.stderr


def test_a_server_bug_reaches_grpc_clients_as_internal_without_its_text(models_dir, make_server, tmp_path, caplog):
    """A SavedModel whose signature names a tensor its graph lacks makes the server fail with a KeyError, not a
    ServingError: before issue 25 grpc told the client "Exception calling application: ..." (UNKNOWN) with the
    exception's text; now INTERNAL with a fixed message, the traceback in the server's log only."""
    import shutil

    from tensorflow.core.protobuf import saved_model_pb2

    broken = tmp_path / "broken" / "1"
    shutil.copytree(models_dir / "half" / "123", broken)
    saved_model = saved_model_pb2.SavedModel.FromString((broken / "saved_model.pb").read_bytes())
    saved_model.meta_graphs[0].signature_def["serving_default"].outputs["y"].name = "no_such_tensor:0"
    (broken / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    config = write(tmp_path / "models.config", "model_config_list { " + " ".join(
        f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}'
        for name, path in (("broken", broken.parent), ("half", models_dir / "half"))) + " }")
    server = make_server(model_config_file=config)
    with grpc.insecure_channel(f"localhost:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with caplog.at_level("ERROR", logger="serving.grpc_service"), pytest.raises(grpc.RpcError) as error:
            stub.Predict(predict_request("broken", x=FLOAT_X), timeout=30)  # a deadline: TF_SessionRun's path
        assert (error.value.code(), error.value.details()) == (grpc.StatusCode.INTERNAL,
                                                               "Internal error while handling the request")
        assert "no_such_tensor" in caplog.text and "Traceback" in caplog.text
        assert list(stub.Predict(predict_request(x=FLOAT_X), timeout=30).outputs["y"].float_val) == [3.0]
