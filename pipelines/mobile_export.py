"""Export a trained classifier for apps: a LiteRT (TFLite) model or a Core ML package.

  image-retrain export --format tflite MODEL_DIR OUT.tflite
  image-retrain export --format coreml MODEL_DIR OUT.mlpackage

MODEL_DIR is a version folder the pipeline pushed (or a model base path: its highest numeric version is used).
Both formats hold the classifier's network (pretrained module + trained head, fine-tuned weights included): input an
RGB image of the model's size (TFLite: float32 [1, h, w, 3] in [0, 1]; Core ML: an RGB image), output one softmax
score per label, for one view of the image (a model trained with `test_time_views` averages the scores of several
mirrored views when served; an app may do the same). Decoding and resizing are the app's job (the served SavedModel
does them with bilinear, antialiased resizing). TFLite carries the labels as metadata entries `labels.txt` and
`image_retrain.json`; Core ML as a classifier's class labels. coremltools converts on Linux, but only Apple systems
run Core ML models, so here the package is checked by its spec (inputs, outputs, labels).
"""
from __future__ import annotations

import argparse
import os
import sys

from image_retrain.ingestion_files import read_labels_file
from serving.model_format import LABELS_ASSET, NETWORK_INPUT, NETWORK_OUTPUT

EXTENSIONS = {"tflite": ".tflite", "coreml": ".mlpackage"}
FORMATS = tuple(EXTENSIONS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, required=True, help="tflite (LiteRT) or coreml (.mlpackage)")
    parser.add_argument("model_dir", metavar="MODEL_DIR",
                        help="pushed version folder (SavedModel) or model base path (highest version is used)")
    parser.add_argument("out", metavar="OUT", help="output file (.tflite) or package directory (.mlpackage)")


class ExportedClassifier:
    """The pieces of a pushed classifier SavedModel that the mobile formats need."""

    def __init__(self, model_dir: str):
        import tensorflow as tf

        from serving import versions

        self.path = versions.version_folder(model_dir)
        self.model = tf.saved_model.load(self.path)
        if not hasattr(self.model, "network"):
            raise ValueError(f"{self.path} is not an image-retrain classifier export (it has no `network` function; "
                             f"re-export it with this version of the trainer)")
        self.labels = read_labels_file(os.path.join(self.path, LABELS_ASSET))
        (spec,) = self.model.network.concrete_functions[0].structured_input_signature[0]
        self.input_size = (int(spec.shape[1]), int(spec.shape[2]))

    def network_function(self, batch: int | None):
        """images float32 [batch, h, w, 3] -> {scores}, as a concrete function of the restored network."""
        import tensorflow as tf

        height, width = self.input_size
        function = tf.function(lambda images: self.model.network(images),
                               input_signature=[tf.TensorSpec([batch, height, width, 3], tf.float32,
                                                              name=NETWORK_INPUT)])
        return function.get_concrete_function()


def export_tflite(classifier: ExportedClassifier, out: str) -> float:
    """Writes the LiteRT model with its labels; returns max |LiteRT - TF| on the probe batch (an error above the
    tolerance)."""
    import tensorflow as tf

    from image_retrain import litert_conversion
    from pipelines.models.saved_model_export import litert_metadata

    model = litert_conversion.convert(classifier.network_function(None), classifier.model)
    difference = litert_conversion.max_difference(
        model, lambda images: classifier.model.network(tf.constant(images)), NETWORK_INPUT,
        litert_conversion.probe_images(classifier.input_size))
    if difference > litert_conversion.TOLERANCE:
        raise ValueError(f"the LiteRT conversion differs from TensorFlow by {difference:.2e} on the probe batch "
                         f"(tolerance {litert_conversion.TOLERANCE:.0e}); not writing {out}")
    litert_conversion.write_atomically(
        out, litert_conversion.with_metadata(model, litert_metadata(classifier.labels, classifier.input_size)))
    return difference


def export_coreml(classifier: ExportedClassifier, out: str):
    """Writes an ML Program package (float32 compute, so scores match TF): input `images` an RGB image of the model's
    size, scaled to [0, 1]; outputs `classLabel` and `classLabel_probs`, a classifier over the labels."""
    import coremltools as ct
    import tensorflow as tf

    height, width = classifier.input_size
    network = classifier.network_function(1)
    scores = tf.function(lambda images: network(images)[NETWORK_OUTPUT],
                         input_signature=network.structured_input_signature[0]).get_concrete_function()
    model = ct.convert(
        [scores], source="tensorflow", convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
        inputs=[ct.ImageType(name=NETWORK_INPUT, shape=(1, height, width, 3), scale=1 / 255.0,
                             color_layout=ct.colorlayout.RGB)],
        classifier_config=ct.ClassifierConfig(classifier.labels))
    model.short_description = f"image-retrain classifier over {len(classifier.labels)} labels"
    model.save(out)
    return model


def main(args: argparse.Namespace) -> int:
    try:
        classifier = ExportedClassifier(args.model_dir)
        if args.format == "tflite":
            difference = export_tflite(classifier, args.out)
            print(f"{args.out}: LiteRT classifier, {len(classifier.labels)} labels, input float32 RGB "
                  f"[1, {classifier.input_size[0]}, {classifier.input_size[1]}, 3] in [0, 1]; max |difference| to "
                  f"TensorFlow on the probe batch {difference:.1e}")
        else:
            export_coreml(classifier, args.out)
            print(f"{args.out}: Core ML classifier, {len(classifier.labels)} labels, input RGB image "
                  f"{classifier.input_size[1]}x{classifier.input_size[0]}")
        return 0
    except (ValueError, OSError) as error:
        print(f"image-retrain export: error: {error}", file=sys.stderr)
        return 1
