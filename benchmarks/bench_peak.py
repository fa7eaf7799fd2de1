"""The machine's practical FP32 peak on all cores: a large SGEMM (tf.matmul of two 4096x4096 float32 matrices inside
a tf.function, so through the same oneDNN / Eigen kernels TensorFlow's training uses), warm, best of several runs.
Where the CPU has native bfloat16 (AVX512_BF16 or AMX) the same product in bfloat16 is measured too: the ceiling of
mixed precision, though figures are stated as fractions of the FP32 peak. And the memory bandwidth TensorFlow gets
(an elementwise add of two 128 MiB float32 tensors: 3 x 128 MiB moved), against which memory-bound ops are judged.

The result is cached per machine (CPU model and flags, usable cores, TensorFlow version) under ~/.cache/image-retrain/,
since it takes ~10 s; `machine.describe()` prints it on every benchmark's machine line. Only a measurement started at a
1-minute load below QUIET_LOAD is cached: a busy machine gives a low peak, and every fraction of it would look better
than it is. Measure again with --remeasure.

    .venv/bin/python benchmarks/bench_peak.py [--remeasure] [--json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cached_peak, describe, has_native_bfloat16, load_average, write_peak_cache  # noqa: E402

SIDE = 4096
RUNS = 8
QUIET_LOAD = 1.3


def matmul_gflops(dtype_name: str, side: int = SIDE, runs: int = RUNS) -> float:
    """Best GFLOP/s of `runs` warm side x side products (2 side^3 FLOP each) in `dtype_name`."""
    import tensorflow as tf

    dtype = tf.as_dtype(dtype_name)
    a = tf.cast(tf.random.stateless_uniform([side, side], seed=[1, 2]), dtype)
    b = tf.cast(tf.random.stateless_uniform([side, side], seed=[3, 4]), dtype)

    @tf.function
    def product_corner(a, b):  # one element back to the host: the product itself stays in the timing
        return tf.matmul(a, b)[0, 0]

    product_corner(a, b).numpy()  # trace, and warm the kernel's caches and the thread pool
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        product_corner(a, b).numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * side ** 3 / best / 1e9


def add_gbytes_per_second(elements: int = 32 * 2 ** 20, runs: int = RUNS) -> float:
    """Best GB/s of `runs` elementwise adds of two float32 vectors of `elements` (read two, write one)."""
    import tensorflow as tf

    a = tf.random.stateless_uniform([elements], seed=[5, 6])
    b = tf.random.stateless_uniform([elements], seed=[7, 8])

    @tf.function
    def sum_corner(a, b):
        return (a + b)[0]

    sum_corner(a, b).numpy()
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        sum_corner(a, b).numpy()
        best = min(best, time.perf_counter() - started)
    return 3 * 4 * elements / best / 1e9


def measure_peak() -> dict:
    load_before = load_average()
    peak = {"fp32_gflops": round(matmul_gflops("float32"), 1), "cached": os.getloadavg()[0] < QUIET_LOAD}
    if has_native_bfloat16():
        peak["bf16_gflops"] = round(matmul_gflops("bfloat16"), 1)
    peak["bandwidth_gbs"] = round(add_gbytes_per_second(), 1)
    return dict(peak, side=SIDE, runs=RUNS, load=load_before,
                measured=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--remeasure", action="store_true", help="measure even when a cached figure exists")
    parser.add_argument("--json", action="store_true", help="print only the figures, as JSON (machine.py reads it)")
    args = parser.parse_args()
    peak = None if args.remeasure else cached_peak()
    if peak is None:
        peak = measure_peak()
        if peak["cached"]:
            write_peak_cache(peak)
    if args.json:
        print(json.dumps(peak))
    else:
        print(describe(peak), flush=True)


if __name__ == "__main__":
    main()
