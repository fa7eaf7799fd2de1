"""Marks TF2 SavedModel signatures as Classify/Regress signatures for TensorFlow Serving.

`tf.saved_model.save` writes every signature with method_name `tensorflow/serving/predict`; TF Serving's Classify and
Regress APIs refuse such signatures ("Expected classification signature method_name to be
tensorflow/serving/classify"). TF2 loaders ignore method_name, so rewriting it after saving is safe. The method names
are TensorFlow's own constants: tf.saved_model.CLASSIFY_METHOD_NAME, REGRESS_METHOD_NAME, PREDICT_METHOD_NAME.
"""
from __future__ import annotations

import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from serving.model_format import SAVED_MODEL_FILE


def set_method_names(export_dir: str, method_by_signature: dict[str, str]) -> None:
    """Rewrites `saved_model.pb` in place so each named signature carries the given method_name."""
    path = os.path.join(export_dir, SAVED_MODEL_FILE)
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        for name, method in method_by_signature.items():
            if name not in meta_graph.signature_def:
                raise KeyError(f"signature {name!r} not in {export_dir}: {sorted(meta_graph.signature_def)}")
            meta_graph.signature_def[name].method_name = method
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(saved_model.SerializeToString())
