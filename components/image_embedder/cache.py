"""Embedding cache: sharded TFRecord files of (image sha256, embedding), one folder per module identity.

Layout: `<cache_dir>/<module identity>/embeddings-<run>-<shard>.tfrecord`, each record a tf.train.Example with
`sha256` and `embedding` (raw little-endian float32) as bytes. The embedding stage reads a module's shards inside Beam
and joins them with the incoming examples by sha256, so a run's cache I/O is one read per shard and one write per new
shard, the same on local disk, a volume or object storage (tf.io.gfile), where one file per image would cost a round
trip per image.

A run writes the embeddings it computed under a staging folder, and only after its Beam pipeline succeeded moves
them to committed names; readers list committed names only, so a crashed run never leaves an entry anyone trusts.
Different modules never share entries (the folder is the module's content identity). When a module's folder holds
more than COMPACT_ABOVE_SHARDS shards, the run rewrites every entry into one new set and removes the sets it read.
"""
from __future__ import annotations

import os
import uuid

import numpy as np
import tensorflow as tf

from image_retrain.contract import EMBEDDING_KEY, SHA256_KEY

SHARD_PREFIX = "embeddings-"
SHARD_SUFFIX = ".tfrecord"  # uncompressed: float32 embeddings barely compress, and gzip doubled lookup time
STAGING_PREFIX = ".staging-"
COMPACT_ABOVE_SHARDS = 64
EMBEDDING_DTYPE = np.dtype("<f4")


def _safe_component(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:96]


def encode_entry(sha256: str, embedding: np.ndarray) -> bytes:
    # The embedding as raw little-endian float32 bytes: decoding a float list element by element costs ~10x more.
    return tf.train.Example(features=tf.train.Features(feature={
        SHA256_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[sha256.encode()])),
        EMBEDDING_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[np.asarray(embedding, EMBEDDING_DTYPE).tobytes()])),
    })).SerializeToString()


def decode_entry(record: bytes) -> tuple[str, np.ndarray]:
    features = tf.train.Example.FromString(record).features.feature
    return (features[SHA256_KEY].bytes_list.value[0].decode(),
            np.frombuffer(features[EMBEDDING_KEY].bytes_list.value[0], dtype=EMBEDDING_DTYPE))


class ShardedEmbeddingCache:
    def __init__(self, cache_dir: str, module_identity: str):
        self.root = os.path.join(cache_dir, _safe_component(module_identity))

    def committed_shards(self) -> list[str]:
        """The shards a run may read: committed names only (staging folders hold unfinished runs' files)."""
        return sorted(tf.io.gfile.glob(os.path.join(self.root, f"{SHARD_PREFIX}*{SHARD_SUFFIX}")))

    def new_staging_prefix(self) -> str:
        """Where a run's Beam sink writes; `commit` moves what is there into place."""
        return os.path.join(self.root, f"{STAGING_PREFIX}{uuid.uuid4().hex}", "part")

    def commit(self, staging_prefix: str) -> list[str]:
        """Moves a finished run's shards to committed names (each file appears whole: readers see all or none of it)."""
        staging_dir = os.path.dirname(staging_prefix)
        run = os.path.basename(staging_dir)[len(STAGING_PREFIX):]
        committed = []
        for index, path in enumerate(sorted(tf.io.gfile.glob(staging_prefix + "*"))):
            target = os.path.join(self.root, f"{SHARD_PREFIX}{run}-{index:05d}{SHARD_SUFFIX}")
            tf.io.gfile.rename(path, target, overwrite=True)
            committed.append(target)
        if tf.io.gfile.exists(staging_dir):
            tf.io.gfile.rmtree(staging_dir)
        return committed

    @staticmethod
    def remove(shards: list[str]) -> None:
        for path in shards:
            tf.io.gfile.remove(path)
