"""Trainer module: hyperparameters, the bytes-in export (loadable as TF Serving loads it), augmentation, fine-tuning."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.image_module import load_image_module
from pipelines import configs
from pipelines.models import classifier

LABELS = ["circle", "square"]


def encoded(color, image_format="PNG", size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_module():
    return load_image_module("efficientnet_lite0")


@pytest.fixture
def examples_file(tmp_path):
    path = tmp_path / "Split-train" / "data.gz"
    path.parent.mkdir()
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for index in range(6):
            example = tf.train.Example(features=tf.train.Features(feature={
                "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[encoded((200, 30, 30) if index % 2 else (30, 30, 200), "JPEG" if index < 3 else "PNG")])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 2])),
            }))
            writer.write(example.SerializeToString())
    return [str(path.parent / "*")]


def test_hyperparameters_merge_over_defaults_and_reject_unknown_keys():
    merged = classifier.hyperparameters_from({"hyperparameters": {"epochs": "3", "dropout": 0.5}})
    assert merged["epochs"] == 3 and merged["dropout"] == 0.5
    assert merged["learning_rate"] == configs.HYPERPARAMETERS["learning_rate"]
    with pytest.raises(ValueError, match="unknown hyperparameters \\['epoch'\\]"):
        classifier.hyperparameters_from({"hyperparameters": {"epoch": 3}})


def test_export_loads_like_tf_serving_and_classifies_bytes(tmp_path, image_module):
    hp = dict(configs.HYPERPARAMETERS, hidden_units=8)
    head = classifier.build_head(image_module.feature_dim, len(LABELS), hp)
    export_dir = str(tmp_path / "export")
    classifier.export_serving_model(image_module, head, LABELS, export_dir)

    # TF Serving's C++ loader restores into a TF1 session and runs signatures by tensor name: so do we here.
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
        serving = meta_graph.signature_def["serving_default"]
        classify = meta_graph.signature_def["classify"]
        assert classify.method_name == "tensorflow/serving/classify"
        assert set(classify.inputs) == {"inputs"} and set(classify.outputs) == {"classes", "scores"}
        fetches = {key: serving.outputs[key].name for key in ("scores", "classes", "label")}
        images = [encoded((250, 0, 0), "JPEG"), encoded((0, 0, 250), "PNG", (300, 200)), encoded((0, 250, 0), "GIF")]
        outputs = session.run(fetches, {serving.inputs["image_bytes"].name: images})
    assert outputs["scores"].shape == (3, 2)
    np.testing.assert_allclose(outputs["scores"].sum(axis=1), 1.0, rtol=1e-5)
    assert [list(row) for row in outputs["classes"]] == [[b"circle", b"square"]] * 3
    assert all(label in (b"circle", b"square") for label in outputs["label"])
    assert (tmp_path / "export" / "assets" / "labels.txt").read_text().split() == LABELS


def _peak_rss_rise_bytes(run) -> int:
    """Peak RSS while `run()` runs minus RSS before (VmHWM is reset through /proc/self/clear_refs)."""
    def status_kb(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_kb("VmRSS")
    run()
    return (status_kb("VmHWM") - before) * 1024


def test_export_refuses_decompression_bombs_from_the_header_in_a_tf1_session(tmp_path, image_module):
    from image_fixtures import jpeg_header_bomb, png_bomb

    head = classifier.build_head(image_module.feature_dim, len(LABELS), dict(configs.HYPERPARAMETERS))
    export_dir = str(tmp_path / "export")
    classifier.export_serving_model(image_module, head, LABELS, export_dir)
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:  # loaded as TF Serving loads it
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
        serving = meta_graph.signature_def["serving_default"]
        feed, fetch = serving.inputs["image_bytes"].name, serving.outputs["scores"].name
        session.run(fetch, {feed: [encoded((250, 0, 0), "JPEG")]})  # warm
        def refused(bomb, size):
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match=f"Image of {size} .* larger than the limit of 100000000 pixels"):
                session.run(fetch, {feed: [bomb]})

        for bomb, size in ((png_bomb(), "23000x23000"), (jpeg_header_bomb(), "13000x13000")):
            # Decoded, these would be 1.6 GB and 0.5 GB of RGB.
            assert _peak_rss_rise_bytes(lambda: refused(bomb, size)) < 256 * 1024 * 1024  # noqa: B023 - run at once
        assert session.run(fetch, {feed: [encoded((0, 0, 250), "PNG")]}).shape == (1, 2)
    # The limit is the trainer's `max_image_pixels` custom_config (default components/image_limits.py).
    small_limit_dir = str(tmp_path / "small_limit")
    classifier.export_serving_model(image_module, head, LABELS, small_limit_dir, max_image_pixels=1000)
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        serving = tf.compat.v1.saved_model.loader.load(session, ["serve"], small_limit_dir).signature_def[
            "serving_default"]
        feed, fetch = serving.inputs["image_bytes"].name, serving.outputs["scores"].name
        assert session.run(fetch, {feed: [encoded((250, 0, 0), "PNG", (25, 40))]}).shape == (1, 2)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"Image of 40x30 \(1200 pixels to decode\) is "
                                                                r"larger than the limit of 1000 pixels"):
            session.run(fetch, {feed: [encoded((250, 0, 0), "PNG", (40, 30))]})


def test_augmented_copies_are_new_embeddings(examples_file, image_module):
    embeddings, labels = classifier.augmented_embeddings(examples_file, image_module, copies=2, flip=True, seed=1)
    assert embeddings.shape == (12, image_module.feature_dim) and list(labels) == [0, 1, 0, 1, 0, 1] * 2
    assert not np.allclose(embeddings[:6], embeddings[6:])  # every copy is drawn anew


def test_fine_tuning_updates_only_the_top_module_variables(examples_file, image_module):
    hp = dict(configs.HYPERPARAMETERS, fine_tune_variables=2, fine_tune_epochs=1, batch_size=3)
    head = classifier.build_head(image_module.feature_dim, len(LABELS), hp)
    module_variables = list(image_module.module.trainable_variables)
    before = [v.numpy().copy() for v in module_variables]
    summary = classifier.fine_tune(image_module, head, examples_file, examples_file, len(LABELS), hp)
    assert summary["variables"] == 2 and len(summary["epochs"]) == 1
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, module_variables)]
    assert not any(changed[:-2])  # the stem and lower blocks stay frozen
    assert np.isfinite(summary["epochs"][0]["loss"])
    # Kept weights are those of the best epoch: moved if fine-tuning improved eval accuracy, restored otherwise.
    improved = summary["best_eval_accuracy"] > summary["initial_eval_accuracy"]
    assert changed[-2:] == [improved, improved]
