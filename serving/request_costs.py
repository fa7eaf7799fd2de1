"""What a request will make the server allocate, in bytes, from sizes known before the allocation: tensor shapes x
dtype sizes, string lengths (a one-value string tensor broadcast to its shape included), a classify request's
context copied into every example, the pixels its images' headers claim, its JSON body's structure, and its outputs
before the response is written. serving/memory_budget.py charges these.

Each factor is an upper bound of what was measured on this server's code paths (tracemalloc and VmHWM, CPython 3.11,
TensorFlow 2.21, numbers beside each), so the estimate may exceed the real cost, never fall short of it by much.
"""
from __future__ import annotations

import numpy as np
from tensorflow.core.framework import types_pb2

from serving.errors import invalid
from serving.image_headers import BOMB_PIXELS, claimed_pixels, looks_like_an_image
from serving.tensors import NUMPY_BY_DTYPE

# A received gRPC message lives twice while it is parsed: grpc's buffer and the parsed message.
RECEIVED_MESSAGE_COPIES = 2
# An input tensor's values are held up to three times: the decoded array, the batcher's merged batch and the tensor
# TensorFlow is fed (strings are copied into TF's own string type).
INPUT_COPIES = 3
# One string element beyond its bytes: numpy's object slot (8), a Python bytes header (33), TF's tstring (24).
STRING_ELEMENT_BYTES = 72
# A decoded tensor's own objects whatever its size: the array, its shape, the lists on the way (measured 1.8 KB).
TENSOR_BYTES = 4096
# A decoded image: RGB uint8 plus its float32 conversion, both held at full size by the exported classifier's
# decode_rgb + to_model_input (measured 15.6 bytes per pixel on 6000x6000 PNG and JPEG).
DECODED_BYTES_PER_PIXEL = 16
# Parsing a JSON body into Python objects, then arrays or tf.Examples (measured per 200k-item body: `{}` instances
# 75 B per item, `[]` 96, `[[[1]]]` 376, tf.Examples `{}` 184 and `{"a":1}` 304, floats 44, `{"b64": ""}` 209;
# non-ASCII text 5 B per body byte): each body byte, each container opened, each value separated.
JSON_BYTES_PER_BODY_BYTE = 6
JSON_BYTES_PER_CONTAINER = 200
JSON_BYTES_PER_VALUE = 64
# Writing a response: gRPC's typed *_val fields go through a Python list (measured 40-48 B per element); REST's JSON
# writer holds the list, each element's text and the joined document (measured 30-142 B per element).
GRPC_RESPONSE_BYTES_PER_ELEMENT = 48
REST_RESPONSE_BYTES_PER_ELEMENT = 160
# Copies of an output string's bytes: gRPC's list and proto; REST's escaped or base64 text, the document, its bytes.
GRPC_RESPONSE_STRING_COPIES, REST_RESPONSE_STRING_COPIES = 2, 4


def json_body(body: bytes) -> int:
    """Parsing `body` into the arrays or tf.Examples of a request (separators and brackets inside strings count
    too: an overestimate, never an under-)."""
    containers = body.count(b"{") + body.count(b"[")
    values = body.count(b",") + body.count(b":")
    return (JSON_BYTES_PER_BODY_BYTE * len(body) + JSON_BYTES_PER_CONTAINER * containers
            + JSON_BYTES_PER_VALUE * values)


def _elements(shape) -> int:
    elements = 1
    for size in shape:
        elements *= size
    return elements


def tensor_proto(proto, shape: list[int]) -> int:
    """A TensorProto of `shape` decoded and fed to the model. A string tensor carrying fewer values than its shape
    holds is filled with its last value, so every implied element costs that value's bytes again."""
    elements = _elements(shape)
    if proto.dtype == types_pb2.DT_STRING:
        values = proto.string_val
        carried = sum(map(len, values))
        implied = max(0, elements - len(values)) * (len(values[-1]) if len(values) else 0)
        return TENSOR_BYTES + INPUT_COPIES * (carried + implied + STRING_ELEMENT_BYTES * max(elements, len(values)))
    numpy_type = NUMPY_BY_DTYPE.get(proto.dtype)
    itemsize = np.dtype(numpy_type).itemsize if numpy_type is not None else 16  # complex128, the widest other
    return TENSOR_BYTES + INPUT_COPIES * elements * itemsize


def serialized_examples(context_bytes: int, example_bytes: list[int]) -> int:
    """The string tensor of `context + example` per example (a proto merge by concatenation), held in Python and in
    TensorFlow."""
    return 2 * (context_bytes * len(example_bytes) + sum(example_bytes) + STRING_ELEMENT_BYTES * len(example_bytes))


def decoded_images(values, max_images: int) -> int:
    """The pixels the encoded images among `values` decode to, as their headers claim. More than `max_images` images
    (0: no limit) is refused before any header is read: each read is ~30-140 us of CPU."""
    images = [value for value in values if isinstance(value, bytes) and looks_like_an_image(value)]
    if max_images and len(images) > max_images:
        raise invalid(f"Request carries {len(images)} encoded images, more than the limit of {max_images} "
                      "(--max_request_batch_size)")
    total = 0
    for value in images:
        pixels = claimed_pixels(value)
        if pixels is None:
            raise invalid(f"Image header claims more than {BOMB_PIXELS} pixels (Pillow's decompression-bomb bound): "
                          "too large to decode")
        total += pixels
    return DECODED_BYTES_PER_PIXEL * total


def outputs(arrays: dict[str, np.ndarray], as_json: bool) -> int:
    """The response written from `arrays` (the model's outputs) by the REST front end (`as_json`) or gRPC's."""
    per_element, string_copies = ((REST_RESPONSE_BYTES_PER_ELEMENT, REST_RESPONSE_STRING_COPIES) if as_json else
                                  (GRPC_RESPONSE_BYTES_PER_ELEMENT, GRPC_RESPONSE_STRING_COPIES))
    total = 0
    for array in arrays.values():
        total += per_element * array.size
        if array.dtype == np.object_:
            total += string_copies * sum(len(v) for v in array.reshape(-1) if isinstance(v, (bytes, str)))
    return total
