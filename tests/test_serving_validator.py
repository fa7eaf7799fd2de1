"""The load-and-query check before a push, on real models: a good export passes every check; one with an op the
declared TF Serving release lacks, one our server cannot load, one that answers unlike the Trainer's in-process model
and one without warmup records are refused, the reason naming the cause; the InfraBlessing gates the pusher."""
from __future__ import annotations

import io
import json
import os
import re
import shutil

import pytest
import tensorflow as tf
from PIL import Image
from tfx.types import standard_artifacts

from components.atomic_pusher.executor import Executor as PusherExecutor
from components.serving_validator import checks
from components.serving_validator.executor import Executor, validate
from image_retrain.image_module import load_image_module
from pipelines import configs
from pipelines.models.head import build_head
from pipelines.models.saved_model_export import export_serving_model

LABELS = ["blue", "red"]
RELEASE = configs.TF_SERVING_RELEASE


def png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = [png((220, 30, 30)), png((30, 30, 220)), png((200, 60, 40)), png((40, 60, 200))]


@pytest.fixture(scope="module")
def image_module():
    return load_image_module("efficientnet_lite0")


def export(image_module, path, seed: int) -> str:
    tf.keras.utils.set_random_seed(seed)
    head = build_head(image_module.feature_dim, len(LABELS), dict(configs.HYPERPARAMETERS, hidden_units=8))
    export_serving_model(image_module, head, LABELS, str(path), warmup_images=IMAGES)
    return str(path)


@pytest.fixture(scope="module")
def good_model(image_module, tmp_path_factory):
    return export(image_module, tmp_path_factory.mktemp("good") / "model", seed=1)


@pytest.fixture
def no_release_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(checks.RELEASE_ENVIRONMENTS_ENV, str(tmp_path / "none"))


@pytest.mark.e2e
def test_a_good_export_is_served_as_trained_by_tf_serving_s_tensorflow_and_by_our_server(good_model):
    assert checks.release_python(RELEASE), "make setup installs TF Serving's TensorFlow beside the venv"
    report = validate(good_model, "shapes", RELEASE, latency_requests=5)
    assert report["reason"] is None, report
    assert report["checks"]["release_tensorflow"].startswith(f"TensorFlow {RELEASE} loaded it with the TF1 loader")
    assert "over gRPC and REST" in report["checks"]["model_server"]
    assert set(report["latency_ms"]) == {"grpc_predict_p50_ms", "grpc_predict_p99_ms", "rest_predict_p50_ms",
                                         "rest_predict_p99_ms"}
    assert 0 < report["latency_ms"]["grpc_predict_p50_ms"] <= report["latency_ms"]["grpc_predict_p99_ms"]


def test_an_op_newer_than_the_release_is_named(tmp_path):
    class NewerDecoder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            return {"pixels": tf.map_fn(lambda data: tf.reduce_mean(tf.cast(tf.io.decode_jxl(data), tf.float32)),
                                        image_bytes, fn_output_signature=tf.float32)}

    module = NewerDecoder()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    report = validate(str(tmp_path), "m", RELEASE, latency_requests=1)
    assert report["reason"] == f"it uses ops TensorFlow Serving {RELEASE} does not register: DecodeJxl"


# The first output that differs is named: the label when the other weights pick another class for the record's image,
# else the scores (which other weights always change).
DIFFERENT_ANSWER = r"(label: \['\w+'\], expected \['\w+'\]|scores: differs by)"


@pytest.fixture
def mixed_up_model(image_module, good_model, tmp_path) -> str:
    """The graph and the Trainer's recorded answers of one model, the weights of another: an export gone wrong."""
    model = tmp_path / "model"
    shutil.copytree(good_model, model)
    other = export(image_module, tmp_path / "other", seed=2)
    shutil.rmtree(model / "variables")
    shutil.copytree(os.path.join(other, "variables"), model / "variables")
    return str(model)


@pytest.mark.e2e
def test_answers_unlike_the_trainer_s_are_refused_by_the_release_s_tensorflow(mixed_up_model):
    report = validate(mixed_up_model, "shapes", RELEASE, latency_requests=1)
    assert re.match(rf"TensorFlow {RELEASE}, warmup record 0 {DIFFERENT_ANSWER}", report["reason"]), report


@pytest.mark.e2e
def test_answers_unlike_the_trainer_s_are_refused_by_our_server(mixed_up_model, no_release_environment):
    report = validate(mixed_up_model, "shapes", RELEASE, latency_requests=1)
    assert report["checks"]["release_tensorflow"].startswith(f"skipped: no TensorFlow {RELEASE} environment")
    assert re.match(rf"gRPC Predict, warmup record 0 {DIFFERENT_ANSWER}", report["reason"]), report


@pytest.mark.e2e
def test_a_model_our_server_cannot_load_is_refused_with_its_log(good_model, tmp_path, no_release_environment):
    model = tmp_path / "model"
    shutil.copytree(good_model, model)
    (model / "variables" / "variables.index").write_bytes(b"not a checkpoint index")
    report = validate(str(model), "shapes", RELEASE, latency_requests=1)
    assert report["reason"].startswith("our model server could not load it; its log ends:"), report
    assert "file is too short to be an sstable" in report["reason"]  # TensorFlow's words for the broken index


def test_a_model_without_warmup_records_is_refused(image_module, tmp_path):
    head = build_head(image_module.feature_dim, len(LABELS), dict(configs.HYPERPARAMETERS))
    export_serving_model(image_module, head, LABELS, str(tmp_path))
    report = validate(str(tmp_path), "shapes", RELEASE, latency_requests=1)
    assert report["reason"] == ("the model carries no warmup records (assets.extra/tf_serving_warmup_requests) to "
                                "query it with")


def _artifact(kind, uri, **properties):
    artifact = kind()
    artifact.uri = str(uri)
    os.makedirs(uri, exist_ok=True)
    for name, value in properties.items():
        artifact.set_int_custom_property(name, value)
    return artifact


def test_the_infra_blessing_has_tfx_s_contract_and_gates_the_pusher(tmp_path):
    model = _artifact(standard_artifacts.Model, tmp_path / "model")
    not_blessed = _artifact(standard_artifacts.ModelBlessing, tmp_path / "evaluation", blessed=0)
    infra = _artifact(standard_artifacts.InfraBlessing, tmp_path / "infra")
    Executor().Do({"model": [model], "model_blessing": [not_blessed]}, {"blessing": [infra]},
                  {"model_name": "shapes", "serving_release": RELEASE})
    assert "INFRA_NOT_BLESSED" in os.listdir(infra.uri) and "INFRA_BLESSED" not in os.listdir(infra.uri)
    assert infra.get_int_custom_property("blessed") == 0
    assert infra.get_string_custom_property("reason") == "the Evaluator did not bless it"
    assert json.loads((tmp_path / "infra" / "serving_validation.json").read_text())["reason"]

    # TFX's own Pusher.CheckBlessing reads `blessed`: a model the Evaluator blessed but the check did not is not pushed.
    blessed = _artifact(standard_artifacts.ModelBlessing, tmp_path / "evaluation2", blessed=1)
    pushed = _artifact(standard_artifacts.PushedModel, tmp_path / "pushed")
    serving_dir = tmp_path / "serving"
    PusherExecutor().Do({"model": [model], "model_blessing": [blessed], "infra_blessing": [infra]},
                        {"pushed_model": [pushed]},
                        {"push_destination": json.dumps({"filesystem": {"base_directory": str(serving_dir)}})})
    assert pushed.get_int_custom_property("pushed") == 0 and not serving_dir.exists()
