"""Fine-tuning cost: seconds per epoch per 1,000 training images, by input size and by how much of the module
trains, measured with the trainer's own `fine_tune` (decode, augment, forward, backward, update; eval excluded), and
the FLOP rate that is as a fraction of the machine's FP32 peak (benchmarks/bench_peak.py). FLOPs per image are
counted on the step's own graph (benchmarks/training_flops.py).

Images are random 300x300 PNGs: the cost does not depend on what they show. The first epoch includes tracing, so
the figure is the best of the later epochs.

    .venv/bin/python benchmarks/bench_fine_tune.py [--images 256] [--epochs 3] [--settings 224-whole ...]
        [--batch-size 32]
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe, fraction_of_peak, load_average  # noqa: E402

SETTINGS = {  # name: (label, image_size, fine_tune_variables)
    "224-whole": ("224 px, whole module", 224, -1),
    "300-whole": ("300 px, whole module", 300, -1),
    "224-top40": ("224 px, top 40 variables", 224, 40),
}


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
    parser.add_argument("--epochs", type=int, default=3, help="the first includes tracing and is not counted")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--batch-size", type=int, default=0, help="0: the trainer's default")
    args = parser.parse_args()
    print(describe(), flush=True)
    from benchmarks.training_flops import step_gflops_per_image
    from image_retrain.image_module import load_image_module
    from pipelines import configs
    from pipelines.models.fine_tune import fine_tune
    from pipelines.models.head import build_head
    from pipelines.models.image_size import with_input_size

    with tempfile.TemporaryDirectory() as scratch:
        os.makedirs(os.path.join(scratch, "Split-train"))
        write_examples(os.path.join(scratch, "Split-train", "data.gz"), args.images, 300)
        files = [os.path.join(scratch, "Split-train", "*")]
        for name in args.settings:
            label, size, variables = SETTINGS[name]
            image_module = with_input_size(load_image_module(configs.MODULE_HANDLE), size)
            hp = dict(configs.HYPERPARAMETERS, fine_tune_variables=variables, fine_tune_epochs=args.epochs)
            if args.batch_size:
                hp["fine_tune_batch_size"] = args.batch_size
            head = build_head(image_module.feature_dim, 2, hp)
            gflop, _ = step_gflops_per_image(image_module, head, 2, hp)
            load = load_average()
            summary = fine_tune(image_module, head, files, files, 2, hp)
            seconds = min(epoch["seconds_per_1000_images"] for epoch in summary["epochs"][1:])
            gflops = 1000 / seconds * gflop
            print(f"{label:26s} batch {hp['fine_tune_batch_size']}: {seconds:5.1f} s per "
                  f"epoch per 1,000 images ({1000 / seconds:.1f} images/s x {gflop:.2f} GFLOP = {gflops:.0f} "
                  f"GFLOP/s, {fraction_of_peak(gflops):.2f} of FP32 peak); load before {load}, after "
                  f"{load_average()}", flush=True)


if __name__ == "__main__":
    main()
