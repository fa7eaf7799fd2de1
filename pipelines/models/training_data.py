"""The Trainer's inputs: the embedded Examples artifact's vocabulary, cached embeddings and images, as arrays and
tf.data pipelines."""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

from image_retrain.contract import EMBEDDING_KEY, IMAGE_KEY, LABEL_KEY
from image_retrain.image_decoding import decode_rgb, to_model_input
from image_retrain.ingestion_files import read_label_vocabulary
from pipelines.models.augment import augment


def read_vocabulary(examples_uri: str) -> list[str]:
    labels = read_label_vocabulary(examples_uri)
    if len(labels) < 2:
        raise ValueError(f"need at least two classes to train, found {labels} in {examples_uri}")
    return labels


def examples_uri(file_patterns: list[str]) -> str:
    # Trainer file patterns are <examples uri>/Split-<name>/*; the vocabulary sits at the artifact's root.
    return os.path.dirname(os.path.dirname(file_patterns[0]))


def example_files(file_patterns: list[str]) -> list[str]:
    files = [f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)]
    if not files:
        raise ValueError(f"no example files match {file_patterns}")
    return files


def embedding_dim(file_patterns: list[str]) -> int:
    """The embedding length the ImageEmbedder wrote, read from the first example."""
    for record in tf.data.TFRecordDataset(example_files(file_patterns)[:1], compression_type="GZIP").take(1):
        return len(tf.train.Example.FromString(record.numpy()).features.feature[EMBEDDING_KEY].float_list.value)
    raise ValueError(f"no examples in {file_patterns}")


def load_embeddings(file_patterns: list[str], feature_dim: int) -> tuple[np.ndarray, np.ndarray]:
    spec = {EMBEDDING_KEY: tf.io.FixedLenFeature([feature_dim], tf.float32),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    dataset = tf.data.TFRecordDataset(example_files(file_patterns), compression_type="GZIP").batch(1024).map(
        lambda records: tf.io.parse_example(records, spec))
    embeddings, labels = [], []
    for batch in dataset:
        embeddings.append(batch[EMBEDDING_KEY].numpy())
        labels.append(batch[LABEL_KEY].numpy())
    if not embeddings:
        raise ValueError(f"no examples in {file_patterns}")
    return np.concatenate(embeddings), np.concatenate(labels)


def image_dataset(file_patterns: list[str]) -> tf.data.Dataset:
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string), LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    return tf.data.TFRecordDataset(example_files(file_patterns), compression_type="GZIP").map(
        lambda record: tf.io.parse_single_example(record, spec))


def decoded_images(file_patterns: list[str]) -> tf.data.Dataset:
    """(uint8 [H, W, 3], label) per example, decoded once and kept in memory: every epoch reuses them."""
    return image_dataset(file_patterns).map(lambda e: (decode_rgb(e[IMAGE_KEY]), e[LABEL_KEY]),
                                            num_parallel_calls=tf.data.AUTOTUNE).cache()


def model_inputs(images: tf.data.Dataset, size: tuple[int, int], batch_size: int, hp: dict[str, Any] | None = None,
                 seed: int = 0) -> tf.data.Dataset:
    """Batches of (float32 [B, h, w, 3], labels): augmented with `hp` when given (a fresh draw per `seed`), else
    the plain resize the exported model applies."""
    if hp is None:
        batches = images.map(lambda image, label: (to_model_input(image, size), label),
                             num_parallel_calls=tf.data.AUTOTUNE)
    else:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        batches = tf.data.Dataset.zip(images, seeds).map(
            lambda pair, pair_seed: (augment(pair[0], size, pair_seed, hp), pair[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    return batches.batch(batch_size).prefetch(2)


def embed_images(file_patterns: list[str], image_module, hp: dict[str, Any] | None = None,
                 copies: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings computed now at the module's current input size: of the images as served (hp None), or of
    `copies` augmented draws of every image (never cached: each copy is new)."""
    images = decoded_images(file_patterns)
    embeddings, labels = [], []
    for copy in range(copies if hp is not None else 1):
        for batch, batch_labels in model_inputs(images, image_module.input_size, 32, hp,
                                                seed=(hp or {}).get("seed", 0) * 1000 + copy):
            embeddings.append(image_module(batch).numpy())
            labels.append(batch_labels.numpy())
    return np.concatenate(embeddings), np.concatenate(labels)


def held_out_images(file_patterns: list[str], count: int = 4) -> list[bytes]:
    """The first `count` encoded images of a split the model did not train on (the warmup records' images)."""
    return [example[IMAGE_KEY].numpy() for example in image_dataset(file_patterns).take(count)]
