"""Request logging from a model config's logging_config (open-source TF Serving refuses it; we write TFRecord files of
tensorflow.serving.PredictionLog): real gRPC and REST clients, the files read back with TensorFlow's TFRecord reader."""
from __future__ import annotations

import glob
import json
import os
import re
import statistics
import threading
import time
import urllib.request

import grpc
import pytest
import tensorflow as tf
from conftest import prometheus_samples, wait_for, write
from google.protobuf import text_format
from tensorflow.core.example import feature_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.errors import ConfigError

FILE_NAME = re.compile(r"-(\d{8}T\d{6}\.\d{6}Z)-(\d{5})\.tfrecord")


def logging_config(prefix, rate: float = 1.0, kind: str = "tfrecord") -> str:
    return (f'logging_config {{ log_collector_config {{ type: "{kind}" filename_prefix: "{prefix}" }} '
            f"sampling_config {{ sampling_rate: {rate} }} }}")


def model_config(name: str, base_path, logging: str = "", extra: str = "") -> str:
    return f'config {{ name: "{name}" base_path: "{base_path}" model_platform: "tensorflow" {extra} {logging} }}'


def config_file(tmp_path, *models: str) -> str:
    return write(tmp_path / "models.config", "model_config_list { " + " ".join(models) + " }")


def monitoring_file(tmp_path) -> str:
    return write(tmp_path / "monitoring.config", 'prometheus_config { enable: true }')


def log_files(prefix) -> list[str]:
    """The request log files of `prefix`, oldest first."""
    return sorted(glob.glob(f"{prefix}-*.tfrecord"), key=lambda p: FILE_NAME.fullmatch(p[len(str(prefix)):]).groups())


def read_logs(prefix) -> list[prediction_log_pb2.PredictionLog]:
    return [prediction_log_pb2.PredictionLog.FromString(record)
            for path in log_files(prefix) for record in tf.compat.v1.io.tf_record_iterator(path)]


def logged(server, model: str, status_code: str = "OK") -> float:
    return prometheus_samples(server.rest_port).get(
        (":tensorflow:serving:request_log_count", frozenset({("model_name", model), ("status_code", status_code)})), 0)


def x_request(name: str, values=(2.0,), label: str | None = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if label:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(list(values), dtype=tf.float32))
    return request


def with_example(request, x: float = 2.0):
    example = request.input.example_list.examples.add()
    example.features.feature["x"].CopyFrom(feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[x])))
    return request


def rest_post(server, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://localhost:{server.rest_port}{path}", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def served(name: str, version: int, signature: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name, signature_name=signature)
    spec.version.value = version
    return spec


@pytest.fixture
def stubs_of():
    channels = []

    def stubs(server):
        channels.append(grpc.insecure_channel(f"localhost:{server.grpc_port}"))
        return (prediction_service_pb2_grpc.PredictionServiceStub(channels[-1]),
                model_service_pb2_grpc.ModelServiceStub(channels[-1]))

    yield stubs
    for channel in channels:
        channel.close()


def test_every_api_is_logged_as_the_prediction_log_of_its_grpc_call(models_dir, tmp_path, make_server, stubs_of):
    prefix = tmp_path / "logs" / "requests"
    labels = 'version_labels { key: "stable" value: 123 } version_labels { key: "canary" value: 124 }'
    config = config_file(tmp_path, model_config("m", models_dir / "half_two_versions", logging_config(prefix),
                                                "model_version_policy { all {} } " + labels))
    server = make_server(model_config_file=config, allow_version_labels_for_unavailable_models=True,
                         monitoring_config_file=monitoring_file(tmp_path))
    predict, _ = stubs_of(server)
    started = int(time.time())

    grpc_predict = x_request("m", label="canary")
    grpc_predict_response = predict.Predict(grpc_predict, timeout=30)
    assert rest_post(server, "/v1/models/m/labels/stable:predict", {"instances": [2.0, 3.0]}) == {
        "predictions": [3.0, 3.5]}
    classify = with_example(classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name="m", signature_name="classify_x_to_y")))
    classify_response = predict.Classify(classify, timeout=30)
    rest_post(server, "/v1/models/m/versions/123:classify",
              {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    regress = with_example(regression_pb2.RegressionRequest(
        model_spec=model_pb2.ModelSpec(name="m", signature_name="regress_x_to_y")))
    regress_response = predict.Regress(regress, timeout=30)
    multi = with_example(inference_pb2.MultiInferenceRequest())
    multi.tasks.add(method_name="tensorflow/serving/regress", model_spec={"name": "m", "signature_name":
                                                                          "regress_x_to_y"})
    multi_response = predict.MultiInference(multi, timeout=30)
    with pytest.raises(grpc.RpcError):  # a failed request is not logged
        predict.Predict(x_request("m", label="nope"), timeout=30)

    assert wait_for(lambda: logged(server, "m") == 6), logged(server, "m")
    entries = read_logs(prefix)
    assert [e.WhichOneof("log_type") for e in entries] == [
        "predict_log", "predict_log", "classify_log", "classify_log", "regress_log", "multi_inference_log"]
    assert [e.log_metadata.model_spec for e in entries] == [
        served("m", 124, "serving_default"), served("m", 123, "serving_default"), served("m", 124, "classify_x_to_y"),
        served("m", 123, "classify_x_to_y"), served("m", 124, "regress_x_to_y"), served("m", 124)]
    for entry in entries:
        assert entry.log_metadata.sampling_config.sampling_rate == 1.0
        assert list(entry.log_metadata.saved_model_tags) == ["serve"]
        assert started <= entry.log_metadata.timestamp_secs <= time.time()

    # gRPC: the request as sent, the response as received.
    assert (entries[0].predict_log.request, entries[0].predict_log.response) == (grpc_predict,
                                                                                  grpc_predict_response)
    assert (entries[2].classify_log.request, entries[2].classify_log.response) == (classify, classify_response)
    assert (entries[4].regress_log.request, entries[4].regress_log.response) == (regress, regress_response)
    assert (entries[5].multi_inference_log.request, entries[5].multi_inference_log.response) == (multi,
                                                                                                  multi_response)
    # REST: the PredictRequest / ClassificationRequest a gRPC client would send for the same call.
    rest_predict = entries[1].predict_log
    assert rest_predict.request.model_spec == model_pb2.ModelSpec(name="m", version_label="stable")
    assert list(rest_predict.request.inputs) == ["x"]
    assert rest_predict.request.inputs["x"].dtype == tf.float32.as_datatype_enum
    assert tf.make_ndarray(rest_predict.request.inputs["x"]).tolist() == [2.0, 3.0]
    assert tf.make_ndarray(rest_predict.response.outputs["y"]).tolist() == [3.0, 3.5]
    assert rest_predict.response.model_spec == served("m", 123, "serving_default")
    rest_classify = entries[3].classify_log
    expected = with_example(classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(name="m", signature_name="classify_x_to_y")))
    expected.model_spec.version.value = 123
    assert rest_classify.request == expected
    assert rest_classify.response.result == classify_response.result


def test_sampling_rates_0_half_and_1(models_dir, tmp_path, make_server, stubs_of):
    rates = {"never": 0.0, "half": 0.5, "always": 1.0}
    config = config_file(tmp_path, *(model_config(name, models_dir / "half", logging_config(tmp_path / name, rate))
                                     for name, rate in rates.items()))
    server = make_server(model_config_file=config, monitoring_config_file=monitoring_file(tmp_path))
    predict, _ = stubs_of(server)
    requests = 300
    for name in rates:
        for _ in range(requests):
            predict.Predict(x_request(name), timeout=30)
    assert wait_for(lambda: logged(server, "always") == requests), logged(server, "always")
    assert len(read_logs(tmp_path / "always")) == requests
    assert log_files(tmp_path / "never") == []
    assert logged(server, "never") == 0
    half = len(read_logs(tmp_path / "half"))
    assert 90 <= half <= 210, half  # Binomial(300, 0.5): 150 +- 8.7; outside this is 6.9 sigma
    assert logged(server, "half") == half


def test_files_rotate_and_only_the_newest_are_kept(models_dir, tmp_path, make_server, stubs_of):
    prefix = tmp_path / "logs" / "requests"
    server = make_server(model_config_file=config_file(tmp_path, model_config("m", models_dir / "half",
                                                                              logging_config(prefix))),
                         monitoring_config_file=monitoring_file(tmp_path),
                         request_log_max_file_bytes=2000, request_log_max_files=3)
    predict, _ = stubs_of(server)
    for i in range(80):
        predict.Predict(x_request("m", values=(float(i),)), timeout=30)
    assert wait_for(lambda: logged(server, "m") == 80), logged(server, "m")
    files = log_files(prefix)
    assert len(files) == 3, files
    starts, indexes = zip(*(FILE_NAME.fullmatch(path[len(str(prefix)):]).groups() for path in files))
    assert len(set(starts)) == 1
    assert [int(i) for i in indexes] == list(range(int(indexes[-1]) - 2, int(indexes[-1]) + 1))
    assert int(indexes[-1]) >= 5  # the older ones were deleted
    assert all(os.path.getsize(path) <= 2000 for path in files)
    values = [tf.make_ndarray(e.predict_log.request.inputs["x"]).tolist()[0] for e in read_logs(prefix)]
    assert values == [float(i) for i in range(80 - len(values), 80)]  # the newest records, in order


def test_logging_config_changes_on_reload_and_bad_ones_are_refused(models_dir, tmp_path, make_server, stubs_of):
    first, second = tmp_path / "first" / "requests", tmp_path / "second" / "requests"
    config = config_file(tmp_path, model_config("m", models_dir / "half"))
    server = make_server(model_config_file=config, monitoring_config_file=monitoring_file(tmp_path),
                         enable_reload_config_rpc=True, reload_config_allowed_paths=f"{models_dir},{tmp_path}")
    predict, models = stubs_of(server)

    def reload(logging: str):
        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse("model_config_list { " + model_config("m", models_dir / "half", logging) + " }",
                          request.config)
        return models.HandleReloadConfigRequest(request, timeout=60)

    def predict_value(value: float):
        predict.Predict(x_request("m", values=(value,)), timeout=30)

    def values(prefix):
        return [tf.make_ndarray(e.predict_log.request.inputs["x"]).tolist()[0] for e in read_logs(prefix)]

    predict_value(1.0)  # not logged: no logging_config yet
    reload(logging_config(first))
    predict_value(2.0)
    reload(logging_config(second))  # a new prefix: the first one's file is closed
    predict_value(3.0)
    for bad, message in ((logging_config(first, kind="kafka"), "Cannot find LogCollector::Factory for type: kafka"),
                         (logging_config(first, rate=1.5),
                          "logging_config of model m: sampling_config.sampling_rate must be in [0, 1]; got 1.5"),
                         (logging_config("relative/requests"), "logging_config of model m: "
                          "log_collector_config.filename_prefix must be an absolute path or URI; got "
                          "'relative/requests'")):
        with pytest.raises(grpc.RpcError) as error:
            reload(bad)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith(message), error.value.details()
    predict_value(4.0)  # the refused configs changed nothing
    reload("")
    predict_value(5.0)  # no longer logged
    assert wait_for(lambda: logged(server, "m") == 3), logged(server, "m")
    assert (values(first), values(second)) == ([2.0], [3.0, 4.0])

    bad_start = config_file(tmp_path / "first", model_config("m", models_dir / "half",
                                                             logging_config(first, kind="kafka")))
    with pytest.raises(ConfigError, match="Cannot find LogCollector::Factory for type: kafka"):
        make_server(model_config_file=bad_start)


def test_a_stuck_disk_drops_records_and_never_slows_requests(models_dir, tmp_path, make_server, stubs_of):
    """The writer is stuck for real: its next file is a FIFO no one reads, so opening it blocks (as a hung disk or
    network mount would). Requests keep their latency; what does not fit in the queue is dropped and counted."""
    prefix = tmp_path / "logs" / "requests"
    server = make_server(model_config_file=config_file(tmp_path, model_config("m", models_dir / "half",
                                                                              logging_config(prefix))),
                         monitoring_config_file=monitoring_file(tmp_path),
                         request_log_max_file_bytes=1, request_log_max_queue_bytes=4096)  # one record per file
    predict, _ = stubs_of(server)
    url = f"http://localhost:{server.rest_port}/v1/models/m:predict"

    def timed_requests(count: int) -> list[float]:
        seconds = []
        for i in range(count):
            started = time.perf_counter()
            if i % 4:
                predict.Predict(x_request("m"), timeout=30)
            else:
                with urllib.request.urlopen(urllib.request.Request(url, data=b'{"instances": [2.0]}'), timeout=30):
                    pass
            seconds.append(time.perf_counter() - started)
        return seconds

    baseline = timed_requests(40)  # the writer keeps up: every record written
    assert wait_for(lambda: logged(server, "m") == 40), logged(server, "m")
    start, newest = FILE_NAME.fullmatch(log_files(prefix)[-1][len(str(prefix)):]).groups()
    stuck = f"{prefix}-{start}-{int(newest) + 1:05d}.tfrecord"
    os.mkfifo(stuck)
    during = timed_requests(200)  # the first is taken by the writer, which then blocks opening the FIFO
    dropped = prometheus_samples(server.rest_port)[
        (":tensorflow:serving:request_log_dropped_count", frozenset({("model_name", "m")}))]
    print(f"median latency {statistics.median(baseline) * 1e3:.2f} ms writing, "
          f"{statistics.median(during) * 1e3:.2f} ms stuck (max {max(during) * 1e3:.1f} ms); {dropped:.0f} dropped")
    assert logged(server, "m") == 40  # nothing got past the stuck file
    assert dropped == logged(server, "m", "RESOURCE_EXHAUSTED") >= 100  # 4096 bytes hold a few dozen records
    assert statistics.median(during) <= 3 * statistics.median(baseline) + 0.005
    assert max(during) < 1.0

    # Shutting down does not wait for the stuck disk longer than its bound; then the disk comes back.
    started = time.monotonic()
    server.stop(grace_seconds=1)
    assert time.monotonic() - started < 15
    reader = threading.Thread(target=lambda: open(stuck, "rb").read())  # unblocks the writer, reads to its end
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive()
