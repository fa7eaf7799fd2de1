"""TF Serving's integration-test SavedModels, rebuilt with TensorFlow (the upstream blobs cannot be downloaded here).

Each writer reproduces the signatures of one directory under tensorflow_serving/servables/tensorflow/testdata/ (names,
input/output keys, tensor names, dtypes, shapes, method_name), following upstream's own generators:

* saved_model_half_plus_two_cpu/00000123: TF1 graph from saved_model_half_plus_two.py (a=0.5, b=2, c=3; x and x2
  parsed from a serialized tf.Example fed at `tf_example:0`, which has unknown rank in the checked-in blob); signatures
  serving_default, classify_x_to_y, regress_x_to_y, regress_x_to_y2, regress_x2_to_y3; an asset file and an init op.
* saved_model_half_plus_three/00000123: TF1, y = 0.5 x + 3; serving_default and `tensorflow/serving/regress`.
* saved_model_half_plus_two_tf2_cpu/00000123: TF2 tf.saved_model.save; every signature keeps method_name
  `tensorflow/serving/predict` (Classify/Regress must still accept them: --enable_signature_method_name_check=false).
"""
from __future__ import annotations

import os

UPSTREAM_VERSION_DIR = "00000123"


def write_half_plus_two_cpu(export_dir: str) -> str:
    import tensorflow.compat.v1 as tf

    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        a = tf.Variable(0.5, name="a")
        b = tf.Variable(2.0, name="b")
        c = tf.Variable(3.0, name="c")
        serialized_tf_example = tf.placeholder(tf.string, name="tf_example")
        features = tf.parse_example(serialized_tf_example, {
            "x": tf.FixedLenFeature([1], dtype=tf.float32),
            "x2": tf.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
        })
        # The blob's graph (older TF) inferred [-1, 1] for the parsed features from the unknown-rank input.
        features["x"].set_shape([None, 1])
        features["x2"].set_shape([None, 1])
        x = tf.identity(features["x"], name="x")
        y = tf.identity(tf.add(tf.multiply(a, x), b), name="y")
        y2 = tf.identity(tf.add(tf.multiply(a, x), c), name="y2")
        x2 = tf.identity(features["x2"], name="x2")
        a2 = tf.Variable(0.5, name="a2")
        c2 = tf.Variable(3.0, name="c2")
        y3 = tf.identity(tf.add(tf.multiply(a2, x2), c2), name="y3")
        assign_filename_op = _asset_init_op(tf)

        signature_def_map = {
            "regress_x_to_y": _regression_signature(tf, serialized_tf_example, y),
            "regress_x_to_y2": _regression_signature(tf, serialized_tf_example, y2),
            "regress_x2_to_y3": _regression_signature(tf, x2, y3),
            "classify_x_to_y": _classification_signature(tf, serialized_tf_example, y),
            "serving_default": _predict_signature(tf, x, y),
        }
        sess.run(tf.global_variables_initializer())
        _save(tf, sess, export_dir, signature_def_map, main_op=tf.group(assign_filename_op))
    return export_dir


def write_half_plus_three(export_dir: str) -> str:
    import tensorflow.compat.v1 as tf

    with tf.Graph().as_default() as graph, tf.Session(graph=graph) as sess:
        a = tf.Variable(0.5, name="a")
        b = tf.Variable(3.0, name="b")
        serialized_tf_example = tf.placeholder(tf.string, name="tf_example")
        features = tf.parse_example(serialized_tf_example, {"x": tf.FixedLenFeature([1], dtype=tf.float32)})
        features["x"].set_shape([None, 1])
        x = tf.identity(features["x"], name="x")
        y = tf.identity(tf.add(tf.multiply(a, x), b), name="y")
        sess.run(tf.global_variables_initializer())
        _save(tf, sess, export_dir, {
            "serving_default": _predict_signature(tf, x, y),
            "tensorflow/serving/regress": _regression_signature(tf, serialized_tf_example, tf.identity(y)),
        })
    return export_dir


def write_half_plus_two_tf2(export_dir: str) -> str:
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(0.5)
            self.b = tf.Variable(2.0)
            self.c = tf.Variable(3.0)

        def _parse(self, serialized):
            return tf.io.parse_example(serialized, {
                "x": tf.io.FixedLenFeature([1], tf.float32),
                "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])})

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify_x_to_y(self, inputs):
            return {"scores": self.a * self._parse(inputs)["x"] + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_x_to_y(self, inputs):
            return {"outputs": self.a * self._parse(inputs)["x"] + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress_x_to_y2(self, inputs):
            return {"outputs": self.a * self._parse(inputs)["x"] + self.c}

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
        def regress_x2_to_y3(self, inputs):
            return {"outputs": self.a * inputs + self.c}

        @tf.function(input_signature=[tf.TensorSpec([1], tf.float32, name="inputs")])
        def classify_x2_to_y3(self, inputs):
            return {"scores": self.a * inputs + self.c}

    module = HalfPlusTwo()
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.predict,
        "classify_x_to_y": module.classify_x_to_y,
        "regress_x_to_y": module.regress_x_to_y,
        "regress_x_to_y2": module.regress_x_to_y2,
        "regress_x2_to_y3": module.regress_x2_to_y3,
        "classify_x2_to_y3": module.classify_x2_to_y3,
    })
    return export_dir


def write_tf_saved_model_save(export_dir: str) -> str:
    """test_tf_saved_model_save: y = v1 * v2 * x with v1=3, v2=2, x TensorSpec(None); the only signature."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.v1 = tf.Variable(3.0)
    root.v2 = tf.Variable(2.0)
    root.f = tf.function(lambda x: {"y": root.v1 * root.v2 * x})
    tf.saved_model.save(root, export_dir, root.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))
    return export_dir


def write_tf_saved_model_save_multiple_signatures(export_dir: str) -> str:
    """test_tf_saved_model_save_multiple_signatures: serving_default -> 1.0, custom_signature_key -> 2.0."""
    import tensorflow as tf

    root = tf.train.Checkpoint()
    root.f = tf.function(lambda x: {"y": 1.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    root.g = tf.function(lambda x: {"y": 2.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    tf.saved_model.save(root, export_dir, signatures={"serving_default": root.f, "custom_signature_key": root.g})
    return export_dir


def _asset_init_op(tf):
    """Like upstream: an asset file outside the export (the builder copies it into assets/) plus an op using it."""
    import tempfile

    assets_dir = tempfile.mkdtemp(prefix="original_assets_")
    asset_path = os.path.join(assets_dir, "foo.txt")
    with open(asset_path, "w", encoding="utf-8") as f:
        f.write("asset-file-contents")
    tf.add_to_collection(tf.GraphKeys.ASSET_FILEPATHS, tf.constant(asset_path))
    filename_tensor = tf.Variable("foo.txt", name="filename_tensor", trainable=False, collections=[])
    return filename_tensor.assign("foo.txt")


def _predict_signature(tf, x, y):
    return tf.saved_model.signature_def_utils.build_signature_def(
        {"x": tf.saved_model.utils.build_tensor_info(x)}, {"y": tf.saved_model.utils.build_tensor_info(y)},
        tf.saved_model.signature_constants.PREDICT_METHOD_NAME)


def _regression_signature(tf, input_tensor, output_tensor):
    constants = tf.saved_model.signature_constants
    return tf.saved_model.signature_def_utils.build_signature_def(
        {constants.REGRESS_INPUTS: tf.saved_model.utils.build_tensor_info(input_tensor)},
        {constants.REGRESS_OUTPUTS: tf.saved_model.utils.build_tensor_info(output_tensor)},
        constants.REGRESS_METHOD_NAME)


def _classification_signature(tf, input_tensor, scores_tensor):
    constants = tf.saved_model.signature_constants
    return tf.saved_model.signature_def_utils.build_signature_def(
        {constants.CLASSIFY_INPUTS: tf.saved_model.utils.build_tensor_info(input_tensor)},
        {constants.CLASSIFY_OUTPUT_SCORES: tf.saved_model.utils.build_tensor_info(scores_tensor)},
        constants.CLASSIFY_METHOD_NAME)


def _save(tf, sess, export_dir, signature_def_map, main_op=None):
    builder = tf.saved_model.builder.SavedModelBuilder(export_dir)
    builder.add_meta_graph_and_variables(
        sess, [tf.saved_model.tag_constants.SERVING], signature_def_map=signature_def_map,
        assets_collection=tf.get_collection(tf.GraphKeys.ASSET_FILEPATHS), main_op=main_op)
    builder.save()
