"""`image-retrain batch-predict` on real pushed models: every image gets what the model's serving signature (and our
model server) answers for its bytes; JSONL and CSV read back with pandas; broken files land in the rejects with their
reason and the rest are predicted; --version and --label pick the version TF Serving would; a failed job leaves no
file behind; bad requests fail with a message saying what is wrong.

The models are the serving tests' tiny image classifier (tests/serving/model_fixtures.py: the served contract, the
project's decoding, mean colour -> label), pushed as versions by the pusher's own `publish`.
"""
from __future__ import annotations

import base64
import os
import sys

import pandas as pd
import pytest
import requests
import tensorflow as tf
from image_fixtures import png_bomb
from test_portable_runner import beam_services  # noqa: F401 - a fixture: Beam's job service and a worker pool

from components.atomic_pusher.executor import publish
from image_retrain import rollout
from pipelines.batch_predict import job
from pipelines.batch_predict.model_version import ModelVersion
from pipelines.batch_predict.predict_fn import PredictImagesFn
from pipelines.cli import main as cli
from serving.model_format import CLASSES_OUTPUT, IMAGE_BYTES_INPUT, LABEL_OUTPUT, PREDICT_SIGNATURE, SCORES_OUTPUT
from serving.process import model_server

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "serving"))
from model_fixtures import solid_image_bytes, write_image_classifier  # noqa: E402

MODEL = "colours"
COLOURS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1)}
PER_CLASS = 6


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> tuple[str, int, int]:
    """(base path, older, newer): the older version labels by colour, the newer has its labels the other way round,
    so the two answer differently; a staged rollout names the older stable and the newer canary."""
    root = tmp_path_factory.mktemp("batch_predict")
    base = str(root / "serving" / MODEL)
    older, newer = (int(publish(write_image_classifier(str(root / name), labels), base)[1])
                    for name, labels in (("v1", ("red", "green", "blue")), ("v2", ("blue", "green", "red"))))
    rollout.write(rollout.Rollout(MODEL, base, (older, newer), stable=older, canary=newer))
    return base, older, newer


@pytest.fixture(scope="module")
def base_path(pushed) -> str:
    return pushed[0]


def noise_jpeg() -> bytes:
    """A 64x64 JPEG of noise: most of its bytes are scan data, so its first half still holds the whole header."""
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder per class of small JPEGs and PNGs in shades of each colour, plus files no model should be fed:
    {path as listed: bytes} of the good ones, {path: reason code} of the bad ones, and the folder."""
    data = tmp_path_factory.mktemp("inputs") / "images"
    good, bad = {}, {}
    for label, unit in COLOURS.items():
        (data / label).mkdir(parents=True)
        for i in range(PER_CLASS):
            rgb = tuple(40 + 30 * i if c else 10 * i for c in unit)
            fmt, ext = ("JPEG", "jpg") if i % 2 else ("PNG", "png")
            path = f"{label}/{label}_{i}.{ext}"
            good[path] = solid_image_bytes(rgb, fmt, size=12 + i)
            (data / path).write_bytes(good[path])
    jpeg = noise_jpeg()
    broken = {"red/truncated.jpg": (jpeg[:len(jpeg) // 2], "undecodable"),  # its header reads, the decode fails
              "green/notes.jpg": (b"not an image at all\n", "unsupported_format"),
              "blue/empty.png": (b"", "empty_file"),
              "blue/bomb.png": (png_bomb(), "too_many_pixels"),  # 62 KB claiming 23000x23000: refused unread
              "stray.jpg": (jpeg, "not_in_class_folder")}  # ingestion's listing rule
    for path, (content, code) in broken.items():
        (data / path).write_bytes(content)
        bad[path] = code
    return str(data), good, bad


def signature_of(base: str, version: int):
    return tf.saved_model.load(os.path.join(base, str(version))).signatures[PREDICT_SIGNATURE]


def served_answer(signature, data: bytes) -> dict:
    outputs = signature(**{IMAGE_BYTES_INPUT: tf.constant([data])})
    return {"label": outputs[LABEL_OUTPUT].numpy()[0].decode(), "scores": outputs[SCORES_OUTPUT].numpy()[0],
            "classes": [c.decode() for c in outputs[CLASSES_OUTPUT].numpy()[0]]}


def assert_as_served(frame: pd.DataFrame, signature, good: dict, top_k: int) -> None:
    assert sorted(frame["path"]) == sorted(good)
    for row in frame.itertuples(index=False):
        expected = served_answer(signature, good[row.path])
        assert row.label_1 == expected["label"], row.path
        ranked = sorted(zip(expected["scores"], expected["classes"]), key=lambda pair: -pair[0])[:top_k]
        for rank, (score, label) in enumerate(ranked, start=1):
            assert getattr(row, f"label_{rank}") == label
            assert getattr(row, f"score_{rank}") == pytest.approx(float(score), abs=1e-6)


@pytest.fixture(scope="module")
def jsonl_run(base_path, images, tmp_path_factory):
    """One batch prediction of the folder with the default version, through the CLI."""
    data_dir, _, _ = images
    output = str(tmp_path_factory.mktemp("out") / "preds.jsonl")
    assert cli(["batch-predict", "--model-dir", base_path, "--data-dir", data_dir, "--output", output,
                "--batch-size", "4"]) == 0
    return output


def test_each_image_gets_the_newest_version_s_served_answer_and_broken_files_are_rejected(jsonl_run, pushed, images):
    base_path, _, newer = pushed
    _, good, bad = images
    frame = pd.read_json(jsonl_run, lines=True, dtype=False)
    assert list(frame.columns) == ["path", "given_label", "label_1", "score_1", "label_2", "score_2", "label_3",
                                   "score_3", "model", "version"]
    assert set(frame["model"]) == {MODEL} and set(frame["version"]) == {newer}
    assert_as_served(frame, signature_of(base_path, newer), good, top_k=3)
    assert all(row.given_label == row.path.split("/")[0] for row in frame.itertuples())
    # The newer version's labels are the other way round: red images are "blue" to it.
    assert set(frame[frame["given_label"] == "red"]["label_1"]) == {"blue"}

    rejects = pd.read_json(jsonl_run.replace(".jsonl", ".rejects.jsonl"), lines=True, dtype=False)
    assert list(rejects.columns) == ["path", "given_label", "reason"]
    assert {row.path: row.reason.split(":")[0] for row in rejects.itertuples()} == bad
    truncated = rejects.set_index("path").loc["red/truncated.jpg"]
    assert truncated.given_label == "red" and "the model cannot decode it" in truncated.reason
    assert sorted(os.listdir(os.path.dirname(jsonl_run))) == ["preds.jsonl", "preds.rejects.jsonl"]  # no leftovers


@pytest.mark.timeout(120)
def test_the_answers_are_our_model_server_s_over_rest_and_grpc(jsonl_run, base_path, images):
    from serving.grpc_client import GrpcClient

    _, good, _ = images
    frame = pd.read_json(jsonl_run, lines=True, dtype=False).set_index("path")
    paths = sorted(good)[::3]
    with model_server(f"--model_name={MODEL}", f"--model_base_path={base_path}") as server:
        for path in paths:
            body = {"instances": [{"b64": base64.b64encode(good[path]).decode()}]}
            response = requests.post(f"{server.rest_url}/v1/models/{MODEL}:predict", json=body, timeout=30)
            (answer,) = response.json()["predictions"]
            assert frame.loc[path, "label_1"] == answer["label"]
            assert frame.loc[path, "score_1"] == pytest.approx(max(answer["scores"]), abs=1e-6)
        client = GrpcClient(server.grpc_address)
        try:
            answers = client.predict_images(MODEL, [good[path] for path in paths], top_k=3)
        finally:
            client.close()
    for path, answer in zip(paths, answers):
        assert [frame.loc[path, f"label_{rank}"] for rank in (1, 2, 3)] == [label for label, _ in answer.top_k]
        assert [frame.loc[path, f"score_{rank}"] for rank in (1, 2, 3)] == pytest.approx(
            [score for _, score in answer.top_k], abs=1e-6)


def test_a_manifest_to_csv_with_the_stable_label(pushed, images, tmp_path):
    """A manifest with no label column: no given_label; --label stable is the older version; --top-k 2 gives two
    columns."""
    base_path, older, _ = pushed
    data_dir, good, _ = images
    manifest = os.path.join(os.path.dirname(data_dir), "unlabelled.csv")  # beside the folder: not one of its files
    listed = {f"images/{path}": data for path, data in good.items()}
    pd.DataFrame({"path": sorted(listed)}).to_csv(manifest, index=False)
    output = str(tmp_path / "preds.csv")
    outcome = job.run(base_path, output, manifest=manifest, label="stable", top_k=2, batch_size=5)
    assert (outcome.model.version, outcome.predicted, outcome.rejected) == (older, len(good), 0)
    frame = pd.read_csv(output)
    assert list(frame.columns) == ["path", "label_1", "score_1", "label_2", "score_2", "model", "version"]
    assert set(frame["version"]) == {older}
    assert_as_served(frame, signature_of(base_path, older), listed, top_k=2)
    assert all(row.label_1 == row.path.split("/")[1] for row in frame.itertuples())  # the older labels by colour
    assert list(pd.read_csv(tmp_path / "preds.rejects.csv").columns) == ["path", "reason"]


def test_batches_split_by_their_pixel_budget_lose_no_image(pushed, images):
    """With a budget smaller than any image, every image runs alone: the same answers."""
    base_path, older, _ = pushed
    data_dir, good, _ = images
    from pipelines.batch_predict.listing import list_images

    listing = list_images(data_dir=data_dir)
    model = ModelVersion(MODEL, older, os.path.join(base_path, str(older)))
    predict = PredictImagesFn(model, 1, True, max_batch_pixels=1)
    predict.setup()
    frame = pd.DataFrame(list(predict.process([c for c in listing.candidates if c.path in good])))
    assert len(frame) == len(good) and set(frame["version"]) == {older}
    assert_as_served(frame, signature_of(base_path, older), good, top_k=1)


def test_a_failed_job_leaves_the_previous_output_untouched_and_nothing_else(tmp_path, images):
    data_dir, _, _ = images
    base = tmp_path / "serving" / "broken"
    (base / "4").mkdir(parents=True)
    (base / "4" / "saved_model.pb").write_bytes(b"not a SavedModel")  # complete by name, unloadable
    out = tmp_path / "out"
    out.mkdir()
    (out / "preds.jsonl").write_text('{"path": "from the last run"}\n')
    with pytest.raises(OSError, match="Cannot parse file"):  # in the DoFn's setup, once the job runs
        job.run(str(base), str(out / "preds.jsonl"), data_dir=data_dir)
    assert os.listdir(out) == ["preds.jsonl"]
    assert (out / "preds.jsonl").read_text() == '{"path": "from the last run"}\n'


def test_bad_requests_say_what_is_wrong(pushed, images, tmp_path, capsys):
    base_path, older, newer = pushed
    data_dir, _, _ = images
    output = str(tmp_path / "preds.jsonl")
    (tmp_path / "empty" / "3").mkdir(parents=True)  # a version folder with no saved_model.pb
    cases = [
        (dict(model_dir=str(tmp_path / "nowhere")), "no model directory"),
        (dict(model_dir=str(tmp_path / "empty")), "holds no complete version"),
        (dict(model_dir=os.path.join(base_path, str(older))), "is a version folder: give --model-dir its parent"),
        (dict(model_dir=base_path, label="beta"),
         rf"unknown label 'beta' .*stable \(version {older}\), canary \(version {newer}\)"),
        (dict(model_dir=str(tmp_path / "empty"), label="stable"), "unknown label 'stable': .* has no version labels"),
        (dict(model_dir=base_path, version=7), f"version 7 is not a complete version .* versions: {older}, {newer}"),
        (dict(model_dir=base_path, output=str(tmp_path / "preds.txt")), "unsupported output extension '.txt'"),
        (dict(model_dir=base_path, top_k=0), "--top-k and --batch-size must be at least 1"),
        (dict(model_dir=base_path, data_dir=str(tmp_path / "no images")), "does not exist or is not a directory"),
        (dict(model_dir=base_path, data_dir=None, manifest=str(tmp_path / "none.csv")), "does not exist"),
    ]
    for arguments, message in cases:
        request = {"output": output, "data_dir": data_dir, **arguments}
        with pytest.raises(ValueError, match=message):
            job.run(request.pop("model_dir"), request.pop("output"), **request)
    assert cli(["batch-predict", "--model-dir", base_path, "--data-dir", data_dir, "--output",
                str(tmp_path / "preds.parquet")]) == 2
    assert "unsupported output extension '.parquet'" in capsys.readouterr().err
    assert not os.path.exists(output)


def test_on_beam_s_portable_runner_the_answers_are_the_direct_runner_s(jsonl_run, base_path, images, tmp_path,
                                                                       beam_services):  # noqa: F811
    """The Fn API protocol Flink, Spark and Dataflow workers speak: the DoFn runs in an EXTERNAL worker pool's
    process, loads the model there, and the output is the DirectRunner's, row for row."""
    data_dir, good, bad = images
    output = str(tmp_path / "preds.jsonl")
    outcome = job.run(base_path, output, data_dir=data_dir, batch_size=4, beam_args=beam_services)
    assert (outcome.predicted, outcome.rejected) == (len(good), len(bad))
    portable = pd.read_json(output, lines=True, dtype=False).sort_values("path", ignore_index=True)
    direct = pd.read_json(jsonl_run, lines=True, dtype=False).sort_values("path", ignore_index=True)
    pd.testing.assert_frame_equal(portable, direct)


@pytest.mark.e2e
def test_a_model_the_trainer_exported_answers_as_its_signature(images, tmp_path):
    """The builtin EfficientNet-Lite0 with a tiny head, exported by the trainer's own export_serving_model (LiteRT
    file, warmup records and all) and pushed: batch-predict gives its signature's answers."""
    from image_retrain.image_module import load_image_module
    from pipelines import configs
    from pipelines.models.head import build_head
    from pipelines.models.saved_model_export import export_serving_model

    data_dir, good, _ = images
    module = load_image_module("efficientnet_lite0")
    tf.keras.utils.set_random_seed(1)
    head = build_head(module.feature_dim, len(COLOURS), dict(configs.HYPERPARAMETERS, hidden_units=8))
    export_serving_model(module, head, sorted(COLOURS), str(tmp_path / "export"), warmup_images=list(good.values())[:2])
    base = str(tmp_path / "serving" / "lite0")
    version = int(publish(str(tmp_path / "export"), base)[1])
    outcome = job.run(base, str(tmp_path / "preds.csv"), data_dir=data_dir, batch_size=8)
    assert (outcome.model.version, outcome.predicted) == (version, len(good))
    assert_as_served(pd.read_csv(tmp_path / "preds.csv"), signature_of(base, version), good, top_k=3)
