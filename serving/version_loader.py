"""Which runtime loads a version folder: LiteRT for its model.tflite with --prefer_tflite_model, else TensorFlow."""
from __future__ import annotations

import logging
import os

import tensorflow as tf

from serving.litert_version import LiteRTVersion
from serving.model_format import TFLITE_FILE
from serving.saved_model_version import SavedModelVersion
from serving.servable import VersionLifecycle

log = logging.getLogger(__name__)


def load_version(name: str, version: int, path: str, tags=("serve",), session_config=None,
                 prefer_tflite_model: bool = False, tflite_interpreters: int = 1) -> VersionLifecycle:
    """A version folder -> its servable: with `prefer_tflite_model`, its `model.tflite` on LiteRT when it has one
    (serving/litert_version.py); else the SavedModel in a TF session (TF Serving falls back the same way)."""
    if prefer_tflite_model:
        if tf.io.gfile.exists(os.path.join(path, TFLITE_FILE)):
            return LiteRTVersion(name, version, path, tags, interpreters=tflite_interpreters)
        log.info("No %s in %s: serving its SavedModel", TFLITE_FILE, path)
    return SavedModelVersion(name, version, path, tags, session_config)
