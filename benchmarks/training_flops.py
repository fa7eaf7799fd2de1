"""FLOPs of one fine-tuning step, counted by TensorFlow's profiler on the step's own graph: the trainer's `train_step`
traced at a fixed batch, the module's restored functions inlined (Grappler's function optimizer, nothing else), shapes
inferred, every op's registered "flops" statistic summed (the statistics tf.compat.v1.profiler's float_operation
reads). TensorFlow
registers none for the depthwise convolution's two gradients; they are added here with the forward's count (the same
multiply-adds: one per output-gradient element per filter tap).

    from benchmarks.training_flops import step_gflops_per_image
"""
from __future__ import annotations

import collections

import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.framework import graph_util, meta_graph, ops
from tensorflow.python.grappler import tf_optimizer

from pipelines.models.fine_tune import (
    NesterovSGD,
    fine_tuned_variables,
    layer_rate_scales,
    learning_rate_schedule,
    train_step,
)


@ops.RegisterStatistics("DepthwiseConv2dNativeBackpropInput", "flops")
@ops.RegisterStatistics("DepthwiseConv2dNativeBackpropFilter", "flops")
def _depthwise_gradient_flops(graph, node):
    out_backprop = graph_util.tensor_shape_from_node_def_name(graph, node.input[2])
    filter_shape = _filter_shape(graph, node)
    return ops.OpStats("flops", 2 * out_backprop.num_elements() * filter_shape[0] * filter_shape[1])


def _filter_shape(graph, node) -> list[int]:
    """[kh, kw, ...]: the filter's shape (BackpropInput's input 1) or the filter_sizes constant (BackpropFilter's)."""
    tensor = graph.as_graph_element(node.input[1] if ":" in node.input[1] else node.input[1] + ":0")
    if node.op == "DepthwiseConv2dNativeBackpropInput":
        return tensor.shape.as_list()
    return [int(v) for v in tf.get_static_value(tensor)]


def inlined_step_graph(step, batch_size: int, size: tuple[int, int]) -> tf.Graph:
    """The step's graph at [batch_size, h, w, 3] with every function call inlined and every shape known, pruned to
    what its outputs need."""
    concrete = step.get_concrete_function(tf.TensorSpec([batch_size, size[0], size[1], 3], tf.float32),
                                          tf.TensorSpec([batch_size], tf.int64))
    graph_def = meta_graph.create_meta_graph_def(graph=concrete.graph)
    graph_def.collection_def["train_op"].node_list.value.extend(o.op.name for o in concrete.outputs)
    config = config_pb2.ConfigProto()
    config.graph_options.rewrite_options.optimizers.append("function")
    config.graph_options.rewrite_options.min_graph_nodes = -1
    # Only what the outputs need (their control inputs hold the variable updates): a gradient nobody reads, such as
    # the input image's, is pruned at run time too.
    needed = tf.compat.v1.graph_util.extract_sub_graph(tf_optimizer.OptimizeGraph(config, graph_def),
                                                       [o.op.name for o in concrete.outputs])
    inlined = tf.Graph()
    with inlined.as_default():
        tf.graph_util.import_graph_def(needed, name="")
    return inlined


def flops_by_op_type(graph: tf.Graph) -> dict[str, int]:
    """Registered FLOPs summed per op type. Ops whose shapes stay unknown are skipped: the head's (its Keras variables
    lose their static shapes in the imported graph; 2 x 1280 x classes multiply-adds an image, forward) and a few
    of the loss and the learning-rate schedule. A convolution among them is an error."""
    totals = collections.Counter()
    for op in graph.get_operations():
        try:
            flops = ops.get_stats_for_node_def(graph, op.node_def, "flops").value
        except ValueError:
            if "Conv" in op.type:
                raise
            continue
        if flops:
            totals[op.type] += flops
    return dict(totals)


def step_gflops_per_image(image_module, head, num_classes: int, hp: dict,
                          batch_size: int = 4) -> tuple[float, dict[str, float]]:
    """(GFLOP per training image, GFLOP per image by op type) of the trainer's step with `hp`'s fine-tuned
    variables, at the module's input size."""
    module_variables = fine_tuned_variables(image_module, hp["fine_tune_variables"])
    variables = module_variables + list(head.trainable_variables)
    scales = layer_rate_scales(module_variables, head.trainable_variables, hp["fine_tune_layer_decay"])
    optimizer = NesterovSGD(variables, scales, learning_rate_schedule(1, hp)[0])
    step = train_step(image_module, head, variables, optimizer, None, num_classes, hp, None)
    by_type = flops_by_op_type(inlined_step_graph(step, batch_size, image_module.input_size))
    per_image = {op_type: flops / batch_size / 1e9 for op_type, flops in by_type.items()}
    return sum(per_image.values()), per_image
