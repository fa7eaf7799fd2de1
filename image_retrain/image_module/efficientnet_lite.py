"""EfficientNet-Lite0 as a TF2 SavedModel in the TF Hub image feature-vector convention.

The network is written with plain TF ops inside a `tf.Module` (no Keras), so the SavedModel is small, has exactly the
signatures we declare, and loads with bare `tf.saved_model.load`. Weights come in as numpy arrays named like the
EfficientNet-PyTorch state dict (`_conv_stem.weight`, `_blocks.N._bn1.running_var`, ...); `convert.py` reads them.

Inference-only: every BatchNorm is folded into the preceding convolution (scale into the kernel, shift into a bias),
which is what TFLite does for the same model and saves a third of the ops. The folding happens in float64, so the
result matches the PyTorch reference within float32 rounding (< 1e-4 on logits, see tests/test_image_module.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

INPUT_SIZE = (224, 224)
FEATURE_DIM = 1280
NUM_CLASSES = 1000
# Batch-norm epsilon of the reference (GlobalParams.batch_norm_epsilon for every Lite model).
BN_EPSILON = 1e-3
# The weights were trained on (pixel - 127) / 128 (TF EfficientNet-Lite preprocessing; the BN statistics of the stem
# confirm it, see the docstring of convert.py). Inputs arrive in [0, 1], so pixel = 255 * x.
INPUT_SCALE = 255.0 / 128.0
INPUT_OFFSET = -127.0 / 128.0


@dataclass(frozen=True)
class StageSpec:
    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int


# EfficientNet-Lite0 (width 1.0, depth 1.0, stem and head not scaled): efficientnet_lite_builder's block strings
# 'r1_k3_s11_e1_i32_o16', 'r2_k3_s22_e6_i16_o24', ... decoded.
LITE0_STAGES = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)
LITE0_STEM_FILTERS = 32


@dataclass(frozen=True)
class BlockSpec:
    kernel_size: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.input_filters == self.output_filters


def expand_blocks(stages=LITE0_STAGES) -> list[BlockSpec]:
    """One BlockSpec per MBConv block: the first of a stage does the stride and width change, the rest repeat it."""
    blocks = []
    for stage in stages:
        for i in range(stage.repeats):
            blocks.append(BlockSpec(
                kernel_size=stage.kernel_size,
                stride=stage.stride if i == 0 else 1,
                expand_ratio=stage.expand_ratio,
                input_filters=stage.input_filters if i == 0 else stage.output_filters,
                output_filters=stage.output_filters,
            ))
    return blocks


class WeightReader:
    """Hands out state-dict arrays by name, checks their shapes, and remembers which were used."""

    def __init__(self, state: dict[str, np.ndarray]):
        self._state = state
        self._used: set[str] = set()

    def take(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self._state:
            raise ValueError(f"weights are missing {name!r} (expected shape {shape}); is this EfficientNet-Lite0?")
        array = np.asarray(self._state[name], dtype=np.float64)
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"weight {name!r} has shape {tuple(array.shape)}, expected {tuple(shape)}")
        self._used.add(name)
        return array

    def check_all_used(self) -> None:
        # num_batches_tracked is a training counter with no effect at inference.
        unused = sorted(k for k in self._state if k not in self._used and not k.endswith("num_batches_tracked"))
        if unused:
            raise ValueError(f"weights contain tensors the EfficientNet-Lite0 graph does not use: {unused[:8]}")


def _fold_conv_bn(reader: WeightReader, conv: str, bn: str, out_ch: int, in_ch: int, k: int, depthwise: bool):
    """Torch conv (+ following BN) -> TF kernel (HWIO, or HWC1 for depthwise) and bias, BN folded in float64."""
    if depthwise:
        weight = reader.take(f"{conv}.weight", (out_ch, 1, k, k))
    else:
        weight = reader.take(f"{conv}.weight", (out_ch, in_ch, k, k))
    gamma = reader.take(f"{bn}.weight", (out_ch,))
    beta = reader.take(f"{bn}.bias", (out_ch,))
    mean = reader.take(f"{bn}.running_mean", (out_ch,))
    var = reader.take(f"{bn}.running_var", (out_ch,))
    scale = gamma / np.sqrt(var + BN_EPSILON)
    weight = weight * scale[:, None, None, None]
    bias = beta - mean * scale
    if depthwise:
        kernel = weight.transpose(2, 3, 0, 1)  # (C,1,kh,kw) -> (kh,kw,C,1)
    else:
        kernel = weight.transpose(2, 3, 1, 0)  # (O,I,kh,kw) -> (kh,kw,I,O)
    return kernel.astype(np.float32), bias.astype(np.float32)


class _ConvBN(tf.Module):
    """Convolution with folded batch norm. 'SAME' padding equals the reference's TF-style static padding: for even
    inputs and stride 2 both put the extra pixel at the bottom/right."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray, stride: int, depthwise: bool, name: str):
        super().__init__(name=name)
        self.kernel = tf.Variable(kernel, name="kernel")
        self.bias = tf.Variable(bias, name="bias")
        self._stride = stride
        self._depthwise = depthwise

    def __call__(self, x):
        strides = [1, self._stride, self._stride, 1]
        if self._depthwise:
            y = tf.nn.depthwise_conv2d(x, self.kernel, strides=strides, padding="SAME")
        else:
            y = tf.nn.conv2d(x, self.kernel, strides=strides, padding="SAME")
        return tf.nn.bias_add(y, self.bias)


class _MBConv(tf.Module):
    """Mobile inverted bottleneck without squeeze-excite (Lite): [expand 1x1] -> depthwise -> project 1x1 [+ skip]."""

    def __init__(self, reader: WeightReader, index: int, spec: BlockSpec):
        super().__init__(name=f"block_{index}")
        prefix = f"_blocks.{index}"
        hidden = spec.input_filters * spec.expand_ratio
        self._has_skip = spec.has_skip
        self.expand = None
        if spec.expand_ratio != 1:
            self.expand = _ConvBN(*_fold_conv_bn(reader, f"{prefix}._expand_conv", f"{prefix}._bn0",
                                                 hidden, spec.input_filters, 1, depthwise=False),
                                  stride=1, depthwise=False, name="expand")
        self.depthwise = _ConvBN(*_fold_conv_bn(reader, f"{prefix}._depthwise_conv", f"{prefix}._bn1",
                                                hidden, 1, spec.kernel_size, depthwise=True),
                                 stride=spec.stride, depthwise=True, name="depthwise")
        self.project = _ConvBN(*_fold_conv_bn(reader, f"{prefix}._project_conv", f"{prefix}._bn2",
                                              spec.output_filters, hidden, 1, depthwise=False),
                               stride=1, depthwise=False, name="project")

    def __call__(self, x):
        y = x
        if self.expand is not None:
            y = tf.nn.relu6(self.expand(y))
        y = tf.nn.relu6(self.depthwise(y))
        y = self.project(y)  # linear bottleneck: no activation
        return y + x if self._has_skip else y


class EfficientNetLiteModule(tf.Module):
    """The exported object: `module(images)` and signature `serving_default` give [B, 1280] features,
    signature `imagenet_logits` gives [B, 1000] ImageNet logits; images are float32 [B, 224, 224, 3] in [0, 1]
    (`module(images)` takes any height and width: the network is fully convolutional up to the global pooling)."""

    # TF Hub's reusable-SavedModel API asks for plain `variables`, `trainable_variables` and `regularization_losses`
    # attributes on the restored object; tf.Module's same-named properties are not saved, so shadow them with
    # tracked lists (set at the end of __init__).
    variables = None
    trainable_variables = None
    regularization_losses = None

    def __init__(self, state: dict[str, np.ndarray], name: str = "efficientnet_lite0"):
        super().__init__(name=name)
        reader = WeightReader(state)
        self.stem = _ConvBN(*_fold_conv_bn(reader, "_conv_stem", "_bn0", LITE0_STEM_FILTERS, 3, 3, depthwise=False),
                            stride=2, depthwise=False, name="stem")
        self.blocks = [_MBConv(reader, i, spec) for i, spec in enumerate(expand_blocks())]
        last_filters = LITE0_STAGES[-1].output_filters
        self.head = _ConvBN(*_fold_conv_bn(reader, "_conv_head", "_bn1", FEATURE_DIM, last_filters, 1,
                                           depthwise=False),
                            stride=1, depthwise=False, name="head")
        fc_weight = reader.take("_fc.weight", (NUM_CLASSES, FEATURE_DIM))
        fc_bias = reader.take("_fc.bias", (NUM_CLASSES,))
        self.classifier_kernel = tf.Variable(fc_weight.T.astype(np.float32), name="classifier_kernel")
        self.classifier_bias = tf.Variable(fc_bias.astype(np.float32), name="classifier_bias")
        reader.check_all_used()
        # Forward order (stem first, feature head last), as Keras-built TF Hub modules list theirs: "fine-tune the
        # top N variables" then means the layers nearest the features. The ImageNet classifier is not part of the
        # feature vector, so it is not trainable here.
        layers = [self.stem] + [conv for block in self.blocks
                                for conv in (block.expand, block.depthwise, block.project) if conv is not None]
        feature_weights = [v for layer in layers + [self.head] for v in (layer.kernel, layer.bias)]
        self.variables = feature_weights + [self.classifier_kernel, self.classifier_bias]
        self.trainable_variables = list(feature_weights)
        self.regularization_losses = []

    def _features(self, images):
        x = images * INPUT_SCALE + INPUT_OFFSET
        x = tf.nn.relu6(self.stem(x))
        for block in self.blocks:
            x = block(x)
        x = tf.nn.relu6(self.head(x))
        return tf.reduce_mean(x, axis=[1, 2])

    # Any spatial size (fine-tuning at the data's native 300 px, say); the signatures below keep the trained 224.
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        return self._features(images)

    @tf.function(input_signature=[tf.TensorSpec([None, INPUT_SIZE[0], INPUT_SIZE[1], 3], tf.float32)])
    def imagenet_logits(self, images):
        return tf.nn.bias_add(tf.matmul(self._features(images), self.classifier_kernel), self.classifier_bias)

    def signatures(self) -> dict:
        """Signature functions for tf.saved_model.save: named inputs/outputs for TF Serving style callers."""

        @tf.function(input_signature=[tf.TensorSpec([None, INPUT_SIZE[0], INPUT_SIZE[1], 3], tf.float32,
                                                    name="inputs")])
        def serving_default(inputs):
            return {"feature_vector": self.__call__(inputs)}

        @tf.function(input_signature=[tf.TensorSpec([None, INPUT_SIZE[0], INPUT_SIZE[1], 3], tf.float32,
                                                    name="inputs")])
        def imagenet_logits(inputs):
            return {"logits": self.imagenet_logits(inputs)}

        return {"serving_default": serving_default.get_concrete_function(),
                "imagenet_logits": imagenet_logits.get_concrete_function()}
