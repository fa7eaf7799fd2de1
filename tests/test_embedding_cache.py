"""The embedding stage's sharded cache: reuse, exact new-image cost, crash safety, per-module folders, compaction.

The ImageEmbedder executor runs for real (Beam DirectRunner, the builtin module) on examples written here."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf
from image_fixtures import make_shapes_dataset
from tfx.types import artifact_utils, standard_artifacts

from components.image_embedder import cache as embedding_cache
from components.image_embedder.executor import Executor


def _examples_artifact(root, images: list) -> standard_artifacts.Examples:
    examples = standard_artifacts.Examples()
    examples.uri = str(root)
    examples.split_names = artifact_utils.encode_split_names(["train"])
    os.makedirs(root / "Split-train")
    with tf.io.TFRecordWriter(str(root / "Split-train" / "data.gz"), options="GZIP") as writer:
        for path in images:
            data = path.read_bytes()
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                "sha256": tf.train.Feature(bytes_list=tf.train.BytesList(value=[hashlib.sha256(data).hexdigest()
                                                                                .encode()])),
                "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.name.encode()])),
            })).SerializeToString())
    return examples


def _embed(tmp_path, name: str, examples, cache_dir) -> tuple[dict, dict]:
    output = standard_artifacts.Examples()
    output.uri = str(tmp_path / name)
    Executor().Do({"examples": [examples]}, {"embedded_examples": [output]},
                  {"module_handle": "efficientnet_lite0", "cache_dir": str(cache_dir), "batch_size": 4})
    counts = {key: output.get_int_custom_property(key) for key in ("embeddings_computed", "embeddings_cached")}
    files = tf.io.gfile.glob(os.path.join(output.uri, "Split-train", "*"))
    embeddings = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        features = tf.train.Example.FromString(record.numpy()).features.feature
        embeddings[features["path"].bytes_list.value[0].decode()] = np.array(features["embedding"].float_list.value)
    return counts, embeddings


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    written = make_shapes_dataset(root, n_per_class=4, classes=("circle", "square"), seed=11)
    return sorted(p for paths in written.values() for p in paths)


def test_cache_reuses_computes_only_new_images_and_ignores_a_crashed_runs_files(tmp_path, images, monkeypatch):
    cache_dir = tmp_path / "cache"
    first_images = images[:6]
    examples = _examples_artifact(tmp_path / "in1", first_images)

    # A crashed run's staged shard claims a (wrong) embedding for the first image: it must not be trusted.
    from image_retrain.image_module.loader import module_identity, resolve_handle

    cache = embedding_cache.ShardedEmbeddingCache(str(cache_dir), module_identity(resolve_handle("efficientnet_lite0")))
    crashed = cache.new_staging_prefix()
    tf.io.gfile.makedirs(os.path.dirname(crashed))
    with tf.io.TFRecordWriter(crashed + "-00000-of-00001" + embedding_cache.SHARD_SUFFIX) as writer:
        writer.write(embedding_cache.encode_entry(hashlib.sha256(first_images[0].read_bytes()).hexdigest(),
                                                  np.zeros(1280, np.float32)))

    counts, cold = _embed(tmp_path, "run1", examples, cache_dir)
    assert counts == {"embeddings_computed": 6, "embeddings_cached": 0}
    assert np.abs(cold[first_images[0].name]).sum() > 0
    assert len(cache.committed_shards()) >= 1

    counts, warm = _embed(tmp_path, "run2", examples, cache_dir)
    assert counts == {"embeddings_computed": 0, "embeddings_cached": 6}
    for name, embedding in cold.items():
        np.testing.assert_array_equal(warm[name], embedding)
    shards_before = cache.committed_shards()

    # Two new images cost two embeddings; with more shards than the limit the run also compacts the cache.
    monkeypatch.setattr(embedding_cache, "COMPACT_ABOVE_SHARDS", len(shards_before) - 1)
    counts, _ = _embed(tmp_path, "run3", _examples_artifact(tmp_path / "in3", images), cache_dir)
    assert counts == {"embeddings_computed": 2, "embeddings_cached": 6}
    compacted = cache.committed_shards()
    assert not set(compacted) & set(shards_before)  # the sets it read are gone, all entries are in the new set
    entries = {}
    for path in compacted:
        for record in tf.data.TFRecordDataset(path):
            sha, embedding = embedding_cache.decode_entry(record.numpy())
            entries[sha] = embedding
    assert len(entries) == 8

    counts, _ = _embed(tmp_path, "run4", _examples_artifact(tmp_path / "in4", images), cache_dir)
    assert counts == {"embeddings_computed": 0, "embeddings_cached": 8}
    # Only the module's own folder (plus the crashed run's staging, never read) is under the cache root.
    assert os.listdir(cache_dir) == [os.path.basename(cache.root)]
