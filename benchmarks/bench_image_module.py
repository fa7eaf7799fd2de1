"""Images/s of the builtin EfficientNet-Lite0 SavedModel beside the PyTorch reference, same inputs, same process.

    .venv/bin/python benchmarks/bench_image_module.py [--batch-sizes 1 32 64] [--min-seconds 3]

The TF side is what training and serving call: `load_image_module("efficientnet_lite0")(images)`, i.e. the restored
SavedModel function. The reference is `efficientnet-lite-pytorch` with the same weights (needs the [convert] extra).
Both run alternately per batch size on the same random [0, 1] inputs; the ratio is TF images/s over PyTorch's.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def images_per_second(run, batch_size: int, min_seconds: float, min_iterations: int = 3) -> float:
    run()  # warm-up: tracing, allocator, oneDNN primitive caches
    iterations, start = 0, time.perf_counter()
    while iterations < min_iterations or time.perf_counter() - start < min_seconds:
        run()
        iterations += 1
    return iterations * batch_size / (time.perf_counter() - start)


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

    from components.image_module import load_image_module
    from components.image_module.convert import efficientnet_lite0_weights_path

    if args.threads:  # before any TF op runs, or TF ignores it
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        torch.set_num_threads(args.threads)
    module = load_image_module("efficientnet_lite0")
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=efficientnet_lite0_weights_path())
    reference.eval()

    print(f"cpu cores: {os.cpu_count()}, tensorflow {tf.__version__}, torch {torch.__version__} "
          f"(threads: tf {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, "
          f"torch {torch.get_num_threads()}), load average before: {os.getloadavg()[0]:.2f}")
    print(f"module: {module.path}")
    print(f"{'batch':>5}  {'TF SavedModel img/s':>20}  {'PyTorch ref img/s':>18}  {'TF/PyTorch':>10}  {'max |diff|':>10}")
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

        difference = float(np.abs(run_tf() - run_torch()).max())
        tf_rate = images_per_second(run_tf, batch_size, args.min_seconds)
        torch_rate = images_per_second(run_torch, batch_size, args.min_seconds)
        print(f"{batch_size:>5}  {tf_rate:>20.1f}  {torch_rate:>18.1f}  {tf_rate / torch_rate:>10.2f}  "
              f"{difference:>10.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
