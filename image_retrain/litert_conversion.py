"""TF -> LiteRT (TFLite flatbuffer) conversion, run with the `ai-edge-litert` interpreter (XNNPACK), and the probe
check that decides whether a converted model may stand in for its TensorFlow original.

Shared by the embedding stage (image module), the classifier export (`model.tflite` beside the SavedModel) and
`image-retrain export`. Conversion is float32 end to end (no quantization), so outputs match TF to float rounding.
"""
from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable

import flatbuffers
import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

log = logging.getLogger(__name__)

# Largest max |LiteRT - TF| on the probe batch for the converted model to be used instead of TF.
TOLERANCE = 1e-4
PROBE_BATCH = 4
TFLITE_SIGNATURE = "serving_default"


def convert(concrete_function, trackable) -> bytes:
    """A concrete function (its variables owned by `trackable`) -> float32 TFLite flatbuffer with one signature,
    `serving_default`, whose inputs and outputs keep the function's names."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function], trackable)
    return converter.convert()


def with_metadata(model: bytes, entries: dict[str, bytes]) -> bytes:
    """Adds named byte buffers to the flatbuffer's `metadata` table (the schema's own key -> buffer list, which
    LiteRT runtimes carry along unread)."""
    model_object = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    model_object.metadata = list(model_object.metadata or [])
    for name, data in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(data, dtype=np.uint8)
        model_object.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model_object.buffers) - 1
        model_object.metadata.append(entry)
    builder = flatbuffers.Builder(len(model) + sum(len(d) for d in entries.values()) + 1024)
    builder.Finish(model_object.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def interpreter(model_path: str | None = None, model: bytes | None = None, threads: int | None = None):
    """A LiteRT interpreter with the default XNNPACK delegate on `threads` (default: every core)."""
    return Interpreter(model_path=model_path, model_content=model, num_threads=threads or os.cpu_count())


class SignatureFunction:
    """One signature of a LiteRT model as a function: numpy inputs by name -> numpy outputs by name.

    Not thread-safe (an interpreter runs one call at a time): give each thread its own or guard it."""

    def __init__(self, model_path: str | None = None, model: bytes | None = None, threads: int | None = None,
                 signature: str = TFLITE_SIGNATURE):
        self._runner = interpreter(model_path, model, threads).get_signature_runner(signature)
        self.input_details = self._runner.get_input_details()
        self.output_details = self._runner.get_output_details()

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        # Copies: the runner's outputs alias interpreter memory that the next call overwrites.
        return {name: np.array(value) for name, value in self._runner(**inputs).items()}


def probe_images(size: tuple[int, int], batch: int = PROBE_BATCH, seed: int = 0) -> np.ndarray:
    """float32 [batch, h, w, 3] in [0, 1]: smooth gradients plus noise, so every channel and position varies."""
    rng = np.random.RandomState(seed)
    y, x = np.meshgrid(np.linspace(0, 1, size[0]), np.linspace(0, 1, size[1]), indexing="ij")
    gradient = np.stack([x, y, 1 - x], axis=-1)
    images = 0.6 * gradient[None] + 0.4 * rng.uniform(size=(batch, size[0], size[1], 3))
    return images.astype(np.float32)


def max_difference(model: bytes, reference: Callable[[np.ndarray], dict], input_name: str,
                   images: np.ndarray) -> float:
    """max |LiteRT - reference| over every output of the model's signature on `images`."""
    litert_outputs = SignatureFunction(model=model)(**{input_name: images})
    reference_outputs = reference(images)
    return max(float(np.max(np.abs(litert_outputs[name] - np.asarray(reference_outputs[name]))))
               for name in litert_outputs)


def write_atomically(path: str, data: bytes) -> None:
    """Writes through a temporary sibling and a rename, so readers never see a half-written file."""
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    with tf.io.gfile.GFile(temporary, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(temporary, path, overwrite=True)
