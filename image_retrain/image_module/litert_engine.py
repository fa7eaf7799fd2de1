"""The image module on LiteRT (XNNPACK): converted once, cached beside the module, and used only when it matches
TensorFlow on a probe batch.

Cache layout, beside the module directory `<module>`: `<module>.litert/<identity>.tflite` plus
`<identity>.check.json` (the probe verdict with the TF and LiteRT versions that produced it). A verdict is reused
while those versions are unchanged; otherwise the probe runs again. A module that does not convert, a cache directory
that cannot be written, or a probe difference above `TOLERANCE` all mean: embed with TensorFlow, and say why.

The embedding cache stays keyed by the module's identity alone, whichever engine computed an entry: the engine is
used only when its outputs equal TF's within `TOLERANCE` (1e-4, features are O(1)), far below what separates two
images or moves the head's decision, so entries from either engine are interchangeable. Keying by engine would only
recompute every cached image after an engine change, for no change in what the head learns.
"""
from __future__ import annotations

import json
import logging
import os
from importlib.metadata import version

import numpy as np
import tensorflow as tf

from image_retrain import litert_conversion
from image_retrain.image_module.loader import (
    ImageModule,
    load_image_module,
    module_identity,
    resolve_handle,
    tfhub_cache_dir,
)
from image_retrain.paths import is_uri

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "features"
# Images per interpreter call. XNNPACK runs a graph layer by layer over the whole batch: at 32 images the first
# blocks' activations (32 x 112 x 112 x 96 floats, ~150 MB) leave the caches, one image's stay in L2, so one image
# at a time is faster per image (benchmarks/bench_image_module.py: LiteRT at batch 1 vs 32).
INVOKE_BATCH = 1


def cache_paths(module_path: str, identity: str) -> tuple[str, str]:
    """Beside a local module; for one on object storage, in the local TF Hub cache (the interpreter maps a file)."""
    folder = (os.path.join(tfhub_cache_dir(), "litert", identity) if is_uri(module_path)
              else f"{os.path.normpath(module_path)}.litert")
    return os.path.join(folder, f"{identity}.tflite"), os.path.join(folder, f"{identity}.check.json")


def _runtime_versions() -> dict[str, str]:
    return {"tensorflow": tf.__version__, "ai-edge-litert": version("ai-edge-litert")}


def _passed_check(check_path: str, model_path: str) -> bool:
    try:
        with open(check_path, encoding="utf-8") as f:
            verdict = json.load(f)
    except (OSError, ValueError):
        return False
    return (verdict.get("versions") == _runtime_versions() and verdict.get("passed") is True
            and os.path.isfile(model_path))


def convert_module(module: ImageModule) -> bytes:
    height, width = module.input_size
    function = tf.function(lambda images: {OUTPUT_NAME: module(images)},
                           input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name=INPUT_NAME)])
    return litert_conversion.convert(function.get_concrete_function(), module.module)


def litert_module_path(handle: str, module: ImageModule | None = None) -> str | None:
    """Path of the checked LiteRT conversion of `handle`'s module, converting and probing it on first use; None
    (after a log line saying why) when the module must run on TensorFlow. `module`, if already loaded, saves a
    load; a cached verdict needs no load at all."""
    path = module.path if module is not None else resolve_handle(handle)
    identity = module.identity if module is not None else module_identity(path)
    model_path, check_path = cache_paths(path, identity)
    if _passed_check(check_path, model_path):
        return model_path
    module = module or load_image_module(handle)
    try:
        model = convert_module(module)
    except Exception as error:  # noqa: BLE001 - the converter raises many types; any of them means "use TF"
        log.warning("image module %s: LiteRT conversion failed, embedding with TensorFlow: %s", handle,
                    str(error).splitlines()[0] if str(error) else type(error).__name__)
        return None
    probe = litert_conversion.probe_images(module.input_size)
    difference = litert_conversion.max_difference(model, lambda images: {OUTPUT_NAME: module(tf.constant(images))},
                                       INPUT_NAME, probe)
    passed = difference <= litert_conversion.TOLERANCE
    try:
        os.makedirs(os.path.dirname(model_path), exist_ok=True)
        litert_conversion.write_atomically(model_path, model)
        litert_conversion.write_atomically(check_path, json.dumps({
            "passed": passed, "max_abs_difference": difference, "tolerance": litert_conversion.TOLERANCE,
            "probe_batch": int(probe.shape[0]), "versions": _runtime_versions()}, indent=2).encode())
    except OSError as error:
        log.warning("image module %s: cannot cache the LiteRT conversion beside the module (%s), embedding with "
                    "TensorFlow", handle, error)
        return None
    if not passed:
        log.warning("image module %s: LiteRT output differs from TensorFlow by %.2e on the probe batch (tolerance "
                    "%.0e), embedding with TensorFlow", handle, difference, litert_conversion.TOLERANCE)
        return None
    log.info("image module %s: LiteRT conversion checked (max |difference| %.2e) at %s", handle, difference,
             model_path)
    return model_path


class LiteRTImageModule:
    """float32 [B, h, w, 3] in [0, 1] (numpy) -> float32 [B, features] with the converted module; one per thread."""

    def __init__(self, model_path: str, threads: int | None = None):
        self._function = litert_conversion.SignatureFunction(model_path=model_path, threads=threads)
        (details,) = self._function.input_details.values()
        self.input_size = (int(details["shape_signature"][1]), int(details["shape_signature"][2]))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([self._function(**{INPUT_NAME: images[start:start + INVOKE_BATCH]})[OUTPUT_NAME]
                               for start in range(0, len(images), INVOKE_BATCH)])
