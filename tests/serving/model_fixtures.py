"""Real SavedModels for the serving tests, written with TensorFlow at test time.

* half_plus_two: TF Serving's canonical test model rebuilt in TF2 (y = 0.5x + 2) with the same signature names as
  upstream's `saved_model_half_plus_two_*`: predict (`serving_default`), classify (`classify_x_to_y`) and regress
  (`regress_x_to_y`, `regress_x_to_y2`) signatures, plus a two-input predict signature (`sum_ab`).
* image classifier: the contract the pipeline exports (`serving_default`: image_bytes -> scores/classes/label;
  `classify`: serialized tf.Example with `image_raw` -> classes/scores). Decodes with image_retrain/image_decoding.py,
  averages the colour of a tiny resize, and scores it with fixed weights, so a red image is "red", etc.
* call counter: answers how many times it has run, so a test sees what warmup replayed.
"""
from __future__ import annotations

import os

HALF_PLUS_TWO_VERSION = 123
CLASSIFIER_LABELS = ("red", "green", "blue")


def write_half_plus_two(export_dir: str, offset: float = 2.0) -> str:
    """y = 0.5 x + offset (offset 2.0 -> half_plus_two, 3.0 -> half_plus_three)."""
    import tensorflow as tf

    from image_retrain.signature_methods import set_method_names

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(offset, name="b")
            self.c = tf.Variable(offset + 1.0, name="c")

        def _parse_x(self, serialized):
            features = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
            return features["x"]

        @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                      tf.TensorSpec([None], tf.float32, name="b")])
        def sum_ab(self, a, b):
            return {"sum": a + b, "diff": a - b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            return {"scores": self.a * self._parse_x(inputs) + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": self.a * self._parse_x(inputs) + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress2(self, inputs):
            return {"outputs": self.a * self._parse_x(inputs) + self.c}

    module = HalfPlusTwo()
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.predict,
        "sum_ab": module.sum_ab,
        "classify_x_to_y": module.classify,
        "regress_x_to_y": module.regress,
        "regress_x_to_y2": module.regress2,
    })
    classify, regress = tf.saved_model.CLASSIFY_METHOD_NAME, tf.saved_model.REGRESS_METHOD_NAME
    set_method_names(export_dir, {"classify_x_to_y": classify, "regress_x_to_y": regress, "regress_x_to_y2": regress})
    return export_dir


def write_image_classifier(export_dir: str, labels=CLASSIFIER_LABELS) -> str:
    """The pipeline's serving contract on a tiny real model: mean RGB -> dense -> softmax over `labels`."""
    import numpy as np
    import tensorflow as tf

    from image_retrain.image_decoding import preprocess_batch
    from image_retrain.signature_methods import set_method_names

    num_classes = len(labels)
    weights = np.zeros((3, num_classes), np.float32)
    for i in range(min(3, num_classes)):
        weights[i, i] = 10.0

    class Classifier(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(weights, name="kernel")
            self.bias = tf.Variable(np.zeros(num_classes, np.float32), name="bias")
            self.vocabulary = tf.constant(list(labels))

        def _outputs(self, image_bytes):
            pixels = preprocess_batch(image_bytes, (8, 8))
            mean_rgb = tf.reduce_mean(pixels, axis=[1, 2])
            scores = tf.nn.softmax(tf.matmul(mean_rgb, self.kernel) + self.bias)
            batch = tf.shape(image_bytes)[0]
            classes = tf.tile(self.vocabulary[tf.newaxis, :], [batch, 1])
            label = tf.gather(self.vocabulary, tf.argmax(scores, axis=1))
            return {"scores": scores, "classes": classes, "label": label}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            return self._outputs(image_bytes)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            features = tf.io.parse_example(inputs, {"image_raw": tf.io.FixedLenFeature([], tf.string)})
            outputs = self._outputs(features["image_raw"])
            return {"classes": outputs["classes"], "scores": outputs["scores"]}

    module = Classifier()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve, "classify": module.classify})
    set_method_names(export_dir, {"classify": tf.saved_model.CLASSIFY_METHOD_NAME})
    return export_dir


def solid_image_bytes(rgb: tuple[int, int, int], fmt: str = "JPEG", size: int = 16) -> bytes:
    """A solid-colour image encoded as `fmt`."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def versioned(base_path: str, version: int) -> str:
    path = os.path.join(base_path, str(version))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return path


def write_ref_output_model(export_dir: str) -> str:
    """A TF1 SavedModel whose predict signature also outputs a variable itself (a DT_FLOAT_REF tensor), as TF Serving's
    C++ tests have: y = 2x and v = the variable [1, 2]."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session() as session:
        x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        variable = tf.compat.v1.Variable([1.0, 2.0], use_resource=False, name="v")
        session.run(tf.compat.v1.global_variables_initializer())
        signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": x * 2.0, "v": variable._ref()})
        builder = tf.compat.v1.saved_model.Builder(export_dir)
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
        builder.save()
    return export_dir


def write_bad_outputs_model(export_dir: str) -> str:
    """Classify/Regress signatures whose outputs break TF Serving's checks (classifier.cc, regressor.cc): integer
    classes, double scores, rank-1 scores, an integer regression, plus a well-formed regression."""
    import tensorflow as tf

    from image_retrain.signature_methods import set_method_names

    spec = [tf.TensorSpec([None], tf.string, name="inputs")]

    class BadOutputs(tf.Module):
        @tf.function(input_signature=spec)
        def int_classes(self, inputs):
            batch = tf.shape(inputs)[0]
            return {"classes": tf.zeros([batch, 2], tf.int64), "scores": tf.zeros([batch, 2])}

        @tf.function(input_signature=spec)
        def double_scores(self, inputs):
            return {"scores": tf.zeros([tf.shape(inputs)[0], 2], tf.float64)}

        @tf.function(input_signature=spec)
        def rank1_scores(self, inputs):
            return {"scores": tf.zeros([tf.shape(inputs)[0]])}

        @tf.function(input_signature=spec)
        def int_regression(self, inputs):
            return {"outputs": tf.zeros([tf.shape(inputs)[0]], tf.int32)}

        @tf.function(input_signature=spec)
        def regression(self, inputs):
            return {"outputs": tf.ones([tf.shape(inputs)[0]])}

    module = BadOutputs()
    classify, regress = tf.saved_model.CLASSIFY_METHOD_NAME, tf.saved_model.REGRESS_METHOD_NAME
    names = {"int_classes": classify, "double_scores": classify, "rank1_scores": classify,
             "int_regression": regress, "regression": regress}
    tf.saved_model.save(module, export_dir, signatures={name: getattr(module, name) for name in names})
    set_method_names(export_dir, names)
    return export_dir


def write_slow_model(export_dir: str) -> str:
    """y = n as float, after max(n) iterations of a 200x200 matmul (~1 ms each): a model run of chosen length."""
    import tensorflow as tf

    class Slow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="n")])
        def spin(self, n):
            matrix = tf.fill([200, 200], 0.001)
            _, product = tf.while_loop(lambda i, acc: i < tf.reduce_max(n),
                                       lambda i, acc: (i + 1, tf.linalg.matmul(acc, matrix) + matrix),
                                       (tf.constant(0, tf.int64), matrix))
            return {"y": tf.cast(n, tf.float32) + 0.0 * tf.reduce_sum(product)}

    module = Slow()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.spin})
    return export_dir


def write_call_counter_model(export_dir: str) -> str:
    """`calls` = how many times the model has run so far, this run included (a variable each run adds 1 to): what
    warmup replayed is visible to the first request."""
    import tensorflow as tf

    class CallCounter(tf.Module):
        def __init__(self):
            super().__init__()
            self.calls = tf.Variable(0.0, name="calls")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def count(self, x):
            self.calls.assign_add(1.0)
            return {"calls": tf.fill(tf.shape(x), self.calls.read_value())}

    module = CallCounter()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.count})
    return export_dir
