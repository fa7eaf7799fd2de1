"""The served export: raw image bytes in, labels and scores out (TF Serving's SavedModel, plus model.tflite).

The signatures, file names and LiteRT step names are serving/model_format.py's; this module builds the graph that
honours them. The pretrained module is never wrapped in a Keras layer (hub.KerasLayer breaks under Keras 3) but called
from the exported tf.Module's tf.functions.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile

import keras
import tensorflow as tf

from image_retrain import litert_conversion
from image_retrain.contract import LABELS_FILE
from image_retrain.image_decoding import preprocess_batch
from image_retrain.image_limits import MAX_IMAGE_PIXELS
from image_retrain.signature_methods import set_method_names
from image_retrain.warmup_records import warmup_records, write_warmup
from pipelines.models.views import check_test_time_views, dihedral_views, mean_over_views
from serving.model_format import (
    CLASSES_OUTPUT,
    CLASSIFY_SIGNATURE,
    EXAMPLE_IMAGE_FEATURE,
    EXAMPLES_INPUT,
    IMAGE_BYTES_INPUT,
    LABEL_OUTPUT,
    LITERT_DESCRIPTION,
    LITERT_LABELS,
    LITERT_STEPS,
    NETWORK_INPUT,
    NETWORK_OUTPUT,
    PREDICT_SIGNATURE,
    SCORES_OUTPUT,
    TFLITE_FILE,
    inputs_step,
    outputs_step,
)

log = logging.getLogger(__name__)


class DenseStack(tf.Module):
    """The trained head's dense layers as plain tf.Variables (dropout is inactive at inference).

    Keras 3 variables captured in a tf.function do not restore under TF1-style SavedModel loaders — the path TF
    Serving's C++ loader takes ("Resource localhost/scores/bias does not exist") — so the exported graph carries
    ordinary variables with the trained values instead.
    """

    def __init__(self, head):
        super().__init__(name="head")
        self.kernels, self.biases, self._activations = [], [], []
        for layer in head.layers:
            if isinstance(layer, keras.layers.Dense):
                self.kernels.append(tf.Variable(layer.kernel.numpy(), trainable=False, name=f"{layer.name}_kernel"))
                self.biases.append(tf.Variable(layer.bias.numpy(), trainable=False, name=f"{layer.name}_bias"))
                self._activations.append(layer.get_config()["activation"])

    def __call__(self, embeddings):
        x = embeddings
        for kernel, bias, activation in zip(self.kernels, self.biases, self._activations):
            x = tf.matmul(x, kernel) + bias
            x = {"relu": tf.nn.relu, "softmax": tf.nn.softmax, "linear": tf.identity}[activation](x)
        return x


IMAGE_BYTES_SPEC = tf.TensorSpec([None], tf.string, name=IMAGE_BYTES_INPUT)
EXAMPLES_SPEC = tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)


class ImageClassifier(tf.Module):
    """Raw image bytes -> labels and scores: decode + resize + pretrained module + trained head.

    Each signature is `outputs(network(inputs(...)))`, and those three parts are saved too: `network` (pixels ->
    scores) is what `model.tflite` holds, and `litert` carries each signature's TF input and output steps, so a
    server honouring --prefer_tflite_model serves the same signatures with the network on LiteRT. Test-time views
    live in the steps (inputs: each image's views; outputs: their mean), so `network` sees one view per row.
    """

    def __init__(self, image_module, head, labels: list[str], labels_path: str, max_image_pixels: int,
                 test_time_views: int = 1):
        super().__init__(name="image_classifier")
        self.image_module = image_module.module      # tracked, so the module's variables are saved
        self._embed = image_module
        self.head = DenseStack(head)
        self.vocabulary = tf.saved_model.Asset(labels_path)   # ships as assets/labels.txt
        self._labels = tf.constant(labels)
        self.input_size = tuple(image_module.input_size)
        self._max_image_pixels = max_image_pixels
        height, width = self.input_size
        self.test_time_views = check_test_time_views(test_time_views, self.input_size)
        self.network = tf.function(
            lambda images: {NETWORK_OUTPUT: self.head(self._embed(images))},
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name=NETWORK_INPUT)])
        self.litert = LiteRTSteps({
            PREDICT_SIGNATURE: (self._images_from_bytes, self._serve_outputs, IMAGE_BYTES_SPEC),
            CLASSIFY_SIGNATURE: (self._images_from_examples, self._classify_outputs, EXAMPLES_SPEC),
        })

    def _images_from_bytes(self, image_bytes):
        # Images whose headers claim more than max_image_pixels are refused before decoding (INVALID_ARGUMENT).
        images = preprocess_batch(image_bytes, self.input_size, self._max_image_pixels)
        return {NETWORK_INPUT: dihedral_views(images, self.test_time_views)}

    def _images_from_examples(self, inputs):
        features = tf.io.parse_example(inputs, {EXAMPLE_IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)})
        return self._images_from_bytes(features[EXAMPLE_IMAGE_FEATURE])

    def _classes(self, scores):
        return tf.tile(self._labels[tf.newaxis, :], [tf.shape(scores)[0], 1])

    def _scores(self, network_outputs):
        return mean_over_views(network_outputs[NETWORK_OUTPUT], self.test_time_views)

    def _serve_outputs(self, network_outputs):
        scores = self._scores(network_outputs)
        return {SCORES_OUTPUT: scores, CLASSES_OUTPUT: self._classes(scores),
                LABEL_OUTPUT: tf.gather(self._labels, tf.argmax(scores, axis=1))}

    def _classify_outputs(self, network_outputs):
        scores = self._scores(network_outputs)
        return {CLASSES_OUTPUT: self._classes(scores), SCORES_OUTPUT: scores}

    @tf.function(input_signature=[IMAGE_BYTES_SPEC])
    def serve(self, image_bytes):
        return self._serve_outputs(self.network(**self._images_from_bytes(image_bytes)))

    @tf.function(input_signature=[EXAMPLES_SPEC])
    def classify(self, serialized_examples):
        return self._classify_outputs(self.network(**self._images_from_examples(serialized_examples)))


class LiteRTSteps(tf.Module):
    """Per signature, the TF steps around the network: `<signature>_inputs` (the signature's input -> the network's
    inputs) and `<signature>_outputs` (the network's outputs -> the signature's outputs)."""

    def __init__(self, steps: dict):
        super().__init__(name=LITERT_STEPS)
        for signature, (inputs, outputs, input_spec) in steps.items():
            setattr(self, inputs_step(signature), tf.function(inputs, input_signature=[input_spec]))
            network_outputs = {NETWORK_OUTPUT: tf.TensorSpec([None, None], tf.float32, name=NETWORK_OUTPUT)}
            setattr(self, outputs_step(signature), tf.function(outputs, input_signature=[network_outputs]))


def export_litert_model(classifier: ImageClassifier, labels: list[str], export_dir: str) -> str | None:
    """Writes `model.tflite` (the network: float32 RGB [B, h, w, 3] in [0, 1] -> softmax scores, labels embedded
    as metadata) into `export_dir` when the conversion matches TF on a probe batch; else logs why and writes
    nothing (a server then serves the SavedModel)."""
    try:
        model = litert_conversion.convert(classifier.network.get_concrete_function(), classifier)
    except Exception as error:  # noqa: BLE001 - the converter raises many types; any of them means "no tflite"
        log.warning("no %s: the network does not convert to LiteRT: %s", TFLITE_FILE, error)
        return None
    difference = litert_conversion.max_difference(
        model, lambda images: classifier.network(tf.constant(images)), NETWORK_INPUT,
        litert_conversion.probe_images(classifier.input_size))
    if difference > litert_conversion.TOLERANCE:
        log.warning("no %s: LiteRT scores differ from TensorFlow by %.2e on the probe batch (tolerance %.0e)",
                    TFLITE_FILE, difference, litert_conversion.TOLERANCE)
        return None
    path = os.path.join(export_dir, TFLITE_FILE)
    litert_conversion.write_atomically(
        path, litert_conversion.with_metadata(model, litert_metadata(labels, classifier.input_size)))
    log.info("wrote %s (max |difference| to TensorFlow on the probe batch: %.2e)", path, difference)
    return path


def litert_metadata(labels: list[str], input_size: tuple[int, int]) -> dict[str, bytes]:
    return {
        LITERT_LABELS: ("\n".join(labels) + "\n").encode(),
        LITERT_DESCRIPTION: json.dumps({
            "input": {"name": NETWORK_INPUT, "shape": [-1, input_size[0], input_size[1], 3], "dtype": "float32",
                      "color_space": "RGB", "range": [0.0, 1.0],
                      "resize": "bilinear with antialiasing from the decoded image"},
            "output": {"name": NETWORK_OUTPUT, "kind": "softmax scores, one per label in labels.txt order"},
        }, indent=2).encode(),
    }


def export_serving_model(image_module, head, labels: list[str], export_dir: str,
                         max_image_pixels: int = MAX_IMAGE_PIXELS, test_time_views: int = 1,
                         warmup_images: list[bytes] = ()) -> None:
    """The SavedModel (both signatures), model.tflite when it converts, and, given `warmup_images` (held-out
    encoded images), warmup records holding this in-process model's answers (image_retrain/warmup_records.py)."""
    with tempfile.TemporaryDirectory() as scratch:
        labels_path = os.path.join(scratch, LABELS_FILE)
        with open(labels_path, "w") as f:
            f.write("\n".join(labels) + "\n")
        classifier = ImageClassifier(image_module, head, labels, labels_path, max_image_pixels, test_time_views)
        tf.saved_model.save(classifier, export_dir, signatures={
            PREDICT_SIGNATURE: classifier.serve.get_concrete_function(),
            CLASSIFY_SIGNATURE: classifier.classify.get_concrete_function(),
        })
        # TF Serving's --prefer_tflite_model convention: model.tflite beside the SavedModel in the version folder.
        export_litert_model(classifier, labels, export_dir)
        if warmup_images:
            write_warmup(export_dir, warmup_records(classifier, list(warmup_images)))
    # TF Serving's Classify API only accepts signatures marked as classification signatures.
    set_method_names(export_dir, {CLASSIFY_SIGNATURE: tf.saved_model.CLASSIFY_METHOD_NAME})
