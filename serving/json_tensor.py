"""TF Serving's REST JSON <-> tensors (util/json_tensor.cc): request parsing, row/columnar formats, number writing.

Messages match TF Serving's text where clients or tests look at them.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import re

import grpc
import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import input_pb2

from serving.errors import ServingError, invalid
from serving.tensors import NUMPY_BY_DTYPE, dtype_name

INT64_MIN, UINT64_MAX = -2**63, 2**64 - 1
# numpy's limit on dimensions (TensorFlow's is 254): a deeper nested list cannot become an array here.
MAX_TENSOR_RANK = 64
# A \uXXXX escape of a UTF-16 surrogate; only a high one followed by an escaped low one is a character.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _rapidjson_int(text: str):
    """rapidjson keeps an integer literal that fits int64 or uint64, makes a larger one a double, and refuses one past
    the double range (plain int() would take any size up to 4300 digits, then raise a ValueError)."""
    if len(text) < 19:
        return int(text)
    if len(text) <= 310:
        value = int(text)
        if INT64_MIN <= value <= UINT64_MAX:
            return value
        try:
            return float(value)
        except OverflowError:
            pass
    raise invalid("JSON Parse error: Number too big to be stored in double.")


_DECODER = json.JSONDecoder(parse_int=_rapidjson_int)

# rapidjson's wording for the errors Python's decoder reports differently.
_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Expecting ',' delimiter": "Missing a comma or '}' after an object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
}


def parse_json(body: bytes) -> dict:
    """Bytes -> JSON object; trailing bytes after the root value are ignored (rapidjson kParseStopWhenDoneFlag)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid(f"JSON Parse error: Invalid encoding in string. at offset: {error.start}") from None
    stripped = text.lstrip()
    if not stripped:
        raise invalid("JSON Parse error: The document is empty")
    offset = len(text) - len(stripped)
    try:
        value, _ = _DECODER.raw_decode(stripped)
    except json.JSONDecodeError as error:
        message = _RAPIDJSON_MESSAGES.get(error.msg, error.msg + ".")
        raise invalid(f"JSON Parse error: {message} at offset: {error.pos + offset}") from None
    except RecursionError:
        raise invalid("JSON Parse error: Nesting too deep.") from None
    if _SURROGATE_ESCAPE.search(stripped) and _has_lone_surrogate(value):
        raise invalid("JSON Parse error: The surrogate pair in string is invalid.")
    if not isinstance(value, dict):
        raise invalid(f"JSON Value: {_debug(value)} Is not object")
    return value


def _has_lone_surrogate(value) -> bool:
    """Whether any string or key holds a surrogate that is not half of a pair (Python's decoder joins the pairs)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _debug(value) -> str:
    # json_tensor.cc JsonValueToString writes with rapidjson's PrettyWriter: 4-space indent, one item per line,
    # raw UTF-8.
    if isinstance(value, (bytes, bytearray)):
        text = repr(value)
    else:
        text = json.dumps(value, allow_nan=True, indent=4, ensure_ascii=False)
    return text if len(text) <= 200 else text[:200] + "..."


def _json_type(value) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    return "Object"


def is_b64_object(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        # TF Serving also accepts web-safe base64; anything else is the upstream error.
        try:
            web_safe = text.replace("-", "+").replace("_", "/")
            return base64.b64decode(web_safe + "=" * (-len(web_safe) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise invalid("Unable to base64 decode") from None


def signature_name_of(request: dict) -> str:
    name = request.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid(f"JSON Value: {_debug(name)} not formatted correctly. "
                      "'signature_name' key must be a string value.")
    return name


# ----------------------------------------------------------------------------------------------- predict requests

def _shape_of(value) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _walk(value, shape, level, visit):
    """Checks `value` is a dense nested list of `shape`; calls visit(leaf) on every leaf."""
    if level == len(shape):
        if isinstance(value, list):
            raise invalid("Encountered list at unexpected level")
        visit(value)
        return
    if not isinstance(value, list):
        raise invalid(f"JSON Value: {_debug(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                      f"Expected a list at this level.")
    if len(value) != shape[level]:
        raise invalid(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                      f"expected size: {shape[level]}")
    for item in value:
        _walk(item, shape, level + 1, visit)


_INT_RANGES = {
    types_pb2.DT_INT32: (-2**31, 2**31 - 1), types_pb2.DT_INT16: (-2**31, 2**31 - 1),
    types_pb2.DT_INT8: (-2**31, 2**31 - 1), types_pb2.DT_UINT8: (-2**31, 2**31 - 1),
    types_pb2.DT_INT64: (-2**63, 2**63 - 1), types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, 2**64 - 1),
}


def _type_error(leaf, dtype) -> ServingError:
    return invalid(f"JSON Value: {_debug(leaf)} Type: {_json_type(leaf)} is not of expected type: {dtype_name(dtype)}")


def _check_leaf(dtype):
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        def check(leaf):
            if isinstance(leaf, bool) or not isinstance(leaf, (int, float)):
                raise _type_error(leaf, dtype)
    elif dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]

        def check(leaf):
            if isinstance(leaf, bool) or not isinstance(leaf, int) or not low <= leaf <= high:
                raise _type_error(leaf, dtype)
    elif dtype == types_pb2.DT_BOOL:
        def check(leaf):
            if not isinstance(leaf, bool):
                raise _type_error(leaf, dtype)
    else:
        check = None
    return check


def json_to_array(value, dtype: int) -> np.ndarray:
    """A JSON value (scalar, nested list, {"b64": ..}) -> ndarray of the signature's dtype."""
    shape = _shape_of(value)
    if len(shape) > MAX_TENSOR_RANK:
        raise invalid(f"JSON Value nested {len(shape)} levels deep: tensors of at most {MAX_TENSOR_RANK} dimensions "
                      "are supported")
    if dtype == types_pb2.DT_STRING:
        leaves: list[bytes] = []

        def visit(leaf):
            if isinstance(leaf, str):
                leaves.append(leaf.encode("utf-8"))
            elif is_b64_object(leaf):
                leaves.append(decode_b64(leaf["b64"]))
            else:
                raise _type_error(leaf, dtype)
        _walk(value, shape, 0, visit)
        array = np.empty(len(leaves), dtype=object)
        array[:] = leaves
        return array.reshape(shape)
    if dtype not in NUMPY_BY_DTYPE or dtype == types_pb2.DT_HALF:
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                           f"Conversion of JSON Value: {_debug(value)} to type: {types_pb2.DataType.Name(dtype)}")
    numpy_type = NUMPY_BY_DTYPE[dtype]
    # Fast path: numpy validates density; element types are checked on the array's kind.
    try:
        array = np.array(value)
    except (ValueError, OverflowError):
        array = None
    expected_kind = {"f": "fi", "i": "i", "u": "i", "b": "b"}[np.dtype(numpy_type).kind]
    if array is not None and list(array.shape) == shape and array.dtype.kind in expected_kind:
        if dtype in _INT_RANGES:
            low, high = _INT_RANGES[dtype]
            if array.size and (array.min() < low or array.max() > high):
                array = None
        if array is not None:
            with np.errstate(over="ignore"):
                return array.astype(numpy_type)
    _walk(value, shape, 0, _check_leaf(dtype))  # raises the precise upstream message
    with np.errstate(over="ignore"):
        return np.array(value, dtype=numpy_type)


def predict_inputs_from_json(request: dict, input_dtypes: dict[str, int]) -> tuple[dict[str, np.ndarray], bool]:
    """Returns ({input name: array}, row_format) for a parsed predict request and the signature's input dtypes
    (FillPredictRequestFromJson)."""
    has_instances, has_inputs = "instances" in request, "inputs" in request
    if has_instances and has_inputs:
        raise invalid(f"JSON Value: {_debug(request)} Not formatted correctly expecting only one of 'inputs' or "
                      "'instances' keys to exist ")
    if has_instances:
        return _inputs_from_instances(request["instances"], input_dtypes), True
    if has_inputs:
        return _inputs_from_columns(request["inputs"], input_dtypes), False
    raise invalid("Missing 'inputs' or 'instances' key")


def _is_element_object(value) -> bool:
    """A JSON object that names inputs; {"b64": ..} is one string value, not an object of inputs."""
    return isinstance(value, dict) and not is_b64_object(value)


def _sole_input(input_dtypes: dict[str, int]) -> tuple[str, int]:
    """(name, dtype) of a single-input signature, the input a plain value or list is for (tensorinfo_map.begin())."""
    name = list(input_dtypes)[0]
    return name, input_dtypes[name]


def _inputs_from_instances(instances, input_dtypes: dict[str, int]) -> dict[str, np.ndarray]:
    """The row format (FillTensorMapFromInstancesList): one list item per batch element."""
    if not isinstance(instances, list):
        raise invalid(f"JSON Value: {_debug(instances)} Expecting 'instances' to be an list/array")
    if not instances:
        raise invalid(f"JSON Value: {_debug(instances)} No values in 'instances' array")
    if _is_element_object(instances[0]):
        return _inputs_from_named_instances(instances, input_dtypes)
    if len(input_dtypes) > 1:
        raise invalid("instances is a plain list, but expecting list of objects as multiple input tensors "
                      "required as per tensorinfo_map")
    for i, item in enumerate(instances):
        if _is_element_object(item):
            raise invalid(f"Expecting value/list but got object at item {i} of input list")
    name, dtype = _sole_input(input_dtypes)
    return {name: _stack(instances, dtype)}


def _inputs_from_named_instances(instances: list, input_dtypes: dict[str, int]) -> dict[str, np.ndarray]:
    """Row-format items that are objects of {input name: value}: each input's values are stacked into its tensor."""
    names = sorted(input_dtypes)
    columns: dict[str, list] = {name: [] for name in names}
    for i, item in enumerate(instances):
        _check_named_instance(i, item, input_dtypes)
        for key, value in item.items():
            columns[key].append(value)
    return {name: _stack(columns[name], input_dtypes[name]) for name in names}


def _check_named_instance(index: int, item, input_dtypes: dict[str, int]) -> None:
    """A row-format item must be an object naming every input of the signature and nothing else."""
    if not _is_element_object(item):
        raise invalid(f"Expecting object but got list at item {index} of input list")
    for key in item:
        if key not in input_dtypes:
            raise invalid(f"Failed to process element: {index} of 'instances' list. JSON object: "
                          f"{_debug(item)} does not have named input: {key}")
    if len(item) != len(input_dtypes):
        raise invalid(f"Failed to process element: {index} of 'instances' list. JSON object: "
                      f"{_debug(item)} keys must be equal to: {','.join(sorted(input_dtypes))}")


def _inputs_from_columns(inputs, input_dtypes: dict[str, int]) -> dict[str, np.ndarray]:
    """The columnar format (FillTensorMapFromInputsMap): each input's whole tensor, batch dimension included."""
    if _is_element_object(inputs):
        return _inputs_from_named_columns(inputs, input_dtypes)
    if len(input_dtypes) > 1:
        raise invalid("inputs is a plain value/list, but expecting an object as multiple input tensors required "
                      "as per tensorinfo_map")
    name, dtype = _sole_input(input_dtypes)
    return {name: json_to_array(inputs, dtype)}


def _inputs_from_named_columns(inputs: dict, input_dtypes: dict[str, int]) -> dict[str, np.ndarray]:
    """{input name: tensor}; names the signature does not have are ignored, as upstream does."""
    arrays = {}
    for name in sorted(input_dtypes):
        if name not in inputs:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = json_to_array(inputs[name], input_dtypes[name])
    return arrays


def _stack(items: list, dtype: int) -> np.ndarray:
    """Row-format items -> one tensor with a new dim 0; every item must have the same shape."""
    first_shape = _shape_of(items[0])
    for item in items[1:]:
        shape = _shape_of(item)
        if shape != first_shape:
            raise invalid(f"Expecting shape {_fmt_shape(first_shape)} but got: {_fmt_shape(shape)}")
    return json_to_array(items, dtype)


def _fmt_shape(shape) -> str:
    return "[" + ",".join(str(s) for s in shape) + "]"


# ---------------------------------------------------------------------------------------------- classify/regress

def _feature(name: str, value) -> feature_pb2.Feature:
    values = value if isinstance(value, list) else [value]
    kinds = []
    for v in values:
        if isinstance(v, bool) or (isinstance(v, int) and not isinstance(v, bool)):
            if isinstance(v, int) and not isinstance(v, bool) and v > 2**63 - 1:
                raise invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
            kinds.append("int64")
        elif isinstance(v, float):
            kinds.append("float")
        elif isinstance(v, str) or is_b64_object(v):
            kinds.append("bytes")
        else:
            raise invalid(f"Feature: {name} has element with unexpected JSON type: {_json_type(v)}")
    if not values:
        return feature_pb2.Feature()
    for kind in kinds[1:]:
        if kind != kinds[0]:
            raise invalid(f"Unexpected element type in feature: {name} expecting type: {kinds[0]}")
    if kinds[0] == "int64":
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[int(v) for v in values]))
    if kinds[0] == "float":
        return feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))
    return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(
        value=[decode_b64(v["b64"]) if isinstance(v, dict) else v.encode("utf-8") for v in values]))


def _example(value) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise invalid(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = example_pb2.Example()
    for name, feature_value in value.items():
        example.features.feature[name].CopyFrom(_feature(name, feature_value))
    return example


def classify_regress_input_from_json(request: dict, method: str, proto=None):
    """A parsed classify/regress request -> tensorflow.serving.Input proto, filled into `proto` when given (the
    `input` of a ClassificationRequest or RegressionRequest, so the examples are not copied again)."""
    if "examples" not in request:
        raise invalid(f"JSON Value: {_debug(request)} When method is {method}, key 'examples' is expected and "
                      "was not found")
    examples = request["examples"]
    if not isinstance(examples, list):
        raise invalid(f"JSON Value: {_debug(examples)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid(f"JSON Value: {_debug(examples)} 'examples' value is an empty array")
    parsed = [_example(e) for e in examples]
    proto = input_pb2.Input() if proto is None else proto
    if "context" in request:
        proto.example_list_with_context.context.CopyFrom(_example(request["context"]))
        proto.example_list_with_context.examples.extend(parsed)
    else:
        proto.example_list.examples.extend(parsed)
    return proto


# --------------------------------------------------------------------------------------------------- responses

def format_float(value: float, single: bool) -> str:
    """TF Serving's WriteDecimal: %g, widened to max_digits10 if that does not round-trip; bare NaN/Infinity."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = f"{value:g}"
    if (np.float32(float(text)) != np.float32(value)) if single else (float(text) != value):
        text = ("%.9g" if single else "%.17g") % value
    if "." not in text and "e" not in text and "n" not in text:
        text += ".0"
    return text


# The response bodies reproduce rapidjson's PrettyWriter byte for byte, as json_tensor.cc drives it: 4-space indent;
# an array in the default mode puts every element on its own line, in kFormatSingleLineArray mode it writes
# "a, b, c" on one line (and no newline before its "]"); objects always put each member on its own line, whatever the
# mode. The indent of a line is the writer's nesting depth, which is what `level` tracks below.

def _indent(level: int) -> str:
    return "\n" + "    " * level


_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"}


def _json_string(value) -> str:
    """rapidjson Writer::String: escapes '"', '\\' and control characters (\\u00XX, upper-case hex); everything else,
    including '/' and non-ASCII, raw. Bytes that are not UTF-8 pass through unchanged, as TF Serving writes them."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    text = data.decode("utf-8", errors="surrogateescape")
    if any(ord(c) < 0x20 or c in '"\\' for c in text):
        text = "".join(_ESCAPES.get(ord(c), f"\\u{ord(c):04X}") if ord(c) < 0x20 or c in '"\\' else c for c in text)
    return '"' + text + '"'


def _b64_object(value, level: int) -> str:
    # {"b64": ...} is an object, so it spans lines even inside a single-line array.
    return ("{" + _indent(level + 1) + '"b64": "' + base64.b64encode(_as_bytes(value)).decode("ascii") + '"'
            + _indent(level) + "}")


def _scalar_writer(array: np.ndarray, as_b64: bool):
    """-> write(value, level) for one element of `array` (AddSingleValueAndAdvance)."""
    kind = array.dtype.kind
    if kind == "f":
        single = array.dtype != np.float64
        return lambda v, level: format_float(v, single)
    if kind == "b":
        return lambda v, level: "true" if v else "false"
    if kind in "iu":
        return lambda v, level: str(v)
    if kind in "OSU":
        if as_b64:
            return _b64_object
        return lambda v, level: _json_string(v)
    raise invalid(f"Failed to write JSON value for tensor type: {array.dtype}")


def _as_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def _array(items: list[str], level: int, single_line: bool) -> str:
    """An array whose writer nesting depth is `level` before StartArray, from its already written elements."""
    if not items:
        return "[]"
    if single_line:
        return "[" + ", ".join(items) + "]"
    inner = _indent(level + 1)
    return "[" + inner + ("," + inner).join(items) + _indent(level) + "]"


def _object(members: list[tuple[str, str]], level: int) -> str:
    if not members:
        return "{}"
    inner = _indent(level + 1)
    return "{" + inner + ("," + inner).join(f"{_json_string(k)}: {v}" for k, v in members) + _indent(level) + "}"


def _tensor_writer(array: np.ndarray, name: str):
    """-> (nested python values, write(value, dims_left, level, single_line)) for one output (AddTensorValues)."""
    scalar = _scalar_writer(array, name.endswith("_bytes"))

    def write(value, dims_left, level, single_line):
        if dims_left == 0:
            return scalar(value, level)
        return _array([write(v, dims_left - 1, level + 1, single_line) for v in value], level, single_line)
    return array.tolist(), write


def predict_response_json(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    """MakeRowFormatJsonFromTensors / MakeColumnarFormatJsonFromTensors."""
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    if not row_format:
        # Columnar: the default pretty mode throughout, one element per line.
        tensors = {name: _tensor_writer(array, name) for name, array in outputs.items()}
        if len(outputs) == 1:
            (name, (values, write)), = tensors.items()
            body = write(values, outputs[name].ndim, 1, False)
        else:
            body = _object([(name, write(values, outputs[name].ndim, 2, False))
                            for name, (values, write) in tensors.items()], 1)
        return _encode('{\n    "outputs": ' + body + "\n}")
    batch = None
    for name, array in outputs.items():
        if array.ndim == 0:
            raise invalid(f"Tensor name: {name} has no shape information ")
        if batch is None:
            batch = array.shape[0]
        elif array.shape[0] != batch:
            raise invalid(f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}")
    tensors = {name: (_tensor_writer(array, name), array.ndim - 1) for name, array in outputs.items()}
    if len(outputs) == 1:
        # Each item is written in single-line mode, so items follow each other on the "predictions" line.
        ((values, write), dims_left), = tensors.values()
        body = _array([write(values[i], dims_left, 2, True) for i in range(batch)], 1, True)
        if batch:  # the mode is back to default when "predictions" closes: newline before its "]"
            body = body[:-1] + _indent(1) + "]"
    else:
        # An item object starts in the default mode (one per line); its values are written single-line.
        body = _array([_object([(name, write(values[i], dims_left, 3, True))
                                for name, ((values, write), dims_left) in tensors.items()], 2)
                       for i in range(batch)], 1, False)
    return _encode('{\n    "predictions": ' + body + "\n}")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def classification_json(result) -> bytes:
    """MakeJsonFromClassificationResult: each example's [[label, score], ...] on the "results" line."""
    if not result.classifications:
        raise invalid("Cannot convert empty ClassificationResults to JSON")
    rows = [_array([_array([_json_string(c.label), format_float(c.score, True)], 3, True)
                    for c in classifications.classes], 2, True)
            for classifications in result.classifications]
    return _encode('{\n    "results": [' + ", ".join(rows) + _indent(1) + "]\n}")


def regression_json(result) -> bytes:
    """MakeJsonFromRegressionResult: the whole "results" array in single-line mode."""
    if not result.regressions:
        raise invalid("Cannot convert empty RegressionResults to JSON")
    return _encode('{\n    "results": ' + _array([format_float(r.value, True) for r in result.regressions], 1, True)
                   + "\n}")


def error_json(message: str) -> bytes:
    return _encode('{\n    "error": ' + _json_string(message) + "\n}")
