"""Batch prediction's throughput against the raw engine on the same machine, images and model.

    .venv/bin/python benchmarks/bench_batch_predict.py [--model_base_path DIR] [--images 256] [--batch_size 32]

Rows, images per second:
  engine         the exported model's serving signature called in a loop on the files' bytes, already in memory,
                 `--batch_size` at a time (after one warm-up call): what the model alone costs;
  batch-predict  `image-retrain batch-predict` end to end on the same files in a folder (DirectRunner, one worker):
                 listing, Beam start-up, the model's load in the DoFn, reading and checking each file, the same
                 signature calls, and writing the JSONL; and its share of the engine's rate.
  per image      the same job on `--images` and on 4x as many files: the extra files over the extra time is the
                 job's steady rate (what a large batch gets), the rest of the first job's time its fixed start-up.
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
    print(f"model {version_dir}; {args.images} images: {description}, {len(image)} bytes; batch {args.batch_size}")

    engine = engine_rate(version_dir, [image] * args.images, args.batch_size)
    print(f"engine         {engine:8.1f} images/s")
    seconds = {}
    for count in (args.images, 4 * args.images):
        data_dir = os.path.join(tmp, f"images-{count}")
        os.makedirs(os.path.join(data_dir, "photos"))
        for i in range(count):
            with open(os.path.join(data_dir, "photos", f"{i:05d}.jpg"), "wb") as f:
                f.write(image)
        started = time.perf_counter()
        outcome = job.run(base_path, os.path.join(tmp, f"preds-{count}.jsonl"), data_dir=data_dir,
                          batch_size=args.batch_size)
        seconds[count] = time.perf_counter() - started
        if (outcome.predicted, outcome.rejected) != (count, 0):
            print(f"batch-predict predicted {outcome.predicted} and rejected {outcome.rejected} of {count} images",
                  file=sys.stderr)
            return 1
        rate = count / seconds[count]
        print(f"batch-predict  {rate:8.1f} images/s  ({rate / engine:.0%} of the engine's) on {count} images, "
              "start-up and model load included")
    steady = 3 * args.images / (seconds[4 * args.images] - seconds[args.images])
    print(f"per image      {steady:8.1f} images/s  ({steady / engine:.0%} of the engine's) once running; fixed "
          f"start-up {seconds[args.images] - args.images / steady:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
