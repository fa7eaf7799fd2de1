"""Embeds every example's image with the pretrained module, reusing cached embeddings.

Output examples keep every input feature and add `embedding` (float list): the trainer learns the head on it, while
TFMA and the report still see `image_raw` and evaluate the exported model end to end on raw bytes.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any, Iterable

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from components.image_embedder.cache import EmbeddingCache

EMBEDDING_FEATURE = "embedding"
IMAGE_FEATURE = "image_raw"
SHA256_FEATURE = "sha256"
PATH_FEATURE = "path"
OUTPUT_FILE_PREFIX = "data_tfrecord"
# "auto": the module on LiteRT when its conversion passes the probe check, else TF; "tensorflow": always TF.
ENGINE_AUTO, ENGINE_TENSORFLOW = "auto", "tensorflow"
ENGINES = (ENGINE_AUTO, ENGINE_TENSORFLOW)
COPIED_INPUT_FILES = ("labels.txt", "rejects.csv", "rejects.json")  # ingestion's vocabulary and rejects travel along

COMPUTED = beam.metrics.Metrics.counter("image_embedder", "embeddings_computed")
CACHED = beam.metrics.Metrics.counter("image_embedder", "embeddings_cached")
FAILED = beam.metrics.Metrics.counter("image_embedder", "embedding_failures")
COMPUTE_MS = beam.metrics.Metrics.counter("image_embedder", "embedding_compute_ms")  # decode+resize+module only
LOAD_MS = beam.metrics.Metrics.counter("image_embedder", "module_load_ms")

logger = logging.getLogger(__name__)


def _bytes_feature(example: tf.train.Example, name: str) -> bytes:
    values = example.features.feature[name].bytes_list.value
    return values[0] if values else b""


class EmbedImages(beam.DoFn):
    """Batch of serialized tf.Examples -> the same examples plus `embedding`, computing only cache misses."""

    def __init__(self, module_handle: str, module_identity: str, cache_dir: str | None, show_progress: bool = True,
                 litert_model_path: str | None = None):
        self._module_handle = module_handle
        self._module_identity = module_identity
        self._litert_model_path = litert_model_path  # checked conversion of the module; None: run it on TF
        self._cache_dir = cache_dir
        self._show_progress = show_progress

    def setup(self):
        self._embed = None  # the module is loaded on the first cache miss: a fully cached run never loads it
        self._cache = EmbeddingCache(self._cache_dir, self._module_identity) if self._cache_dir else None
        self._progress = None
        if self._show_progress:
            from tqdm import tqdm

            self._progress = tqdm(desc="embedding", unit="img", dynamic_ncols=True, mininterval=1.0)

    def _load_module(self):
        """Sets self._embed: encoded images (string tensor) -> float32 [B, features] numpy. Decode and resize run in
        TF either way; the module runs on LiteRT when the executor found a checked conversion."""
        from components.image_decoding import preprocess_batch

        if self._litert_model_path:
            from components.image_module.litert import LiteRTImageModule

            engine = LiteRTImageModule(self._litert_model_path)
            preprocess = tf.function(lambda image_bytes: preprocess_batch(image_bytes, engine.input_size),
                                     input_signature=[tf.TensorSpec([None], tf.string)])
            self._embed = lambda image_bytes: engine(preprocess(image_bytes).numpy())
            return
        from components.image_module import load_image_module

        module = load_image_module(self._module_handle)
        size = module.input_size

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def embed(image_bytes):
            return module(preprocess_batch(image_bytes, size))

        self._embed = lambda image_bytes: embed(image_bytes).numpy()

    def _embed_or_skip(self, images: list[bytes], paths: list[str]) -> list[np.ndarray | None]:
        if self._embed is None:
            started = time.perf_counter()
            self._load_module()
            with contextlib.suppress(tf.errors.InvalidArgumentError):  # a bad first image is handled below
                self._embed(tf.constant(images[:1]))  # trace now, so compute time below is steady-state work
            LOAD_MS.inc(int((time.perf_counter() - started) * 1000))
        started = time.perf_counter()
        try:
            return list(self._embed(tf.constant(images)))
        except tf.errors.InvalidArgumentError:
            # One undecodable image fails the whole batch; redo it image by image so only that one is dropped.
            results = []
            for image, path in zip(images, paths):
                try:
                    results.append(self._embed(tf.constant([image]))[0])
                except tf.errors.InvalidArgumentError as error:
                    FAILED.inc()
                    logger.warning("embedding skipped %s: %s", path, error.message.splitlines()[0])
                    results.append(None)
            return results
        finally:
            COMPUTE_MS.inc(int((time.perf_counter() - started) * 1000))

    def process(self, batch: list[tuple[str, bytes]]) -> Iterable[tuple[str, bytes]]:
        splits = [split for split, _ in batch]
        examples = [tf.train.Example.FromString(serialized) for _, serialized in batch]
        embeddings: list[np.ndarray | None] = [None] * len(examples)
        missing = []
        for index, example in enumerate(examples):
            sha = _bytes_feature(example, SHA256_FEATURE).decode()
            cached = self._cache.get(sha) if (self._cache and sha) else None
            if cached is not None:
                embeddings[index] = cached
            else:
                missing.append(index)
        CACHED.inc(len(examples) - len(missing))
        if missing:
            computed = self._embed_or_skip(
                [_bytes_feature(examples[i], IMAGE_FEATURE) for i in missing],
                [_bytes_feature(examples[i], PATH_FEATURE).decode(errors="replace") for i in missing])
            for index, embedding in zip(missing, computed):
                if embedding is None:
                    continue
                embeddings[index] = embedding
                COMPUTED.inc()
                sha = _bytes_feature(examples[index], SHA256_FEATURE).decode()
                if self._cache and sha:
                    self._cache.put(sha, embedding)
        if self._progress is not None:
            self._progress.update(len(examples))
        for split, example, embedding in zip(splits, examples, embeddings):
            if embedding is None:
                continue
            example.features.feature[EMBEDDING_FEATURE].float_list.value[:] = embedding.astype(np.float32).tolist()
            yield split, example.SerializeToString()

    def teardown(self):
        if getattr(self, "_progress", None) is not None:
            self._progress.close()


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        embedded = artifact_utils.get_single_instance(output_dict["embedded_examples"])
        splits = artifact_utils.decode_split_names(examples.split_names)
        embedded.split_names = artifact_utils.encode_split_names(splits)
        module_handle = exec_properties["module_handle"]
        cache_dir = exec_properties.get("cache_dir") or None
        batch_size = int(exec_properties.get("batch_size") or 32)
        engine = exec_properties.get("engine") or ENGINE_AUTO
        if engine not in ENGINES:
            raise ValueError(f"unknown embedding engine {engine!r}; choose one of {ENGINES}")

        # The module's identity (a content hash) is computed once here and keys the cache in every worker, whichever
        # engine computes an entry (see components/image_module/litert.py for why).
        from components.image_module.litert import litert_module_path
        from components.image_module.loader import module_identity, resolve_handle

        identity = module_identity(resolve_handle(module_handle))
        # Converted and probe-checked here, once, so that workers only load the result.
        litert_path = litert_module_path(module_handle) if engine == ENGINE_AUTO else None
        engine_used = "litert" if litert_path else "tensorflow"
        started = time.time()
        with self._make_beam_pipeline() as pipeline:
            # One embedding transform over all splits, so each worker loads the module once, not once per split.
            tagged = [
                pipeline
                | f"Read[{split}]" >> beam.io.ReadFromTFRecord(
                    os.path.join(artifact_utils.get_split_uri([examples], split), "*"),
                    coder=beam.coders.BytesCoder())
                | f"Tag[{split}]" >> beam.Map(lambda record, split=split: (split, record))
                for split in splits
            ]
            embedded_by_split = (
                tagged
                | "Flatten" >> beam.Flatten()
                | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
                | "Embed" >> beam.ParDo(EmbedImages(module_handle, identity, cache_dir,
                                                    litert_model_path=litert_path))
                | "BySplit" >> beam.Partition(lambda item, count: splits.index(item[0]), len(splits))
            )
            for split, records in zip(splits, embedded_by_split):
                _ = (
                    records
                    | f"Untag[{split}]" >> beam.Map(lambda item: item[1])
                    | f"Write[{split}]" >> beam.io.WriteToTFRecord(
                        os.path.join(artifact_utils.get_split_uri([embedded], split), OUTPUT_FILE_PREFIX),
                        file_name_suffix=".gz")
                )
        result = pipeline.result
        counts = {name: _counter_total(result, name)
                  for name in ("embeddings_computed", "embeddings_cached", "embedding_failures",
                               "embedding_compute_ms", "module_load_ms")}
        elapsed = time.time() - started
        total = counts["embeddings_computed"] + counts["embeddings_cached"]
        logger.info("Embedding stage: %d computed, %d from cache, %d failed, %.1f s (%.1f images/s overall)",
                    counts["embeddings_computed"], counts["embeddings_cached"], counts["embedding_failures"],
                    elapsed, total / elapsed if elapsed else 0.0)
        print(f"[embed] {counts['embeddings_computed']} embeddings computed on {engine_used}, "
              f"{counts['embeddings_cached']} reused from cache, {counts['embedding_failures']} failed "
              f"({elapsed:.1f} s: module load "
              f"{counts['module_load_ms'] / 1000:.1f} s, embedding {counts['embedding_compute_ms'] / 1000:.1f} s)",
              flush=True)
        for name in ("embeddings_computed", "embeddings_cached", "embedding_failures"):
            embedded.set_int_custom_property(name, counts[name])
        embedded.set_string_custom_property("module_handle", module_handle)
        for name in COPIED_INPUT_FILES:
            source = os.path.join(examples.uri, name)
            if tf.io.gfile.exists(source):
                tf.io.gfile.copy(source, os.path.join(embedded.uri, name), overwrite=True)
        with tf.io.gfile.GFile(os.path.join(embedded.uri, "embedding_counts.json"), "w") as f:
            f.write(json.dumps({**counts, "seconds": round(elapsed, 3), "module_handle": module_handle,
                               "engine": engine_used}))


def _counter_total(result, name: str) -> int:
    query = result.metrics().query(beam.metrics.MetricsFilter().with_name(name))
    return int(sum(counter.committed or counter.attempted or 0 for counter in query["counters"]))
