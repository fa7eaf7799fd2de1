"""Test-time views: the served scores (and fine-tuning's eval) averaged over mirrored or rotated copies of each
image (hyperparameter `test_time_views`)."""
from __future__ import annotations

import tensorflow as tf

from pipelines import configs


def dihedral_views(images, count: int):
    """[B, h, w, 3] -> [count * B, h, w, 3], view after view: the images; 2: and mirrored left-right; 4: and both
    upside down (so also turned 180°); 8: and the transposes of those four (the 90° turns and diagonal mirrors)."""
    views = [images]
    if count >= 2:
        views.append(tf.image.flip_left_right(images))
    if count >= 4:
        views += [tf.image.flip_up_down(view) for view in views]
    if count >= 8:
        views += [tf.transpose(view, [0, 2, 1, 3]) for view in views]
    return tf.concat(views, axis=0)


def check_test_time_views(count: int, input_size: tuple[int, int]) -> int:
    if count not in configs.TEST_TIME_VIEWS:
        raise ValueError(f"test_time_views must be one of {configs.TEST_TIME_VIEWS}, not {count}")
    if count == 8 and input_size[0] != input_size[1]:
        raise ValueError(f"test_time_views=8 transposes images: it needs a square input, not {input_size}")
    return count


def mean_over_views(scores, count: int):
    """[count * B, C] scores of dihedral_views -> [B, C]: each image's scores averaged over its views."""
    return tf.reduce_mean(tf.reshape(scores, [count, -1, tf.shape(scores)[-1]]), axis=0)
