"""Warm start: a retraining continues the model the servers serve (the Trainer's `base_model`: the version under
the serving base path, or locally the latest blessed model) instead of starting again from the ImageNet module.

It applies when that model answers over the same classes and the module is fine-tuned (a frozen module's head trains
in seconds anyway). The module's and the head's weights come from the base model's SavedModel, the image size too;
then `warm_start_epochs` of fine-tuning on the training images new to it (their embeddings were computed in this run:
contract.EMBEDDING_CACHED_KEY) and a replay sample of the others (`replay_fraction` of them, at least as many as there
are new ones), so the cost follows what arrived and what the model knew is kept. The test split and the blessing are
unchanged: the Evaluator still compares the result with the same baseline.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from image_retrain.contract import EMBEDDING_CACHED_KEY
from image_retrain.ingestion_files import read_labels_file
from pipelines.models.head import build_head
from pipelines.models.image_size import with_input_size
from pipelines.models.training_data import example_files
from serving import versions
from serving.model_format import LABELS_ASSET


def base_to_continue(base_model_dir: str | None, labels: list[str], hp: dict[str, Any]) -> tuple[str | None, str]:
    """(the SavedModel to continue, or None; why), in the words the run summary shows."""
    if hp["from_scratch"]:
        return None, "from_scratch is set"
    if hp["fine_tune_variables"] == 0:
        return None, "the module is frozen (fine_tune_variables 0): its head trains in seconds from scratch"
    if not base_model_dir or not versions.is_complete(base_model_dir):
        return None, "no model has been blessed or served yet"
    base_labels = read_labels_file(os.path.join(base_model_dir, LABELS_ASSET))
    if base_labels != labels:
        return None, f"the class list changed ({len(base_labels)} classes before, {len(labels)} now)"
    return base_model_dir, "the classes are those of the model it continues"


def restore(base_model_dir: str, image_module, num_classes: int, hp: dict[str, Any]):
    """(image module, Keras head) holding the base model's weights, at its input size; ValueError when its module is
    not this one (other variables)."""
    base = tf.saved_model.load(base_model_dir)
    (spec,) = base.network.concrete_functions[0].structured_input_signature[0]
    image_module = with_input_size(image_module, int(spec.shape[1]))
    source, target = base.image_module.variables, image_module.module.variables
    if [v.shape for v in source] != [v.shape for v in target]:
        raise ValueError("its image module is not this run's (other variables)")
    for variable, value in zip(target, source):
        variable.assign(value)
    kernels, biases = base.head.kernels, base.head.biases
    head = build_head(image_module.feature_dim, num_classes,
                      dict(hp, hidden_units=int(kernels[0].shape[1]) if len(kernels) == 2 else 0))
    dense = [layer for layer in head.layers if layer.__class__.__name__ == "Dense"]
    for layer, kernel, bias in zip(dense, kernels, biases):
        layer.set_weights([kernel.numpy(), bias.numpy()])
    return image_module, head


def training_subset(train_files: list[str], hp: dict[str, Any], path: str) -> tuple[str, int, int]:
    """Writes the new training examples and a replay sample of the others to `path` (a gzipped TFRecord file);
    returns (its file pattern, new, replayed)."""
    spec = {EMBEDDING_CACHED_KEY: tf.io.FixedLenFeature([], tf.int64, default_value=0)}
    new, old = [], []
    for record in tf.data.TFRecordDataset(example_files(train_files), compression_type="GZIP"):
        seen = int(tf.io.parse_single_example(record, spec)[EMBEDDING_CACHED_KEY])
        (old if seen else new).append(record.numpy())
    replay = min(len(old), max(len(new), round(hp["replay_fraction"] * len(old))))
    chosen = new + [old[i] for i in sorted(np.random.RandomState(hp["seed"]).choice(len(old), replay, replace=False))]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for record in chosen:
            writer.write(record)
    return path, len(new), replay
