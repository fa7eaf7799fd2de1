"""Warm start: which base model a retraining may continue and why not, its weights restored exactly, and the training
subset of new images plus a replay sample of the others."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from image_retrain.contract import EMBEDDING_CACHED_KEY, LABEL_KEY
from image_retrain.image_decoding import preprocess_batch
from image_retrain.image_module import load_image_module
from pipelines import configs
from pipelines.models import warm_start
from pipelines.models.head import build_head
from pipelines.models.saved_model_export import export_serving_model

LABELS = ["blue", "red"]
HP = dict(configs.HYPERPARAMETERS)


def png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    module = load_image_module(configs.MODULE_HANDLE)
    tf.keras.utils.set_random_seed(3)
    head = build_head(module.feature_dim, len(LABELS), dict(HP, hidden_units=8))
    path = str(tmp_path_factory.mktemp("base") / "1")
    export_serving_model(module, head, LABELS, path)
    return path


def test_which_model_is_continued_and_why_not(base_model):
    assert warm_start.base_to_continue(base_model, LABELS, HP) == (
        base_model, "the classes are those of the model it continues")
    assert warm_start.base_to_continue(base_model, LABELS + ["green"], HP) == (
        None, "the class list changed (2 classes before, 3 now)")
    assert warm_start.base_to_continue(None, LABELS, HP) == (None, "no model has been blessed or served yet")
    assert warm_start.base_to_continue(base_model, LABELS, dict(HP, from_scratch=True)) == (None, "from_scratch is set")
    assert warm_start.base_to_continue(base_model, LABELS, dict(HP, fine_tune_variables=0))[1].startswith(
        "the module is frozen")


def test_restored_weights_answer_as_the_base_model_does(base_model):
    module, head = warm_start.restore(base_model, load_image_module(configs.MODULE_HANDLE), len(LABELS), HP)
    images = [png((200, 30, 30)), png((30, 30, 200))]
    served = tf.saved_model.load(base_model).signatures["serving_default"](image_bytes=tf.constant(images))
    restored = head(module(preprocess_batch(tf.constant(images), module.input_size)), training=False)
    np.testing.assert_allclose(restored.numpy(), served["scores"].numpy(), atol=1e-5)
    assert [layer.units for layer in head.layers if hasattr(layer, "units")] == [8, len(LABELS)]  # its hidden layer


def test_the_subset_is_the_new_images_and_a_replay_sample_of_the_others(tmp_path):
    source = tmp_path / "Split-train" / "data.gz"
    source.parent.mkdir()
    with tf.io.TFRecordWriter(str(source), options="GZIP") as writer:
        for index in range(50):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
                EMBEDDING_CACHED_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(index >= 3)])),
            })).SerializeToString())
    path, new, replayed = warm_start.training_subset([str(source.parent / "*")], dict(HP, replay_fraction=0.1),
                                                     str(tmp_path / "subset" / "data.gz"))
    assert (new, replayed) == (3, 5)  # 10 % of the 47 seen before (at least as many as the 3 new ones)
    labels = [int(tf.train.Example.FromString(r.numpy()).features.feature[LABEL_KEY].int64_list.value[0])
              for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
    assert labels[:3] == [0, 1, 2] and len(set(labels)) == 8 and all(label >= 3 for label in labels[3:])
