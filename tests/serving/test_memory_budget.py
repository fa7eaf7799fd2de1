"""The request memory budget (serving/memory_budget.py) against `python -m serving` processes, peak memory read from
/proc/<pid>/status (VmHWM reset before each request).

Each hostile request of issue 25 is refused before it allocates: its peak RSS rise stays within its budget (64 MiB +
128 x the bytes it sent, and under 256 MB for the ones under 1 MB) where before it cost 0.7 to 1.8 GB, it gets a 4xx
or INVALID_ARGUMENT / RESOURCE_EXHAUSTED in TF Serving's error shape naming the limit, and the server answers a valid
request correctly right after. A second server with a small total budget shows the 429 of a budget taken by requests
in flight, and the gRPC concurrency and size limits.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import model_fixtures
import pytest
from conftest import peak_rise_bytes, write
from model_fixtures import solid_image_bytes
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.memory_budget import REQUEST_MEMORY_FLOOR_BYTES
from serving.process import model_server

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from image_fixtures import png_bomb  # noqa: E402

MIB = 1 << 20
FACTOR = 128  # --request_memory_factor's default
RED = (230, 20, 20)


def budget_of(sent: int) -> int:
    return REQUEST_MEMORY_FLOOR_BYTES + FACTOR * sent


@pytest.fixture(scope="module")
def models_config(models_dir, tmp_path_factory):
    """classifier, half and a model whose run takes as many milliseconds as it is asked (`slow`)."""
    root = tmp_path_factory.mktemp("budget")
    model_fixtures.write_slow_model(str(root / "slow" / "1"))
    paths = {"classifier": models_dir / "classifier", "half": models_dir / "half", "slow": root / "slow"}
    return write(root / "models.config", "model_config_list {\n" + "\n".join(
        f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}'
        for name, path in paths.items()) + "\n}\n")


@pytest.fixture(scope="module")
def server(models_config):
    with model_server(f"--model_config_file={models_config}") as process:
        yield process


def post(server, path: str, body: bytes, headers=None) -> tuple[int, dict]:
    request = urllib.request.Request(f"{server.rest_url}{path}", data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        assert error.headers["Content-Type"] == "application/json"
        return error.code, json.loads(error.read())


def predict(stub, request):
    try:
        stub.Predict(request, timeout=120)
        return "OK", ""
    except grpc.RpcError as error:
        return error.code().name, error.details()


def string_tensor(shape, values) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "classifier"
    proto = request.inputs["image_bytes"]
    proto.dtype = types_pb2.DT_STRING
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    proto.string_val.extend(values)
    return request


def float_content(floats: int) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add(size=floats)
    request.inputs["x"].tensor_content = b"\0" * (4 * floats)
    return request


def classify_body(context_bytes: int, examples: int) -> bytes:
    return json.dumps({"signature_name": "classify_x_to_y", "context": {"blob": "c" * context_bytes},
                       "examples": [{"x": 2.0}] * examples}).encode()


def assert_valid(server, stub) -> None:
    assert post(server, "/v1/models/half:predict", b'{"instances": [2.0]}') == (200, {"predictions": [3.0]})
    response = stub.Predict(string_tensor([1], [solid_image_bytes(RED)]), timeout=60)
    assert [v.decode() for v in response.outputs["label"].string_val] == ["red"]


def test_hostile_requests_stay_within_their_budget_and_the_server_keeps_answering(server):
    channel = grpc.insecure_channel(server.grpc_address, options=[("grpc.max_send_message_length", -1)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    assert_valid(server, stub)  # warm: first-call allocations are not counted against the requests
    png = png_bomb(9999, 9999)
    png_body = json.dumps({"instances": [{"b64": base64.b64encode(png).decode()}]}).encode()
    objects_body = b'{"instances": [' + b",".join([b"{}"] * ((64 * MIB - 64) // 3)) + b"]}"
    broadcast, big = string_tensor([1, 900000], [b"x" * 1024]), float_content(150 * MIB // 4)
    # name -> (bytes sent, send, expected status, words of the error)
    cases = {
        "item 1: :classify with a 1 MiB context x 1000 examples (REST)": (
            len(classify_body(MIB, 1000)), lambda: post(server, "/v1/models/half:classify", classify_body(MIB, 1000)),
            400, "Request batch size 1000 is larger than the limit of 64"),
        "item 2: string [1, 900000] carrying one 1 KiB value (gRPC)": (
            broadcast.ByteSize(), lambda: predict(stub, broadcast), "INVALID_ARGUMENT",
            "decoding input image_bytes of shape [1, 900000]"),
        "item 4: a 150 MiB message (gRPC)": (
            big.ByteSize(), lambda: predict(stub, big), "RESOURCE_EXHAUSTED", "larger than max"),
        "item 4: 64 MiB body of {} instances (REST)": (
            len(objects_body), lambda: post(server, "/v1/models/half:predict", objects_body), 400,
            f"parsing the {len(objects_body)}-byte JSON body"),
        "item 4: a 12 KB 1-bit PNG of 9999x9999 (REST)": (
            len(png_body), lambda: post(server, "/v1/models/classifier:predict", png_body), 400,
            "decoding the images of input image_bytes needs 1599680016 bytes"),
    }
    try:
        for name, (sent, send, status, words) in cases.items():
            rise, outcome = peak_rise_bytes(server.pid, send)
            code, body = outcome
            error = body["error"] if isinstance(body, dict) else body
            print(f"{name}: {sent} B sent, peak RSS +{rise / MIB:.1f} MiB -> {code} {error[:90]}")
            assert code == status and words in error, (name, code, error)
            assert rise < budget_of(sent), name
            assert sent > MIB or rise < 256 * MIB, name
            assert_valid(server, stub)
    finally:
        channel.close()


def test_a_request_within_its_budget_is_answered(server):
    """The budget scales with the request: 60 examples under a 1 MiB context (120 MB of serialized examples from a
    1 MB body) are within 64 MiB + 128 x 1 MB and answered, their peak within that budget."""
    body = classify_body(MIB, 60)
    rise, (status, answer) = peak_rise_bytes(server.pid, lambda: post(server, "/v1/models/half:classify", body))
    print(f"60 examples x 1 MiB context: {len(body)} B sent, peak RSS +{rise / MIB:.1f} MiB -> {status}")
    assert (status, answer) == (200, {"results": [[["", 3.0]]] * 60})
    assert rise < budget_of(len(body))


# -------------------------------------------------------------------------------------------- the total budget
@pytest.fixture(scope="module")
def small_server(models_config):
    """150 MiB for all requests in flight, 100 MiB per request, two gRPC calls at once."""
    with model_server(f"--model_config_file={models_config}", f"--max_total_request_memory_bytes={150 * MIB}",
                      f"--max_request_memory_bytes={100 * MIB}", "--grpc_max_concurrent_rpcs=2",
                      "--rest_api_timeout_in_ms=20000") as process:
        yield process


def spaced_body(size: int) -> bytes:
    """A valid predict body of about `size` bytes: 6 bytes to parse per byte sent."""
    return b'{"instances": [2.0' + b" " * size + b"]}"


def test_a_budget_taken_by_requests_in_flight_is_a_429_and_frees_when_they_end(small_server):
    """Two uploads holding 120 MiB of the 150 MiB total: a request that fits its own budget (10 MiB, 70 MiB to hold
    with its parsing) is refused for now (429 / RESOURCE_EXHAUSTED, "retry later") on both front ends; once the
    uploads are gone it is answered."""
    holding = b'{"instances": [' + b" " * (60 * MIB)
    head = b"POST /v1/models/half:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % (
        len(holding) + 100)
    uploads = [socket.create_connection(("127.0.0.1", small_server.rest_port)) for _ in range(2)]
    try:
        for upload in uploads:
            upload.sendall(head + holding)  # and stalls: 100 bytes short
        time.sleep(1.0)  # the server has read (and charged) them
        status, body = post(small_server, "/v1/models/half:predict", spaced_body(10 * MIB))
        assert status == 429 and "--max_total_request_memory_bytes" in body["error"] and "retry later" in \
            body["error"], body
        with grpc.insecure_channel(small_server.grpc_address) as channel:
            code, details = predict(prediction_service_pb2_grpc.PredictionServiceStub(channel),
                                    float_content(4 * MIB))
        assert code == "RESOURCE_EXHAUSTED" and "--max_total_request_memory_bytes" in details, details
    finally:
        for upload in uploads:
            upload.close()
    deadline = time.monotonic() + 10
    while (answer := post(small_server, "/v1/models/half:predict", spaced_body(10 * MIB)))[0] == 429 \
            and time.monotonic() < deadline:
        time.sleep(0.2)  # until the server has noticed the closed uploads
    assert answer == (200, {"predictions": [3.0]})


def test_one_request_over_its_own_budget_is_a_400_naming_the_limit(small_server):
    status, body = post(small_server, "/v1/models/half:predict", spaced_body(20 * MIB))  # 140 MiB with parsing
    assert status == 400 and f"--max_request_memory_bytes={100 * MIB}" in body["error"], body
    # 60 examples, each merged with a 1 MiB context: 120 MiB of serialized examples.
    status, body = post(small_server, "/v1/models/half:classify", classify_body(MIB, 60))
    assert status == 400 and "60 serialized tf.Examples with a context of" in body["error"], body


def test_grpc_calls_beyond_the_concurrency_limit_are_refused(small_server):
    slow = predict_pb2.PredictRequest()
    slow.model_spec.name = "slow"
    slow.inputs["n"].dtype = types_pb2.DT_INT64
    slow.inputs["n"].tensor_shape.dim.add(size=1)
    slow.inputs["n"].int64_val.append(1500)  # ~1.5 s of matmuls
    with grpc.insecure_channel(small_server.grpc_address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        outcomes = []
        threads = [threading.Thread(target=lambda: outcomes.append(predict(stub, slow))) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    codes = sorted(code for code, _ in outcomes)
    assert codes.count("OK") >= 2 and "RESOURCE_EXHAUSTED" in codes, outcomes
    assert all("Concurrent RPC limit exceeded" in details for code, details in outcomes if code != "OK"), outcomes
