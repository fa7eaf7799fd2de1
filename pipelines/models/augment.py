"""Training-time augmentation of decoded images, each kind switchable by a hyperparameter."""
from __future__ import annotations

from typing import Any

import tensorflow as tf


def augment(image, size: tuple[int, int], seed, hp: dict[str, Any]):
    """uint8 [H, W, 3] -> float32 [h, w, 3] in [0, 1], randomly cropped (`augment_crop`: smallest kept fraction of
    each side; 1 = off), flipped (`augment_flip` left-right, `augment_vertical_flip`), rotated by a multiple of 90°
    (`augment_rotate90`), brightened (`augment_brightness`: max delta) and contrasted (`augment_contrast`: max
    relative change). Stateless: the same `seed` (int [2]) gives the same image, so runs repeat exactly."""
    crop_seed, size_seed, lr_seed, ud_seed, rotate_seed, brightness_seed, contrast_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 7))
    image = tf.image.convert_image_dtype(image, tf.float32)
    if hp["augment_crop"] < 1.0:
        fraction = tf.random.stateless_uniform([], size_seed, hp["augment_crop"], 1.0)
        crop = tf.cast(tf.cast(tf.shape(image)[:2], tf.float32) * fraction, tf.int32)
        image = tf.image.stateless_random_crop(image, [crop[0], crop[1], 3], seed=crop_seed)
    if hp["augment_flip"]:
        image = tf.image.stateless_random_flip_left_right(image, seed=lr_seed)
    if hp["augment_vertical_flip"]:
        image = tf.image.stateless_random_flip_up_down(image, seed=ud_seed)
    if hp["augment_rotate90"]:
        image = tf.image.rot90(image, tf.random.stateless_uniform([], rotate_seed, 0, 4, dtype=tf.int32))
    if hp["augment_brightness"] > 0:
        image = tf.image.stateless_random_brightness(image, hp["augment_brightness"], seed=brightness_seed)
    if hp["augment_contrast"] > 0:
        image = tf.image.stateless_random_contrast(image, 1 - hp["augment_contrast"], 1 + hp["augment_contrast"],
                                                   seed=contrast_seed)
    return tf.image.resize(tf.clip_by_value(image, 0.0, 1.0), size, antialias=True)
