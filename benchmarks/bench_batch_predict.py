"""Batch prediction's throughput against the raw engine on the same machine, images and model.

    .venv/bin/python benchmarks/bench_batch_predict.py [--model_base_path DIR] [--images 256] [--batch_size 32]

Rows, images per second:
  engine         the exported model's serving signature called in a loop on the files' bytes, already in memory,
                 `--batch_size` at a time (after one warm-up call): what the model alone costs;
  batch-predict  `image-retrain batch-predict` end to end on the same files in a folder (DirectRunner, one worker):
                 listing, Beam start-up, the model's load in the DoFn, reading and checking each file, the same
                 signature calls, and writing the JSONL; and its share of the engine's rate.
Default model: the builtin EfficientNet-Lite0 with a 5-class head cut from its own ImageNet classifier, exported by
the trainer's export_serving_model (bench_serving_litert.py's). Default image: as bench_serving.py, `--image chelsea`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_serving import test_image  # noqa: E402
from bench_serving_litert import write_imagenet_subset_classifier  # noqa: E402


def engine_rate(version_dir: str, images: list[bytes], batch_size: int) -> float:
    import tensorflow as tf

    from serving.model_format import IMAGE_BYTES_INPUT, PREDICT_SIGNATURE

    signature = tf.saved_model.load(version_dir).signatures[PREDICT_SIGNATURE]
    signature(**{IMAGE_BYTES_INPUT: tf.constant(images[:batch_size])})  # traced and warm, as the DoFn's first batch
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        signature(**{IMAGE_BYTES_INPUT: tf.constant(images[start:start + batch_size])})
    return len(images) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_base_path", help="a model base path with numeric versions (default: see above)")
    parser.add_argument("--images", type=int, default=256, help="images per row")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image", default="chelsea", help="as bench_serving.py: random | chelsea | coffee | path")
    parser.add_argument("--image_size", type=int, default=0, help="as bench_serving.py (0: the photo's own size)")
    args = parser.parse_args()

    from benchmarks.machine import describe

    print(describe())
    tmp = tempfile.mkdtemp(prefix="bench_batch_predict_")
    try:
        return measure(args, tmp)
    finally:
        shutil.rmtree(tmp)


def measure(args: argparse.Namespace, tmp: str) -> int:
    from pipelines.batch_predict import job
    from serving import versions

    base_path = os.path.abspath(args.model_base_path or os.path.join(tmp, "classifier"))
    if not args.model_base_path:
        write_imagenet_subset_classifier(os.path.join(base_path, "1"))
    version_dir = versions.version_folder(base_path)
    image, description = test_image(args.image, args.image_size)
    folder = os.path.join(tmp, "images", "photos")
    os.makedirs(folder)
    for i in range(args.images):
        with open(os.path.join(folder, f"{i:05d}.jpg"), "wb") as f:
            f.write(image)
    print(f"model {version_dir}; {args.images} images: {description}, {len(image)} bytes; batch {args.batch_size}")

    engine = engine_rate(version_dir, [image] * args.images, args.batch_size)
    print(f"engine         {engine:8.1f} images/s")
    started = time.perf_counter()
    outcome = job.run(base_path, os.path.join(tmp, "preds.jsonl"), data_dir=os.path.dirname(folder),
                      batch_size=args.batch_size)
    batch = outcome.predicted / (time.perf_counter() - started)
    if (outcome.predicted, outcome.rejected) != (args.images, 0):
        print(f"batch-predict predicted {outcome.predicted} and rejected {outcome.rejected} of {args.images} images",
              file=sys.stderr)
        return 1
    print(f"batch-predict  {batch:8.1f} images/s  ({batch / engine:.0%} of the engine's, start-up and model load "
          "included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
