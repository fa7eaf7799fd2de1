"""Staged rollout: the plans never put a label on a version the servers have not loaded (TF Serving refuses that), and
against the real model server under load from gRPC and REST clients, a canary push, promote and rollback fail no
request and switch labels within two config polls; `promote --if-healthy` refuses a canary that fails requests."""
from __future__ import annotations

import base64
import os
import sys
import threading
import time

import grpc
import pytest
import requests
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from components.atomic_pusher.executor import publish, stage
from image_retrain import rollout
from pipelines.cli import main as cli
from serving.model_format import ROLLOUT_CONFIG_FILE, ROLLOUT_NEXT_FILE
from serving.process import model_server

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "serving"))
from model_fixtures import solid_image_bytes, write_image_classifier  # noqa: E402

MODEL = "shapes"
POLL_S = 1


def step_labels(steps):
    return [(step.versions, step.stable, step.canary) for step in steps]


def test_a_new_version_joins_unlabelled_and_labels_move_onto_it_only_after_a_wait(tmp_path):
    base = str(tmp_path)
    first = rollout.plan_canary(None, 5, model_name=MODEL, base_path=base, served=None)
    assert step_labels(first) == [((5,), None, None), ((5,), 5, 5)]
    waits = []
    current = rollout.apply(first, lambda written, versions: waits.append((written.versions, versions)))
    assert waits == [((5,), {5})] and current.describe() == "shapes: stable 5, no canary"

    canary = rollout.plan_canary(current, 7, model_name=MODEL, base_path=base, served=5)
    assert step_labels(canary) == [((5, 7), 5, 5), ((5, 7), 5, 7)]
    current = rollout.apply(canary, lambda written, versions: waits.append((written.versions, versions)))
    assert waits[-1] == ((5, 7), {7})
    assert step_labels(rollout.plan_promote(current)) == [((7,), 7, 7)]  # both loaded: one step
    assert step_labels(rollout.plan_rollback(current, previous=None)) == [((5,), 5, 5)]  # the canary withdrawn
    promoted = rollout.apply(rollout.plan_promote(current), None)
    assert step_labels(rollout.plan_rollback(promoted, previous=5)) == [((5, 7), 7, 7), ((5,), 5, 5)]
    with pytest.raises(ValueError, match="no canary to promote"):
        rollout.plan_promote(promoted)
    assert rollout.plan_direct(None, 9) == []  # a plain base path: TF Serving's latest policy, nothing to write


def test_without_a_server_to_ask_the_label_move_is_left_pending_and_advance_finishes_it(tmp_path):
    base = str(tmp_path)
    rollout.apply(rollout.plan_canary(None, 5, model_name=MODEL, base_path=base, served=None), lambda *_: None)
    with pytest.raises(rollout.Pending, match="labels move on once version\\(s\\) 7 are AVAILABLE"):
        rollout.apply(rollout.plan_canary(rollout.read(base), 7, model_name=MODEL, base_path=base, served=5), None)
    assert rollout.read(base).describe() == "shapes: stable 5, no canary, loading 7"
    assert rollout.read(base, ROLLOUT_NEXT_FILE).canary == 7
    assert rollout.advance(base, lambda *_: None).describe() == "shapes: stable 5, canary 7"
    assert not os.path.exists(os.path.join(base, ROLLOUT_NEXT_FILE))


def test_the_config_file_is_tf_serving_s_text_model_server_config(tmp_path):
    rollout.write(rollout.Rollout(MODEL, str(tmp_path), (5, 7), 5, 7))
    config = text_format.Parse((tmp_path / ROLLOUT_CONFIG_FILE).read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (MODEL, str(tmp_path), "tensorflow")
    assert list(model.model_version_policy.specific.versions) == [5, 7]
    assert dict(model.version_labels) == {"stable": 5, "canary": 7}
    assert sorted(os.listdir(tmp_path)) == [ROLLOUT_CONFIG_FILE]  # written through a rename, nothing left over


# -- the real server under load


def failing_model(export_dir: str) -> str:
    """A canary that fails every request (INVALID_ARGUMENT), with the classifier's signature."""
    class Failing(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            check = tf.debugging.assert_equal(tf.size(image_bytes), -1, message="this canary refuses everything")
            with tf.control_dependencies([check]):
                return {"scores": tf.zeros([tf.size(image_bytes), 3])}

    module = Failing()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
    return export_dir


class Clients:
    """gRPC and REST clients sending without pause to `stable` and `canary`; gRPC answers carry the version."""

    def __init__(self, grpc_address: str, rest_url: str, image: bytes):
        self.grpc_address, self.rest_url, self.image = grpc_address, rest_url, image
        self.answers: list[tuple[float, str, str, int | None]] = []  # (time, api, label, version or None if failed)
        self.errors: list[tuple[str, str, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=target, args=(label,), daemon=True)
                         for target in (self._grpc, self._rest) for label in ("stable", "canary")]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _grpc(self, label: str) -> None:
        channel = grpc.insecure_channel(self.grpc_address)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while not self._stop.is_set():
            request = predict_pb2.PredictRequest()
            request.model_spec.name, request.model_spec.version_label = MODEL, label
            request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([self.image]))
            try:
                version = stub.Predict(request, timeout=30).model_spec.version.value
                self.answers.append((time.monotonic(), "grpc", label, version))
            except grpc.RpcError as error:
                self.answers.append((time.monotonic(), "grpc", label, None))
                self.errors.append(("grpc", label, f"{error.code().name}: {error.details()}"))
        channel.close()

    def _rest(self, label: str) -> None:
        body = {"instances": [{"image_bytes": {"b64": base64.b64encode(self.image).decode()}}]}
        with requests.Session() as session:
            while not self._stop.is_set():
                response = session.post(f"{self.rest_url}/v1/models/{MODEL}/labels/{label}:predict", json=body,
                                        timeout=30)
                self.answers.append((time.monotonic(), "rest", label, 0 if response.ok else None))
                if not response.ok:
                    self.errors.append(("rest", label, response.text))

    def wait_for_answers(self, label: str, version: int, count: int, timeout_s: float = 60) -> None:
        """Until `count` gRPC answers under `label` have come from `version` (a machine under load is slow)."""
        deadline = time.monotonic() + timeout_s
        while sum(1 for _, api, lab, v in self.answers if api == "grpc" and lab == label and v == version) < count:
            assert time.monotonic() < deadline, f"fewer than {count} answers from {version} under {label}"
            time.sleep(0.05)

    def wait_for(self, label: str, version: int, timeout_s: float) -> float:
        """Seconds until gRPC answers under `label` come from `version` (and keep coming from it)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            recent = [v for t, api, lab, v in self.answers[-20:] if api == "grpc" and lab == label]
            if recent and all(v == version for v in recent):
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"{label} still answered by {set(recent)} after {timeout_s} s, not {version}")


def answers_label_requests(rest_url: str, timeout_s: float) -> None:
    body = {"instances": [{"image_bytes": {"b64": base64.b64encode(solid_image_bytes((1, 2, 3))).decode()}}]}
    deadline = time.monotonic() + timeout_s
    while not all(requests.post(f"{rest_url}/v1/models/{MODEL}/labels/{label}:predict", json=body, timeout=30).ok
                  for label in ("stable", "canary")):
        assert time.monotonic() < deadline, "the labels did not come into force"
        time.sleep(0.1)


def _push(model_dir: str, base: str, server_url: str) -> int:
    _, version = publish(model_dir, base)
    stage(base, int(version), "canary", MODEL, [server_url])
    return int(version)


@pytest.mark.e2e
def test_canary_promote_and_rollback_under_load_fail_no_request(tmp_path, capsys):
    base = str(tmp_path / "models" / MODEL)
    good = write_image_classifier(str(tmp_path / "good"))
    first = int(publish(good, base)[1])
    assert cli(["rollout", "init", "--model-base-path", base, "--model-name", MODEL]) == 0  # as the manifests' init
    assert rollout.read(base) is None  # a plain config: the newest version, no labels yet
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    with open(tmp_path / "server.log", "wb") as log, model_server(
            f"--model_config_file={base}/{ROLLOUT_CONFIG_FILE}", f"--model_config_file_poll_wait_seconds={POLL_S}",
            "--allow_version_labels_for_unavailable_models", f"--monitoring_config_file={monitoring}",
            stdout=log, stderr=log) as server:
        # The first labels go on once the server reports the version loaded; clients use them once they answer.
        assert stage(base, first, "canary", MODEL, [server.rest_url]).startswith("shapes: stable")
        answers_label_requests(server.rest_url, timeout_s=2 * POLL_S + 1)
        with Clients(server.grpc_address, server.rest_url, solid_image_bytes((200, 30, 30))) as clients:
            clients.wait_for("canary", first, 30)
            second = _push(good, base, server.rest_url)
            assert clients.wait_for("canary", second, 2 * POLL_S + 1) < 2 * POLL_S + 1
            assert clients.wait_for("stable", first, 1) < 0.5  # stable traffic never moved
            clients.wait_for_answers("canary", second, 40)  # enough traffic on both to judge the canary by
            assert cli(["promote", "--model-base-path", base, "--server", server.rest_url, "--if-healthy",
                        "--min-requests", "5"]) == 0
            assert clients.wait_for("stable", second, 2 * POLL_S + 1) < 2 * POLL_S + 1
            assert cli(["rollback", "--model-base-path", base, "--server", server.rest_url]) == 0  # back to `first`
            clients.wait_for("stable", first, 2 * POLL_S + 1)
            clients.wait_for("canary", first, 2 * POLL_S + 1)
            assert rollout.read(base).describe() == f"shapes: stable {first}, no canary"
            time.sleep(1)
        assert not clients.errors, clients.errors[:5]
        assert {api for _, api, _, _ in clients.answers} == {"grpc", "rest"} and len(clients.answers) > 100

        # A canary that fails its requests: promote --if-healthy refuses it, rollback withdraws it.
        with Clients(server.grpc_address, server.rest_url, solid_image_bytes((200, 30, 30))) as clients:
            bad = _push(failing_model(str(tmp_path / "bad")), base, server.rest_url)
            deadline = time.monotonic() + 10
            while sum(1 for _, _, label, v in clients.answers if label == "canary" and v is None) < 10:
                assert time.monotonic() < deadline, "the failing canary got no traffic"
                time.sleep(0.1)
            assert cli(["promote", "--model-base-path", base, "--server", server.rest_url, "--if-healthy",
                        "--min-requests", "5"]) == 1
            assert f"refused: canary version {bad} failed" in capsys.readouterr().err
            assert rollout.read(base).describe() == f"shapes: stable {first}, canary {bad}"
            assert cli(["rollback", "--model-base-path", base, "--server", server.rest_url]) == 0
            clients.wait_for("canary", first, 2 * POLL_S + 1)
            errors_before = len(clients.errors)
            time.sleep(1)
            assert len(clients.errors) == errors_before  # nothing fails once the canary is gone
        assert all(label == "canary" for _, label, _ in clients.errors)
