"""Version labels by TF Serving's rule (server_core.cc UpdateModelVersionLabelMap, run before a config's versions are
added): a label may point only at an AVAILABLE version; --allow_version_labels_for_unavailable_models allows a new (or
unchanged) label on another one, never moving a label to it; a config whose labels fail changes nothing. Checked over
HandleReloadConfigRequest and the polled --model_config_file, and the two-step move of serving_config.md under load.

Version 1 of the test model is half_plus_two (y = 0.5x + 2) and version 2 half_plus_three, so a REST answer, which
carries no version, tells which of the two gave it.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import urllib.request

import grpc
import pytest
import tensorflow as tf
from conftest import wait_for
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.errors import ServingError

POLL_SECONDS = 1
ANSWER_BY_VERSION = {1: 3.0, 2: 4.0, 3: 3.0}  # y at x = 2 (3 is half_plus_two again, only ever asked over gRPC)


@pytest.fixture
def base_path(models_dir, tmp_path):
    base = tmp_path / "m"
    shutil.copytree(models_dir / "half" / "123", base / "1")
    shutil.copytree(models_dir / "half_plus_three" / "1", base / "2")
    return base


def config_text(base, versions, labels, extra_models=()) -> str:
    """A ModelServerConfig for model `m` with `specific` versions and labels, plus `extra_models` (name, base path)."""
    label_lines = "".join(f' version_labels {{ key: "{label}" value: {version} }}' for label, version in labels.items())
    specific = " ".join(f"versions: {v}" for v in versions)
    models = [f'config {{ name: "m" base_path: "{base}" model_platform: "tensorflow" '
              f'model_version_policy {{ specific {{ {specific} }} }}{label_lines} }}']
    models += [f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}'
               for name, path in extra_models]
    return "model_config_list { " + " ".join(models) + " }"


def publish(path, text: str) -> float:
    """Rewrites the config file atomically, as the pipeline does (write beside it, then rename over it)."""
    with open(f"{path}.tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(f"{path}.tmp", path)
    return time.monotonic()


def reload_request(text: str) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    return request


def predict_request(label: str | None = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    if label:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0], dtype=tf.float32))
    return request


def not_available(version: int) -> tuple[grpc.StatusCode, str]:
    return (grpc.StatusCode.FAILED_PRECONDITION,
            f"Request to assign label to version {version} of model m, which is not currently available for inference")


def rpc_error(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=60)
    return error.value.code(), error.value.details()


class Clients:
    def __init__(self, server):
        self.channel = grpc.insecure_channel(f"localhost:{server.grpc_port}")
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.rest_url = f"http://localhost:{server.rest_port}"

    def versions(self, name: str = "m") -> dict[int, str]:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        return {s.version: get_model_status_pb2.ModelVersionStatus.State.Name(s.state)
                for s in self.models.GetModelStatus(request, timeout=30).model_version_status}

    def label_version(self, label: str) -> int:
        response = self.predict.Predict(predict_request(label), timeout=30)
        assert list(response.outputs["y"].float_val) == [ANSWER_BY_VERSION[response.model_spec.version.value]]
        return response.model_spec.version.value

    def rest_label_answer(self, label: str) -> float:
        request = urllib.request.Request(f"{self.rest_url}/v1/models/m/labels/{label}:predict",
                                         data=json.dumps({"instances": [2.0]}).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["predictions"][0]


def test_startup_config_with_labels_needs_the_flag(base_path, tmp_path, make_server):
    config = tmp_path / "models.config"
    publish(config, config_text(base_path, [1, 2], {"canary": 2}))
    with pytest.raises(ServingError) as error:
        make_server(model_config_file=str(config))
    assert (error.value.code, error.value.message) == not_available(2)

    publish(config, config_text(base_path, [1, 2], {"stable": 1, "canary": 2}))
    clients = Clients(make_server(model_config_file=str(config), allow_version_labels_for_unavailable_models=True))
    assert (clients.label_version("stable"), clients.label_version("canary")) == (1, 2)


def test_reload_labels_only_on_available_versions(base_path, models_dir, make_server, tmp_path):
    config = tmp_path / "models.config"
    publish(config, config_text(base_path, [1], {}))
    clients = Clients(make_server(model_config_file=str(config), enable_reload_config_rpc=True,
                                  reload_config_allowed_paths=f"{tmp_path},{models_dir}"))

    # Adding version 2 and pointing a label at it in one config fails, and nothing of that config is applied:
    # version 2 is not loaded, the model it adds is not added, the label does not exist.
    failing = config_text(base_path, [1, 2], {"canary": 2}, extra_models=[("other", models_dir / "half")])
    assert rpc_error(clients.models.HandleReloadConfigRequest, reload_request(failing)) == not_available(2)
    assert clients.versions() == {1: "AVAILABLE"}
    assert rpc_error(clients.models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "other"})) == (grpc.StatusCode.NOT_FOUND, "Could not find any versions of model other")
    assert rpc_error(clients.predict.Predict, predict_request("canary")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: canary")

    # The documented way: load version 2 with the label still on 1, then move it.
    clients.models.HandleReloadConfigRequest(reload_request(config_text(base_path, [1, 2], {"canary": 1})), timeout=60)
    assert wait_for(lambda: clients.versions() == {2: "AVAILABLE", 1: "AVAILABLE"}), clients.versions()
    assert clients.label_version("canary") == 1
    clients.models.HandleReloadConfigRequest(reload_request(config_text(base_path, [1, 2], {"canary": 2})), timeout=60)
    assert clients.label_version("canary") == 2

    # A label left out of the config is gone.
    clients.models.HandleReloadConfigRequest(reload_request(config_text(base_path, [1, 2], {"stable": 1})), timeout=60)
    assert clients.label_version("stable") == 1
    assert rpc_error(clients.predict.Predict, predict_request("canary")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: canary")


def test_flag_allows_new_labels_on_unavailable_versions_but_never_moves_one(base_path, models_dir, make_server,
                                                                            tmp_path):
    shutil.copytree(models_dir / "half" / "123", base_path / "3")
    config = tmp_path / "models.config"
    publish(config, config_text(base_path, [1], {}))
    clients = Clients(make_server(model_config_file=str(config), allow_version_labels_for_unavailable_models=True,
                                  enable_reload_config_rpc=True,
                                  reload_config_allowed_paths=f"{tmp_path},{models_dir}"))

    # A new label may point at a version this same config adds.
    clients.models.HandleReloadConfigRequest(reload_request(config_text(base_path, [1, 2], {"canary": 2})), timeout=60)
    assert wait_for(lambda: clients.versions().get(2) == "AVAILABLE"), clients.versions()
    assert clients.label_version("canary") == 2

    # Moving that label to a version not loaded yet fails even with the flag; version 3 is not loaded.
    moving = config_text(base_path, [1, 2, 3], {"canary": 3})
    assert rpc_error(clients.models.HandleReloadConfigRequest, reload_request(moving)) == not_available(3)
    assert 3 not in clients.versions()
    assert clients.label_version("canary") == 2

    # An unchanged label beside a new one on the unloaded version is fine.
    clients.models.HandleReloadConfigRequest(
        reload_request(config_text(base_path, [1, 2, 3], {"canary": 2, "next": 3})), timeout=60)
    assert wait_for(lambda: clients.versions().get(3) == "AVAILABLE"), clients.versions()
    assert (clients.label_version("canary"), clients.label_version("next")) == (2, 3)


def test_two_step_label_move_through_the_config_file_under_load(base_path, make_server, tmp_path, caplog):
    """serving_config.md: "first submit a config containing version N and N+1, and then submit a config that contains
    version N+1, the label pointing to N+1 and no version N". Clients addressing the label never see a failure, and
    the label moves within two poll intervals of the file change."""
    caplog.set_level(logging.ERROR, logger="serving.server")
    config = tmp_path / "models.config"
    publish(config, config_text(base_path, [1], {"canary": 1}))
    server = make_server(model_config_file=str(config), model_config_file_poll_wait_seconds=POLL_SECONDS,
                         file_system_poll_wait_seconds=POLL_SECONDS, allow_version_labels_for_unavailable_models=True)
    clients = Clients(server)
    stop = threading.Event()
    failures, answers = [], {"grpc": [], "rest": []}  # (time, version) per client, in order

    def grpc_loop():
        while not stop.is_set():
            try:
                answers["grpc"].append((time.monotonic(), clients.label_version("canary")))
            except Exception as error:  # every failure is a test failure, collected for the message
                failures.append(f"grpc: {error!r}")

    def rest_loop():
        by_answer = {ANSWER_BY_VERSION[1]: 1, ANSWER_BY_VERSION[2]: 2}
        while not stop.is_set():
            try:
                answers["rest"].append((time.monotonic(), by_answer[clients.rest_label_answer("canary")]))
            except Exception as error:
                failures.append(f"rest: {error!r}")

    def first_answer_by(version: int, since: float) -> dict[str, float | None]:
        return {client: min((t - since for t, v in list(seen) if v == version and t >= since), default=None)
                for client, seen in answers.items()}

    threads = [threading.Thread(target=grpc_loop), threading.Thread(target=rest_loop)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        # One step (add version 2 and move the label to it) fails on every poll: 2 is never loaded.
        publish(config, config_text(base_path, [1, 2], {"canary": 2}))
        time.sleep(3 * POLL_SECONDS)
        assert clients.versions() == {1: "AVAILABLE"}
        message = ("PollFilesystemAndReloadConfig failed to ReloadConfig: Request to assign label to version 2 of "
                   "model m, which is not currently available for inference")
        assert message in caplog.messages
        # Step 1: versions 1 and 2, the label still on 1; wait until 2 is AVAILABLE.
        publish(config, config_text(base_path, [1, 2], {"canary": 1}))
        assert wait_for(lambda: clients.versions() == {2: "AVAILABLE", 1: "AVAILABLE"}), clients.versions()
        # Step 2: the label on 2, version 1 dropped.
        moved = publish(config, config_text(base_path, [2], {"canary": 2}))
        assert wait_for(lambda: None not in first_answer_by(2, moved).values()), clients.versions()
        assert wait_for(lambda: clients.versions() == {2: "AVAILABLE", 1: "END"}), clients.versions()
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        clients.channel.close()
    assert failures == []
    delays = first_answer_by(2, moved)
    print("label moved after: " + ", ".join(f"{client} {seconds:.2f}s" for client, seconds in delays.items()))
    assert all(delay <= 2 * POLL_SECONDS for delay in delays.values()), delays
    for client, seen in answers.items():
        versions = [v for _, v in seen]
        assert len(versions) > 20, (client, len(versions))
        assert versions == sorted(versions), client  # once on version 2, never back on 1
        assert all(v == 1 for t, v in seen if t < moved), client
