"""The one image decode + resize used by ingestion validation, the embedding stage and the serving signature.

Training and serving must see identical pixels, so every stage decodes with TensorFlow's own decoders (the ones the
exported SavedModel runs), never with PIL.
"""
from __future__ import annotations

import tensorflow as tf

# Formats tf.io.decode_image reads; anything else is rejected at ingestion with this list in the reason.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP")


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes (scalar string) -> uint8 [H, W, 3]; first frame of animations."""
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def to_model_input(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """uint8 [H, W, 3] -> float32 [h, w, 3] in [0, 1], the TF Hub image-module input convention."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    return tf.image.resize(image, size, method="bilinear", antialias=True)


def preprocess_batch(image_bytes: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """String [B] of encoded images -> float32 [B, h, w, 3] in [0, 1]."""
    return tf.map_fn(
        lambda b: to_model_input(decode_rgb(b), size),
        image_bytes,
        fn_output_signature=tf.TensorSpec([size[0], size[1], 3], tf.float32),
    )
