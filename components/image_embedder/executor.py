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
import uuid
from typing import Any, Iterable

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tqdm import tqdm

from components.image_embedder import cache as embedding_cache
from image_retrain import contract, step_results
from image_retrain.contract import EMBEDDING_CACHED_KEY, EMBEDDING_KEY, IMAGE_KEY, PATH_KEY, SHA256_KEY
from image_retrain.image_decoding import preprocess_batch
from image_retrain.image_module import load_image_module
from image_retrain.image_module.litert_engine import LiteRTImageModule, litert_module_path
from image_retrain.image_module.loader import module_identity, resolve_handle

OUTPUT_FILE_PREFIX = "data_tfrecord"
# "auto": the module on LiteRT when its conversion passes the probe check, else TF; "tensorflow": always TF.
ENGINE_AUTO, ENGINE_TENSORFLOW = "auto", "tensorflow"
ENGINES = (ENGINE_AUTO, ENGINE_TENSORFLOW)

# The three counts are also the embedded artifact's properties, under the same names.
COMPUTED = beam.metrics.Metrics.counter("image_embedder", contract.EMBEDDINGS_COMPUTED_PROPERTY)
CACHED = beam.metrics.Metrics.counter("image_embedder", contract.EMBEDDINGS_CACHED_PROPERTY)
FAILED = beam.metrics.Metrics.counter("image_embedder", contract.EMBEDDING_FAILURES_PROPERTY)
COMPUTE_MS = beam.metrics.Metrics.counter("image_embedder", "embedding_compute_ms")  # decode+resize+module only
LOAD_MS = beam.metrics.Metrics.counter("image_embedder", "module_load_ms")

log = logging.getLogger(__name__)


def _bytes_feature(example: tf.train.Example, name: str) -> bytes:
    values = example.features.feature[name].bytes_list.value
    return values[0] if values else b""


_UNKEYED = "\0"  # no sha256 starts with a NUL: such keys never meet a cache entry and are never cached


def _key_by_sha256(item: tuple[str, bytes]) -> tuple[str, tuple[str, bytes]]:
    """(split, serialized) -> (sha256, (split, serialized)); an example without one gets a key of its own."""
    sha = _bytes_feature(tf.train.Example.FromString(item[1]), SHA256_KEY).decode()
    return (sha or f"{_UNKEYED}{uuid.uuid4().hex}"), item


class JoinWithCache(beam.DoFn):
    """(sha256, {examples, cached}) -> examples with their cached embedding, or the group as a miss.

    With `keep_unused` (compaction), every entry is passed on as ENTRY to be rewritten."""
    MISS = "miss"
    ENTRY = "entry"

    def __init__(self, keep_unused: bool):
        self._keep_unused = keep_unused

    def process(self, element):
        sha, grouped = element
        examples, cached = list(grouped["examples"]), list(grouped["cached"])
        if cached:
            if self._keep_unused:
                yield beam.pvalue.TaggedOutput(self.ENTRY, (sha, cached[0]))
            CACHED.inc(len(examples))
            for split, serialized in examples:
                yield split, _with_embedding(serialized, cached[0], from_cache=True)
        elif examples:
            yield beam.pvalue.TaggedOutput(self.MISS, (sha, examples))


def _with_embedding(serialized: bytes, embedding: np.ndarray, from_cache: bool) -> bytes:
    example = tf.train.Example.FromString(serialized)
    example.features.feature[EMBEDDING_KEY].float_list.value[:] = np.asarray(embedding, np.float32).tolist()
    example.features.feature[EMBEDDING_CACHED_KEY].int64_list.value[:] = [int(from_cache)]
    return example.SerializeToString()


class EmbedImages(beam.DoFn):
    """Batch of cache misses (sha256, examples of that image) -> the examples with `embedding`, plus the new cache
    entries (tagged ENTRY). Each image is embedded once, however many examples carry it."""
    ENTRY = JoinWithCache.ENTRY

    def __init__(self, module_handle: str, show_progress: bool = True, litert_model_path: str | None = None):
        self._module_handle = module_handle
        self._show_progress = show_progress
        self._litert_model_path = litert_model_path  # checked conversion of the module; None: run it on TF

    def setup(self):
        self._embed = None  # the module is loaded on the first miss: a fully cached run never loads it
        self._progress = None
        if self._show_progress:
            self._progress = tqdm(desc="embedding", unit="img", dynamic_ncols=True, mininterval=1.0)

    def _load_module(self):
        """Sets self._embed: encoded images (string tensor) -> float32 [B, features] numpy. Decode and resize run in
        TF either way; the module runs on LiteRT when the executor found a checked conversion."""
        if self._litert_model_path:
            engine = LiteRTImageModule(self._litert_model_path)
            preprocess = tf.function(lambda image_bytes: preprocess_batch(image_bytes, engine.input_size),
                                     input_signature=[tf.TensorSpec([None], tf.string)])
            self._embed = lambda image_bytes: engine(preprocess(image_bytes).numpy())
            return
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
                    log.warning("embedding skipped %s: %s", path, error.message.splitlines()[0])
                    results.append(None)
            return results
        finally:
            COMPUTE_MS.inc(int((time.perf_counter() - started) * 1000))

    def process(self, batch: list[tuple[str, list[tuple[str, bytes]]]]) -> Iterable:
        firsts = [tf.train.Example.FromString(examples[0][1]) for _, examples in batch]
        computed = self._embed_or_skip(
            [_bytes_feature(example, IMAGE_KEY) for example in firsts],
            [_bytes_feature(example, PATH_KEY).decode(errors="replace") for example in firsts])
        for (sha, examples), embedding in zip(batch, computed):
            if embedding is None:
                continue
            COMPUTED.inc()
            if not sha.startswith(_UNKEYED):
                yield beam.pvalue.TaggedOutput(self.ENTRY, (sha, embedding))
            for split, serialized in examples:
                yield split, _with_embedding(serialized, embedding, from_cache=False)
        if self._progress is not None:
            self._progress.update(len(batch))

    def teardown(self):
        if getattr(self, "_progress", None) is not None:
            self._progress.close()


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        embedded = artifact_utils.get_single_instance(output_dict[contract.EMBEDDED_EXAMPLES_KEY])
        splits = artifact_utils.decode_split_names(examples.split_names)
        embedded.split_names = artifact_utils.encode_split_names(splits)
        module_handle = exec_properties["module_handle"]
        cache_dir = exec_properties.get("cache_dir") or None
        batch_size = int(exec_properties.get("batch_size") or contract.DEFAULT_EMBEDDING_BATCH_SIZE)
        engine = exec_properties.get("engine") or ENGINE_AUTO
        if engine not in ENGINES:
            raise ValueError(f"unknown embedding engine {engine!r}; choose one of {ENGINES}")

        # The module's identity (a content hash) is computed once here and keys the cache, whichever engine computes
        # an entry (see image_retrain/image_module/litert_engine.py for why).
        # Converted and probe-checked here, once, so that workers only load the result.
        litert_path = litert_module_path(module_handle) if engine == ENGINE_AUTO else None
        engine_used = "litert" if litert_path else "tensorflow"

        cache = embedding_cache.ShardedEmbeddingCache(cache_dir, module_identity(resolve_handle(module_handle))) \
            if cache_dir else None
        shards = cache.committed_shards() if cache else []
        compact = len(shards) > embedding_cache.COMPACT_ABOVE_SHARDS
        staging = cache.new_staging_prefix() if cache else None
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
            keyed = tagged | "Flatten" >> beam.Flatten() | "KeyBySha256" >> beam.Map(_key_by_sha256)
            cached = (
                pipeline
                | "CacheShards" >> beam.Create(shards)
                | "ReadCache" >> beam.io.ReadAllFromTFRecord(coder=beam.coders.BytesCoder())
                | "DecodeCache" >> beam.Map(embedding_cache.decode_entry)
            )
            joined = (
                {"examples": keyed, "cached": cached}
                | "JoinCache" >> beam.CoGroupByKey()
                | "SplitHits" >> beam.ParDo(JoinWithCache(keep_unused=compact)).with_outputs(
                    JoinWithCache.MISS, JoinWithCache.ENTRY, main="hits")
            )
            computed = (
                joined[JoinWithCache.MISS]
                | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
                | "Embed" >> beam.ParDo(EmbedImages(module_handle, litert_model_path=litert_path)).with_outputs(
                    EmbedImages.ENTRY, main="examples")
            )
            embedded_by_split = (
                (joined.hits, computed.examples)
                | "AllEmbedded" >> beam.Flatten()
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
            if cache:
                # New entries only; when compacting, every entry kept (those read, plus the new ones).
                entries = (computed[EmbedImages.ENTRY], joined[JoinWithCache.ENTRY]) if compact \
                    else (computed[EmbedImages.ENTRY],)
                _ = (
                    entries
                    | "CacheEntries" >> beam.Flatten()
                    | "EncodeCache" >> beam.MapTuple(embedding_cache.encode_entry)
                    | "WriteCache" >> beam.io.WriteToTFRecord(staging, file_name_suffix=embedding_cache.SHARD_SUFFIX,
                                                             coder=beam.coders.BytesCoder())
                )
        result = pipeline.result
        if cache:
            committed = cache.commit(staging)  # only now, after every stage succeeded
            if compact:
                cache.remove(shards)
            log.info("Embedding cache: %d shards read, %d written%s", len(shards), len(committed),
                        " (compacted)" if compact else "")
        counts = {counter.metric_name.name: _counter_total(result, counter.metric_name.name)
                  for counter in (COMPUTED, CACHED, FAILED, COMPUTE_MS, LOAD_MS)}
        elapsed = time.time() - started
        total = counts["embeddings_computed"] + counts["embeddings_cached"]
        log.info("Embedding stage: %d computed, %d from cache, %d failed, %.1f s (%.1f images/s overall)",
                    counts["embeddings_computed"], counts["embeddings_cached"], counts["embedding_failures"],
                    elapsed, total / elapsed if elapsed else 0.0)
        step_results.report("embed", f"{counts['embeddings_computed']} embeddings computed on {engine_used}, "
                                     f"{counts['embeddings_cached']} reused from cache, "
                                     f"{counts['embedding_failures']} failed ({elapsed:.1f} s: module load "
                                     f"{counts['module_load_ms'] / 1000:.1f} s, embedding "
                                     f"{counts['embedding_compute_ms'] / 1000:.1f} s)")
        for name in (contract.EMBEDDINGS_COMPUTED_PROPERTY, contract.EMBEDDINGS_CACHED_PROPERTY,
                     contract.EMBEDDING_FAILURES_PROPERTY):
            embedded.set_int_custom_property(name, counts[name])
        embedded.set_string_custom_property(contract.MODULE_HANDLE_PROPERTY, module_handle)
        for name in contract.INGESTION_FILES:  # the vocabulary, rejects and summary travel along
            source = os.path.join(examples.uri, name)
            if tf.io.gfile.exists(source):
                tf.io.gfile.copy(source, os.path.join(embedded.uri, name), overwrite=True)
        with tf.io.gfile.GFile(os.path.join(embedded.uri, contract.EMBEDDING_COUNTS_FILE), "w") as f:
            f.write(json.dumps({**counts, "seconds": round(elapsed, 3), "module_handle": module_handle,
                               "engine": engine_used}))


def _counter_total(result, name: str) -> int:
    query = result.metrics().query(beam.metrics.MetricsFilter().with_name(name))
    return int(sum(counter.committed or counter.attempted or 0 for counter in query["counters"]))
