"""Images/s of the builtin EfficientNet-Lite0 on TF (SavedModel), LiteRT (XNNPACK) and the PyTorch reference, same
inputs, same process.

    .venv/bin/python benchmarks/bench_image_module.py [--batch-sizes 1 32 64] [--min-seconds 3]

The TF side is what training and serving call: `load_image_module("efficientnet_lite0")(images)`, i.e. the restored
SavedModel function. LiteRT is the module's checked conversion that the embedding stage runs
(image_retrain/image_module/litert_engine.py; XNNPACK on every core). The reference is `efficientnet-lite-pytorch` with
the same weights (needs the [convert] extra). All run one after another per batch size on the same random [0, 1]
inputs; the ratios are LiteRT and TF images/s over TF's and PyTorch's. Also printed: images/s per CPU-second (less
sensitive to other jobs on a shared machine) and max |LiteRT - TF|.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def images_per_second(run, batch_size: int, min_seconds: float, min_iterations: int = 3) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process)."""
    run()  # warm-up: tracing, allocator, oneDNN primitive caches
    iterations, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while iterations < min_iterations or time.perf_counter() - start < min_seconds:
        run()
        iterations += 1
    images = iterations * batch_size
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 64])
    parser.add_argument("--min-seconds", type=float, default=3.0, help="minimum timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads for both frameworks (default 0: each framework's own default)")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from benchmarks.machine import describe
    from image_retrain.image_module import load_image_module
    from image_retrain.image_module.convert import efficientnet_lite0_weights_path
    from image_retrain.image_module.litert_engine import LiteRTImageModule, litert_module_path

    if args.threads:  # before any TF op runs, or TF ignores it
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        torch.set_num_threads(args.threads)
    module = load_image_module("efficientnet_lite0")
    litert_module = LiteRTImageModule(litert_module_path("efficientnet_lite0", module), threads=args.threads or None)
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=efficientnet_lite0_weights_path())
    reference.eval()

    print(describe())
    print(f"tensorflow {tf.__version__}, torch {torch.__version__} "
          f"(threads: tf {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
          f"torch {torch.get_num_threads()}, litert {args.threads or os.cpu_count()})")
    print(f"module: {module.path}")
    print(f"{'batch':>5}  {'TF img/s':>9}  {'LiteRT img/s':>12}  {'PyTorch img/s':>13}  {'LiteRT/TF':>9}  "
          f"{'TF/PyTorch':>10}  {'per CPU-s: TF':>13}  {'LiteRT':>6}  {'PyTorch':>7}  {'LiteRT-TF':>9}  "
          f"{'TF-PyTorch':>10}")
    rng = np.random.RandomState(0)
    for batch_size in args.batch_sizes:
        images = rng.uniform(size=(batch_size, 224, 224, 3)).astype(np.float32)
        tf_images = tf.constant(images)
        torch_images = torch.from_numpy(((images * 255.0 - 127.0) / 128.0).transpose(0, 3, 1, 2).copy())

        def run_tf():
            return module(tf_images).numpy()

        def run_torch():
            with torch.inference_mode():
                return reference.extract_features(torch_images).mean(dim=(2, 3)).numpy()

        def run_litert():
            return litert_module(images)

        litert_difference = float(np.abs(run_litert() - run_tf()).max())
        torch_difference = float(np.abs(run_tf() - run_torch()).max())
        (tf_rate, tf_cpu), (litert_rate, litert_cpu), (torch_rate, torch_cpu) = (
            images_per_second(run, batch_size, args.min_seconds) for run in (run_tf, run_litert, run_torch))
        print(f"{batch_size:>5}  {tf_rate:>9.1f}  {litert_rate:>12.1f}  {torch_rate:>13.1f}  "
              f"{litert_rate / tf_rate:>9.2f}  {tf_rate / torch_rate:>10.2f}  {tf_cpu:>13.1f}  {litert_cpu:>6.1f}  "
              f"{torch_cpu:>7.1f}  {litert_difference:>9.1e}  {torch_difference:>10.1e}", flush=True)
    print(f"(max |diff| columns: LiteRT vs TF, TF vs PyTorch) {describe().split('; ')[1]} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
