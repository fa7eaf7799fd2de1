"""Fine-tuning cost: seconds per epoch per 1,000 training images, by input size and by how much of the module
trains, measured with the trainer's own `fine_tune` (decode, augment, forward, backward, update; eval excluded).

Images are random 300x300 PNGs: the cost does not depend on what they show. The first epoch includes tracing, so
the figure is the second epoch's.

    .venv/bin/python benchmarks/bench_fine_tune.py [--images 256]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe  # noqa: E402

SETTINGS = (  # (label, image_size, fine_tune_variables)
    ("224 px, whole module", 224, -1),
    ("300 px, whole module", 300, -1),
    ("224 px, top 40 variables", 224, 40),
)


def write_examples(path: str, count: int, side: int) -> None:
    import tensorflow as tf
    from PIL import Image

    random = np.random.RandomState(0)
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for index in range(count):
            buffer = io.BytesIO()
            Image.fromarray(random.randint(0, 255, (side, side, 3), np.uint8)).save(buffer, format="PNG")
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buffer.getvalue()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 2])),
            })).SerializeToString())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    print(describe(), flush=True)
    from image_retrain.image_module import load_image_module
    from pipelines import configs
    from pipelines.models.fine_tune import fine_tune
    from pipelines.models.head import build_head
    from pipelines.models.image_size import with_input_size

    with tempfile.TemporaryDirectory() as scratch:
        os.makedirs(os.path.join(scratch, "Split-train"))
        write_examples(os.path.join(scratch, "Split-train", "data.gz"), args.images, 300)
        files = [os.path.join(scratch, "Split-train", "*")]
        for label, size, variables in SETTINGS:
            image_module = with_input_size(load_image_module(configs.MODULE_HANDLE), size)
            hp = dict(configs.HYPERPARAMETERS, fine_tune_variables=variables, fine_tune_epochs=2)
            head = build_head(image_module.feature_dim, 2, hp)
            summary = fine_tune(image_module, head, files, files, 2, hp)
            seconds = summary["epochs"][-1]["seconds_per_1000_images"]
            print(f"{label:28s} batch {hp['fine_tune_batch_size']}: {seconds:6.0f} s per epoch per 1,000 images "
                  f"({1000 / seconds:.1f} images/s)", flush=True)


if __name__ == "__main__":
    main()
