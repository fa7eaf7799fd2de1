"""serving/request_costs.py's estimates against what the server's code really allocates (tracemalloc), for the JSON
shapes that cost the most per byte: every estimate must be at least the measured peak, so the budget is charged
before the allocation and never short of it. (Server processes and /proc: test_memory_budget.py.)"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from model_fixtures import solid_image_bytes
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import json_tensor, request_costs, tensors

ITEMS = 50_000
BODIES = {  # name -> (body, the signature's input dtype)
    "{} instances": (b'{"instances": [' + b",".join([b"{}"] * ITEMS) + b"]}", types_pb2.DT_FLOAT),
    "[] instances": (b'{"instances": [' + b",".join([b"[]"] * ITEMS) + b"]}", types_pb2.DT_FLOAT),
    "[[[1]]] instances": (b'{"instances": [' + b",".join([b"[[[1]]]"] * ITEMS) + b"]}", types_pb2.DT_FLOAT),
    "floats": (b'{"instances": [' + b",".join([b"1.5"] * ITEMS) + b"]}", types_pb2.DT_FLOAT),
    "ints": (b'{"instances": [' + b",".join([b"1"] * ITEMS) + b"]}", types_pb2.DT_INT64),
    "empty strings": (b'{"instances": [' + b",".join([b'""'] * ITEMS) + b"]}", types_pb2.DT_STRING),
    "b64 objects": (b'{"instances": [' + b",".join([b'{"b64": ""}'] * ITEMS) + b"]}", types_pb2.DT_STRING),
    "named inputs": (b'{"instances": [' + b",".join([b'{"x":1}'] * ITEMS) + b"]}", types_pb2.DT_FLOAT),
    "4-byte UTF-8": (b'{"instances": ["' + "\U0001F600".encode() * ITEMS + b'"]}', types_pb2.DT_STRING),
}


def _peak(work) -> int:
    tracemalloc.start()
    try:
        work()
    except Exception:  # noqa: BLE001 - the shape's own error comes after the allocations measured
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("name", BODIES)
def test_the_json_estimate_bounds_parsing_and_decoding(name):
    body, dtype = BODIES[name]
    peak = _peak(lambda: json_tensor.predict_inputs_from_json(json_tensor.parse_json(body), {"x": dtype}))
    estimate = request_costs.json_body(body)
    print(f"{name}: {len(body)} B, measured {peak / len(body):.1f} B per byte, estimated {estimate / len(body):.1f}")
    assert peak <= estimate


def test_a_one_value_string_tensor_costs_its_declared_shape():
    """TF fills a string tensor's missing values with its last one: [1, 900000] with one 1 KiB value is 900000 KiB
    for TensorFlow, though the request carries 1 KiB."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"x" * 1024])
    proto.tensor_shape.dim.add(size=1)
    proto.tensor_shape.dim.add(size=900000)
    assert request_costs.tensor_proto(proto, [1, 900000]) >= 900000 * 1024
    for values, size in (([b"ab", b"cd"], 2), ([b"x" * 100] * 10000, 10000), ([b"y" * 50], 20000)):
        carried = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=values)
        carried.tensor_shape.dim.add(size=size)
        peak = _peak(lambda: tensors.to_numpy(carried, 1 << 20))  # noqa: B023
        assert peak <= request_costs.tensor_proto(carried, [size]), (len(values), size)


def test_numeric_tensors_cost_their_elements():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    proto.tensor_shape.dim.add(size=1000)
    peak = _peak(lambda: tensors.to_numpy(proto, 1 << 20))
    assert 4000 <= peak <= request_costs.tensor_proto(proto, [1000])


def test_images_cost_the_pixels_their_headers_claim():
    images = [solid_image_bytes((1, 2, 3), fmt, size=100) for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP")]
    assert request_costs.decoded_images(images + [b"not an image"], max_images=64) == (
        5 * 100 * 100 * request_costs.DECODED_BYTES_PER_PIXEL)
    with pytest.raises(Exception, match="carries 65 encoded images, more than the limit of 64"):
        request_costs.decoded_images(images * 13, max_images=64)


def test_the_response_estimate_bounds_the_writers():
    outputs = {"scores": np.random.rand(2000, 10).astype(np.float32), "label": np.array([b"red"] * 2000, object)}
    grpc_peak = _peak(lambda: [tensors.to_proto(array) for array in outputs.values()])
    rest_peak = _peak(lambda: json_tensor.predict_response_json(outputs, row_format=True))
    assert grpc_peak <= request_costs.outputs(outputs, as_json=False)
    assert rest_peak <= request_costs.outputs(outputs, as_json=True)
