"""Where a fine-tuning step's time goes: the trainer's `train_step` on a fixed batch (no input pipeline), traced with
TensorFlow's profiler, its ops' times summed by kind, beside each kind's FLOPs and the bytes its tensors take (counted
on the step's graph: benchmarks/training_flops.py), so each kind's rate reads against the machine's FP32 peak and
memory bandwidth (benchmarks/bench_peak.py): near the peak it is compute-bound, near the bandwidth memory-bound,
far from both it is neither (a slow kernel).

Ops run one at a time here (inter-op parallelism 1), so their times add up to the step; training runs two at a time,
which is a few per cent faster. Bytes are each op's inputs and outputs once: the least it has to move.

    .venv/bin/python benchmarks/bench_step_profile.py [--batch-size 32] [--image-size 224] [--steps 3]
        [--jit-compile | --onednn-bfloat16]

--jit-compile times the same step compiled by XLA; --onednn-bfloat16 with Grappler's oneDNN auto mixed precision
(convolutions and matmuls rewritten to bfloat16: AMX / AVX512_BF16 only), whose deny list
TF_AUTO_MIXED_PRECISION_GRAPH_REWRITE_DENYLIST_ADD extends (e.g. the depthwise ops). Both print the untraced time only.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe, machine_peak  # noqa: E402

# Op kinds by the op type in the step's graph (oneDNN's runtime names are mapped back to these: `base_op_type`).
KINDS = {
    "Conv2D": "convolution forward (1x1, stem 3x3)",
    "Conv2DBackpropInput": "convolution input gradient",
    "Conv2DBackpropFilter": "convolution weight gradient",
    "DepthwiseConv2dNative": "depthwise forward",
    "DepthwiseConv2dNativeBackpropInput": "depthwise input gradient",
    "DepthwiseConv2dNativeBackpropFilter": "depthwise weight gradient",
}
OTHER = "elementwise and the rest (ReLU6 and its gradient, bias gradients, optimizer)"


def base_op_type(runtime_type: str) -> str:
    """_MklNativeFusedConv2D -> Conv2D, _MklNativeConv2DBackpropFilterWithBias -> Conv2DBackpropFilter, ..."""
    for prefix in ("_MklNative", "_Mkl", "_"):
        runtime_type = runtime_type.removeprefix(prefix)
    return runtime_type.removeprefix("Fused").removesuffix("WithBias")


def op_seconds_by_type(logdir: str, steps: int) -> dict[str, float]:
    """Seconds per step by runtime op type, from the profiler's host trace (events named "<op name>:<op type>")."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0], "rb") as f:
        space.ParseFromString(f.read())
    seconds = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and not name.startswith(("$", "__inference")):
                    seconds[name.rsplit(":", 1)[1]] += event.duration_ps / 1e12 / steps
    return seconds


def tensor_bytes_by_type(graph) -> dict[str, int]:
    totals = collections.Counter()
    for op in graph.get_operations():
        for tensor in list(op.inputs) + list(op.outputs):
            if tensor.shape.is_fully_defined() and tensor.dtype.size:
                totals[op.type] += tensor.shape.num_elements() * tensor.dtype.size
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3)
    variant = parser.add_mutually_exclusive_group()
    variant.add_argument("--jit-compile", action="store_true", help="the step compiled by XLA")
    variant.add_argument("--onednn-bfloat16", action="store_true", help="oneDNN's bfloat16 auto mixed precision")
    args = parser.parse_args()
    print(describe(), flush=True)
    import numpy as np
    import tensorflow as tf

    from benchmarks.training_flops import flops_by_op_type, inlined_step_graph
    from image_retrain.image_module import load_image_module
    from pipelines import configs
    from pipelines.models.fine_tune import NesterovSGD, fine_tuned_variables, layer_rate_scales, train_step
    from pipelines.models.head import build_head
    from pipelines.models.trainer import with_input_size

    tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.onednn_bfloat16:
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    hp = dict(configs.HYPERPARAMETERS)
    image_module = with_input_size(load_image_module(configs.MODULE_HANDLE), args.image_size)
    head = build_head(image_module.feature_dim, 2, hp)
    module_variables = fine_tuned_variables(image_module, hp["fine_tune_variables"])
    variables = module_variables + list(head.trainable_variables)
    scales = layer_rate_scales(module_variables, head.trainable_variables, hp["fine_tune_layer_decay"])
    optimizer = NesterovSGD(variables, scales, lambda _: 0.0)  # rate 0: the same weights every step
    step = train_step(image_module, head, variables, optimizer, None, 2, hp, None)
    graph = inlined_step_graph(step, args.batch_size, image_module.input_size)
    flops, moved = flops_by_op_type(graph), tensor_bytes_by_type(graph)
    if args.jit_compile:
        step = tf.function(step.python_function, jit_compile=True)

    images = tf.random.stateless_uniform([args.batch_size, args.image_size, args.image_size, 3], seed=[1, 2])
    labels = tf.constant(np.arange(args.batch_size) % 2)
    for _ in range(3):  # trace, then warm oneDNN's primitive caches
        float(step(images, labels))
    started = time.perf_counter()
    for _ in range(args.steps):
        float(step(images, labels))
    untraced = (time.perf_counter() - started) / args.steps
    if args.jit_compile or args.onednn_bfloat16:
        print(f"step at batch {args.batch_size}, {args.image_size} px, "
              f"{'XLA' if args.jit_compile else 'oneDNN bfloat16 auto mixed precision'}: {untraced:.3f} s untraced "
              f"({1000 * untraced / args.batch_size:.1f} s per 1,000 images)")
        return
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(args.steps):
            float(step(images, labels))
        tf.profiler.experimental.stop()
        seconds = op_seconds_by_type(logdir, args.steps)

    # Only the graph's ops: the trace also holds the executor's own events (Process, Run); and only the bytes of
    # ops that ran (Grappler removes Identity and the like before the run).
    ran = {base_op_type(runtime_type) for runtime_type in seconds} & set(moved)
    by_kind = collections.defaultdict(lambda: [0.0, 0, 0])  # seconds, FLOPs, bytes
    for runtime_type, value in seconds.items():
        if base_op_type(runtime_type) in ran:
            by_kind[KINDS.get(base_op_type(runtime_type), OTHER)][0] += value
    for op_type in ran:
        kind = KINDS.get(op_type, OTHER)
        by_kind[kind][1] += flops.get(op_type, 0)
        by_kind[kind][2] += moved.get(op_type, 0)
    peak = machine_peak()
    total = sum(value[0] for value in by_kind.values())
    print(f"step at batch {args.batch_size}, {args.image_size} px: {untraced:.3f} s untraced "
          f"({1000 * untraced / args.batch_size:.1f} s per 1,000 images), ops traced {total:.3f} s")
    print(f"{'kind':76s} {'ms':>6s} {'share':>6s} {'GFLOP':>6s} {'GFLOP/s':>8s} {'of peak':>8s} {'GB':>6s} "
          f"{'GB/s':>6s} {'of bw':>6s}")
    for kind, (kind_seconds, kind_flops, kind_bytes) in sorted(by_kind.items(), key=lambda item: -item[1][0]):
        rate, bandwidth = kind_flops / kind_seconds / 1e9, kind_bytes / kind_seconds / 1e9
        print(f"{kind:76s} {1000 * kind_seconds:6.0f} {kind_seconds / total:6.1%} {kind_flops / 1e9:6.1f} "
              f"{rate:8.0f} {rate / peak['fp32_gflops']:8.2f} {kind_bytes / 1e9:6.2f} {bandwidth:6.0f} "
              f"{bandwidth / peak['bandwidth_gbs']:6.2f}")


if __name__ == "__main__":
    main()
