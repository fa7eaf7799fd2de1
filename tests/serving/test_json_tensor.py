"""Unit tests of the REST JSON rules (util/json_tensor.cc): number writing, row/columnar parsing, error texts."""
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from serving import json_tensor
from serving.errors import ServingError


@pytest.mark.parametrize("value,text", [
    (9000000, "9e+06"), (999999, "999999.0"), (0.5, "0.5"), (0.00003, "3e-05"), (555557.5, "555557.5"),
    (3, "3.0"), (float("nan"), "NaN"), (float("inf"), "Infinity"), (-float("inf"), "-Infinity"),
    (np.float32(0.1), "0.1"), (np.float32(1 / 3), "0.333333343"),
])
def test_float_formatting_matches_tf_serving(value, text):
    assert json_tensor.format_float(float(value), single=True) == text


def test_row_and_columnar_predict_responses():
    outputs = {"y": np.array([3.0, 3.5, 4.0], np.float32)}
    assert json_tensor.predict_response_json(outputs, True) == b'{\n    "predictions": [3.0, 3.5, 4.0\n    ]\n}'
    assert json_tensor.predict_response_json(outputs, False) == (
        b'{\n    "outputs": [\n        3.0,\n        3.5,\n        4.0\n    ]\n}')
    multi = {"a": np.array([1, 2], np.int64), "b_bytes": np.array([b"\x00", b"x"], object)}
    parsed = __import__("json").loads(json_tensor.predict_response_json(multi, True))
    assert parsed == {"predictions": [{"a": 1, "b_bytes": {"b64": "AA=="}}, {"a": 2, "b_bytes": {"b64": "eA=="}}]}


# Byte layout of TF Serving's responses: json_tensor.cc drives rapidjson's PrettyWriter, so the real rapidjson
# (python-rapidjson wraps the same C++ writer) is the oracle wherever one format mode covers the whole document.
# Values are chosen so that WriteDecimal and rapidjson's own number writer print them alike.
rapidjson = pytest.importorskip("rapidjson")

TENSORS = {
    "scores": np.array([[0.25, 0.75], [1.0, 0.0]], np.float32),
    "classes": np.array([[b"cat", b"dog"], [b"cat", b"dog"]], object),
    "image_bytes": np.array([b"\x00\xff", b"ok"], object),
    "count": np.array([3, 4], np.int64),
    "flag": np.array([True, False]),
}
PYTHON_VALUES = {
    "scores": [[0.25, 0.75], [1.0, 0.0]], "classes": [["cat", "dog"], ["cat", "dog"]],
    "image_bytes": [{"b64": "AP8="}, {"b64": "b2s="}], "count": [3, 4], "flag": [True, False],
}


@pytest.mark.parametrize("names", [["scores"], ["classes"], ["image_bytes"], ["count", "flag"],
                                   list(TENSORS)])
def test_columnar_response_bytes_match_rapidjson_pretty_writer(names):
    outputs = {name: TENSORS[name] for name in names}
    expected = {"outputs": PYTHON_VALUES[names[0]] if len(names) == 1 else {n: PYTHON_VALUES[n] for n in names}}
    assert json_tensor.predict_response_json(outputs, False) == rapidjson.dumps(
        expected, indent=4, ensure_ascii=False).encode()


def test_row_response_bytes_follow_tf_servings_format_switches():
    # One output: each item in single-line mode, and the default mode back before "predictions" closes.
    assert json_tensor.predict_response_json({"scores": TENSORS["scores"]}, True) == (
        b'{\n    "predictions": [[0.25, 0.75], [1.0, 0.0]\n    ]\n}')
    # A b64 object is an object, so it spans lines even inside a single-line array; that part is what rapidjson's
    # single-line mode writes for the same items.
    items = rapidjson.dumps({"predictions": PYTHON_VALUES["image_bytes"]}, indent=4,
                            write_mode=rapidjson.WM_SINGLE_LINE_ARRAY)
    assert json_tensor.predict_response_json({"image_bytes": TENSORS["image_bytes"]}, True) == (
        items[:-3] + "\n    ]\n}").encode()
    # Several outputs: the item objects start in default mode (one per line), their values are single-line.
    assert json_tensor.predict_response_json({"scores": TENSORS["scores"], "image_bytes": TENSORS["image_bytes"]},
                                             True) == (
        b'{\n    "predictions": [\n        {\n            "scores": [0.25, 0.75],\n            "image_bytes": {\n'
        b'                "b64": "AP8="\n            }\n        },\n        {\n            "scores": [1.0, 0.0],\n'
        b'            "image_bytes": {\n                "b64": "b2s="\n            }\n        }\n    ]\n}')
    assert json_tensor.predict_response_json({"count": np.zeros([0], np.int64)}, True) == (
        b'{\n    "predictions": []\n}')


def test_classify_regress_and_error_bytes():
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    result = classification_pb2.ClassificationResult()
    for scores in ([("cat", 0.75), ("dog", 0.25)], [("cat", 1.0)]):
        classes = result.classifications.add()
        for label, score in scores:
            classes.classes.add(label=label, score=score)
    assert json_tensor.classification_json(result) == (
        b'{\n    "results": [[["cat", 0.75], ["dog", 0.25]], [["cat", 1.0]]\n    ]\n}')
    regression = regression_pb2.RegressionResult()
    for value in (42.0, 0.5):
        regression.regressions.add(value=value)
    assert json_tensor.regression_json(regression) == rapidjson.dumps(
        {"results": [42.0, 0.5]}, indent=4, write_mode=rapidjson.WM_SINGLE_LINE_ARRAY).encode()
    message = 'Servable not found for request: Latest(d\u00e9j\u00e0 "vu")\n\x01/'
    assert json_tensor.error_json(message) == rapidjson.dumps({"error": message}, indent=4,
                                                              ensure_ascii=False).encode()


def test_instances_shapes_and_b64():
    inputs, row = json_tensor.predict_inputs_from_json({"instances": [[1, 2], [3, 4]]}, {"x": types_pb2.DT_FLOAT})
    assert row and inputs["x"].dtype == np.float32 and inputs["x"].shape == (2, 2)
    inputs, _ = json_tensor.predict_inputs_from_json({"instances": [{"b64": "aGk="}]}, {"s": types_pb2.DT_STRING})
    assert inputs["s"].tolist() == [b"hi"]
    inputs, row = json_tensor.predict_inputs_from_json({"inputs": {"a": [1.0], "b": [2.0, 3.0], "extra": 1}},
                                                       {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_FLOAT})
    assert not row and inputs["b"].shape == (2,)


@pytest.mark.parametrize("request_body,dtypes,message", [
    ({"instances": ["x"]}, {"x": types_pb2.DT_FLOAT}, "not of expected type: float"),
    ({"instances": [1.5]}, {"x": types_pb2.DT_INT32}, "not of expected type: int32"),
    ({"instances": [[1], [1, 2]]}, {"x": types_pb2.DT_FLOAT}, "Expecting shape [1] but got: [2]"),
    ({"instances": [{"b64": "%%%"}]}, {"x": types_pb2.DT_STRING}, "Unable to base64 decode"),
    ({"instances": []}, {"x": types_pb2.DT_FLOAT}, "No values in 'instances' array"),
    ({"instances": [1], "inputs": [1]}, {"x": types_pb2.DT_FLOAT}, "expecting only one of 'inputs' or 'instances'"),
    ({}, {"x": types_pb2.DT_FLOAT}, "Missing 'inputs' or 'instances' key"),
    ({"instances": [1]}, {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_FLOAT}, "instances is a plain list"),
    ({"inputs": {"a": [1]}}, {"a": types_pb2.DT_FLOAT, "b": types_pb2.DT_FLOAT}, "Missing named input: b"),
])
def test_predict_request_errors(request_body, dtypes, message):
    with pytest.raises(ServingError) as error:
        json_tensor.predict_inputs_from_json(request_body, dtypes)
    assert message in error.value.message and error.value.http_status == 400


@pytest.mark.parametrize("body,message", [
    (b"", "JSON Parse error: The document is empty"),
    (b"{", "JSON Parse error:"),
    (b"[1]", "Is not object"),
])
def test_parse_errors(body, message):
    with pytest.raises(ServingError) as error:
        json_tensor.parse_json(body)
    assert message in error.value.message


def test_trailing_bytes_ignored_and_examples_typed_by_token():
    assert json_tensor.parse_json(b'{"a": 1} trailing') == {"a": 1}
    proto = json_tensor.classify_regress_input_from_json(
        {"examples": [{"f": 2.0, "i": 2, "s": "x", "b": {"b64": "AA=="}}], "context": {"c": [1, 2]}}, "classify")
    example = proto.example_list_with_context.examples[0].features.feature
    assert example["f"].float_list.value == [2.0] and example["i"].int64_list.value == [2]
    assert example["s"].bytes_list.value == [b"x"] and example["b"].bytes_list.value == [b"\x00"]
    assert proto.example_list_with_context.context.features.feature["c"].int64_list.value == [1, 2]
