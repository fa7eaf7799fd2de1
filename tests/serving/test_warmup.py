"""SavedModel warmup as TF Serving does it (saved_model_warmup_util.cc, saved_model_warmup.cc): the records of
assets.extra/tf_serving_warmup_requests run before a version serves, each --num_request_iterations_for_warmup times,
and any problem with them is the version's load error, with TF Serving's code and message."""
from __future__ import annotations

import logging
import shutil

import grpc
import pytest
import tensorflow as tf
from model_fixtures import write_call_counter_model
from tensorflow.core.example import feature_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from serving.errors import ServingError
from serving.model_format import WARMUP_FILE


def predict_log(values=(2.0,), alias="x") -> prediction_log_pb2.PredictionLog:
    entry = prediction_log_pb2.PredictionLog()
    entry.predict_log.request.model_spec.name = "whatever"  # warmup looks only at the signature
    entry.predict_log.request.inputs[alias].CopyFrom(tf.make_tensor_proto(list(values), dtype=tf.float32))
    return entry


def example_input(request) -> None:
    example = request.input.example_list.examples.add()
    example.features.feature["x"].CopyFrom(feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[2.0])))


def every_request_kind() -> list[prediction_log_pb2.PredictionLog]:
    """A record of each replayed kind, for half_plus_two's signatures."""
    classify, regress, multi = (prediction_log_pb2.PredictionLog() for _ in range(3))
    classify.classify_log.request.model_spec.signature_name = "classify_x_to_y"
    example_input(classify.classify_log.request)
    regress.regress_log.request.model_spec.signature_name = "regress_x_to_y"
    example_input(regress.regress_log.request)
    for signature, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                              ("classify_x_to_y", "tensorflow/serving/classify")):
        task = multi.multi_inference_log.request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = "whatever", signature
    example_input(multi.multi_inference_log.request)
    return [predict_log(), classify, regress, multi]


def write_warmup(version_dir, records=(), raw: bytes | None = None) -> str:
    """assets.extra/tf_serving_warmup_requests as TFRecords of `records` (protos or bytes), or exactly `raw`."""
    path = version_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        path.write_bytes(raw)
        return str(path)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record if isinstance(record, bytes) else record.SerializeToString())
    return str(path)


def config_file(tmp_path, base, policy="all {}") -> str:
    path = tmp_path / "models.config"
    path.write_text(f'model_config_list {{ config {{ name: "m" base_path: "{base}" model_platform: "tensorflow" '
                    f"model_version_policy {{ {policy} }} }} }}")
    return str(path)


def test_warmup_problems_fail_the_version_with_tf_servings_errors(models_dir, tmp_path, make_server):
    base = tmp_path / "m"
    for version in range(1, 11):
        shutil.copytree(models_dir / "half" / "123", base / str(version))
    empty = prediction_log_pb2.PredictionLog()  # no log_type: a no-op
    session_run, predict_streamed = prediction_log_pb2.PredictionLog(), prediction_log_pb2.PredictionLog()
    session_run.session_run_log.request.feed.add(name="x")
    predict_streamed.predict_streamed_log.SetInParent()
    paths = {
        2: write_warmup(base / "2", [empty] * 1001),
        3: write_warmup(base / "3", every_request_kind() + [empty] * 996),  # exactly 1000
        4: write_warmup(base / "4", [predict_log(), b"\xff\xff\xff"]),
        5: write_warmup(base / "5", raw=predict_log().SerializeToString()),  # a proto, not TFRecord framing
        6: write_warmup(base / "6", [session_run]),
        7: write_warmup(base / "7", [predict_streamed]),
        8: write_warmup(base / "8", [predict_log(alias="nope")]),
        9: write_warmup(base / "9", raw=b""),
        10: write_warmup(base / "10", [empty]),
    }
    server = make_server(model_config_file=config_file(tmp_path, base), max_num_load_retries=0)
    with grpc.insecure_channel(f"localhost:{server.grpc_port}") as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "m"
        statuses = {s.version: (get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                                grpc.StatusCode.OK if s.status.error_code == 0 else
                                next(c for c in grpc.StatusCode if c.value[0] == s.status.error_code),
                                s.status.error_message)
                    for s in model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                        request, timeout=30).model_version_status}
    ok = ("AVAILABLE", grpc.StatusCode.OK, "")
    assert {v: statuses[v] for v in (1, 3, 9, 10)} == {1: ok, 3: ok, 9: ok, 10: ok}
    assert statuses[2] == ("END", grpc.StatusCode.INVALID_ARGUMENT,
                           f"Number of warmup records exceeds the maximum (1000) at {paths[2]}")
    assert statuses[4] == ("END", grpc.StatusCode.INVALID_ARGUMENT,
                           f"Failed to parse warmup record: \\xff\\xff\\xff from {paths[4]}")
    state, code, message = statuses[5]
    assert (state, code) == ("END", grpc.StatusCode.DATA_LOSS)
    assert message == ("corrupted record at 0 (Is this even a TFRecord file?). Please verify your warmup data is in "
                       "TFRecord format."), message
    assert statuses[6] == ("END", grpc.StatusCode.UNIMPLEMENTED, "Unsupported log_type for warmup: 5")
    assert statuses[7] == ("END", grpc.StatusCode.UNIMPLEMENTED, "Unsupported log_type for warmup: 7")
    assert statuses[8] == ("END", grpc.StatusCode.INVALID_ARGUMENT,
                           "input tensor alias not found in signature: nope. Inputs expected to be in the set {x}.")


def test_a_failing_warmup_is_retried_like_any_load_failure_and_fails_startup(models_dir, tmp_path, make_server,
                                                                             caplog):
    caplog.set_level(logging.INFO, logger="serving.manager")
    shutil.copytree(models_dir / "half" / "123", tmp_path / "m" / "1")
    path = write_warmup(tmp_path / "m" / "1", [prediction_log_pb2.PredictionLog()] * 1001)
    with pytest.raises(ServingError) as error:
        make_server(model_name="m", model_base_path=str(tmp_path / "m"), max_num_load_retries=1,
                    load_retry_interval_micros=100_000)
    assert (error.value.code, error.value.message) == (
        grpc.StatusCode.UNKNOWN, "1 servable(s) did not become available: {name: m version: 1} due to error: "
        f"Number of warmup records exceeds the maximum (1000) at {path}")
    attempts = [m for m in caplog.messages if m.startswith("Loading servable {name: m version: 1} failed")]
    assert [m.split(" failed ")[1].split(")")[0] for m in attempts] == ["(attempt 1", "(attempt 2"], attempts


# Each replay runs on both session paths requests take (with and without a deadline: inference.warmup_request).
@pytest.mark.parametrize("flags,replays", [({}, 3 * 2), ({"num_request_iterations_for_warmup": 4}, 12 * 2),
                                           ({"num_request_iterations_for_warmup": 0}, 3 * 2),
                                           ({"enable_model_warmup": False}, 0)])
def test_each_record_runs_num_request_iterations_for_warmup_times(tmp_path, make_server, caplog, flags, replays):
    caplog.set_level(logging.INFO, logger="serving.servable")
    write_call_counter_model(str(tmp_path / "counter" / "1"))
    path = write_warmup(tmp_path / "counter" / "1", [predict_log()] * 3)
    server = make_server(model_name="counter", model_base_path=str(tmp_path / "counter"), **flags)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "counter"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0], dtype=tf.float32))
    with grpc.insecure_channel(f"localhost:{server.grpc_port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    assert list(response.outputs["calls"].float_val) == [replays + 1.0]  # the warmup runs, then this request
    finished = [m for m in caplog.messages if m.startswith("Finished reading warmup data")]
    if replays:
        assert len(finished) == 1
        assert finished[0].startswith(f"Finished reading warmup data for model at {path}. Number of warmup records "
                                      "read: 3. Elapsed time (microseconds): ")
    else:
        assert finished == []
