"""Decompression bombs and cost bombs against a server process, with a memory ceiling read from /proc/<pid>/status.

Each hostile request is under 1 MB; the server's peak RSS during it (VmHWM, reset before each request through
/proc/<pid>/clear_refs) may rise by at most 256 MB over its resident size before, and the server keeps answering valid
requests correctly. Without the caps these requests cost 1.6 to 7.6 GB.
"""
from __future__ import annotations

import base64
import json
import os
import struct
import sys
import urllib.error
import urllib.request

import grpc
import pytest
from conftest import peak_rise_bytes, write
from model_fixtures import solid_image_bytes
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.process import model_server

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from image_fixtures import jpeg_header_bomb, png_bomb  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CEILING_BYTES = 256 * 1024 * 1024
RED = (230, 20, 20)


def gif_hiding_a_huge_frame(side: int = 20000) -> bytes:
    """A 10x10 logical screen whose one frame claims side x side: giflib would slurp side^2 bytes for it."""
    header = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, side, side, 0) + b"\x02\x02\x4c\x01\x00"
    return header + frame + b"\x3b"


@pytest.fixture(scope="module")
def server_process(models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("bombs")
    config = write(root / "models.config", "model_config_list {\n" + "\n".join(
        f'config {{ name: "{name}" base_path: "{models_dir / name}" model_platform: "tensorflow" }}'
        for name in ("classifier", "half")) + "\n}\n")
    with model_server(f"--model_config_file={config}", cwd=REPO) as server:
        yield server.pid, server.grpc_port, server.rest_port


def _images(*blobs) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "classifier"
    proto = request.inputs["image_bytes"]
    proto.dtype = types_pb2.DT_STRING
    proto.tensor_shape.dim.add(size=len(blobs))
    proto.string_val.extend(blobs)
    return request


def _declared_float(shape, values=()) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=list(values)))
    for size in shape:
        request.inputs["x"].tensor_shape.dim.add(size=size)
    return request


def _rest_b64(rest_port: int, blob: bytes):
    body = json.dumps({"instances": [{"b64": base64.b64encode(blob).decode()}]}).encode()
    request = urllib.request.Request(f"http://localhost:{rest_port}/v1/models/classifier:predict", data=body)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_hostile_requests_cost_bounded_memory_and_the_server_keeps_answering(server_process):
    pid, grpc_port, rest_port = server_process
    channel = grpc.insecure_channel(f"localhost:{grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def valid():
        response = stub.Predict(_images(solid_image_bytes(RED)), timeout=60)
        return [v.decode() for v in response.outputs["label"].string_val]

    assert valid() == ["red"]  # warm: first-call allocations are not counted against the bombs
    many_images = _images(*[solid_image_bytes(RED)] * 1000)
    filled, unfilled = _declared_float([12000, 12000], [1.0]), _declared_float([100_000, 100_000])
    # name -> (bytes sent, request)
    hostile = {
        "PNG 23000x23000 (gRPC)": (len(png_bomb()), lambda: stub.Predict(_images(png_bomb()), timeout=120)),
        "JPEG header claiming 13000x13000 (REST)": (len(jpeg_header_bomb()),
                                                    lambda: _rest_b64(rest_port, jpeg_header_bomb())),
        "GIF frame 20000x20000 behind a 10x10 screen (REST)": (len(gif_hiding_a_huge_frame()), lambda: _rest_b64(
            rest_port, gif_hiding_a_huge_frame())),
        "1000 images in one request (gRPC)": (many_images.ByteSize(), lambda: stub.Predict(many_images, timeout=120)),
        "float [12000, 12000] with one value (gRPC)": (filled.ByteSize(), lambda: stub.Predict(filled, timeout=120)),
        "float [100000, 100000] without data (gRPC)": (unfilled.ByteSize(),
                                                       lambda: stub.Predict(unfilled, timeout=120)),
    }
    try:
        for name, (size, send) in hostile.items():
            assert size < 1024 * 1024
            rise, outcome = peak_rise_bytes(pid, send)
            print(f"{name}: {size} B sent, peak RSS +{rise / 2**20:.1f} MiB -> "
                  f"{outcome.code().name if isinstance(outcome, grpc.RpcError) else outcome}")
            if isinstance(outcome, grpc.RpcError):
                assert outcome.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, outcome.details())
            else:
                # The memory budget refuses them from their headers (serving/request_costs.py), before the model's
                # own pixel check would.
                assert outcome[0] == 400 and ("memory than its budget" in outcome[1]["error"] or "Pillow's "
                                              "decompression-bomb bound" in outcome[1]["error"]), (name, outcome)
            assert rise < CEILING_BYTES, f"{name}: peak RSS rose by {rise / 2**20:.0f} MiB"
            assert valid() == ["red"]
    finally:
        channel.close()
