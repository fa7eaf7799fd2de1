"""The size the image module runs at during training and in the export."""
from __future__ import annotations

import dataclasses

import tensorflow as tf


def with_input_size(image_module, image_size: int):
    """The module at `image_size` x `image_size` pixels (0: its own size); a clear error if it takes only its own."""
    if image_size <= 0 or (image_size, image_size) == tuple(image_module.input_size):
        return image_module
    try:
        image_module(tf.zeros([1, image_size, image_size, 3]))
    except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
        raise ValueError(f"image module {image_module.handle!r} takes only {image_module.input_size} images, not "
                         f"image_size={image_size}: {error}") from error
    return dataclasses.replace(image_module, input_size=(image_size, image_size))
