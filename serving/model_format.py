"""The served-model format, declared once: what the trainer exports, the pusher publishes, and the model server and
its clients read.

`serving/` owns it because the server and the clients read models by it; the pipeline's trainer, pusher, report and
runners import it from here (never the other way round). No TensorFlow import: command-line tools and the REST
client read it before TensorFlow loads.

A model base path holds one folder per version (TF Serving's FileSystemStoragePathSource rule, `parse_version`): a
child whose name is a non-negative integer that fits int64 ('00000123' is version 123). Anything else, like the
pusher's hidden staging folder, is not a version. A version is complete once it holds `saved_model.pb` (or
`.pbtxt`), the file TF Serving loads and writers put there last. `serving/versions.py` lists them.
"""
from __future__ import annotations

# The classifier's signatures. `serving_default` is tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY.
PREDICT_SIGNATURE = "serving_default"   # image_bytes -> scores, classes, label
CLASSIFY_SIGNATURE = "classify"         # a TF Serving Classify signature: inputs -> classes, scores
IMAGE_BYTES_INPUT = "image_bytes"       # string [None]: encoded JPEG/PNG/GIF/BMP files
EXAMPLES_INPUT = "inputs"               # string [None]: serialized tf.Examples (TF Serving's Classify input alias)
EXAMPLE_IMAGE_FEATURE = "image_raw"     # the bytes feature of those tf.Examples that holds the encoded image
SCORES_OUTPUT = "scores"                # float [None, C]: softmax scores in label order
CLASSES_OUTPUT = "classes"              # string [None, C]: the labels, in the same order
LABEL_OUTPUT = "label"                  # string [None]: the top-scoring label

# Files of a version folder.
SAVED_MODEL_FILE = "saved_model.pb"
SAVED_MODEL_FILES = (SAVED_MODEL_FILE, "saved_model.pbtxt")
LABELS_ASSET = "assets/labels.txt"      # the class list, one per line: line index == score column
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"  # PredictionLog TFRecords replayed before serving
WARMUP_MAX_RECORDS = 1000               # a hard limit: with more records the version fails to load (TF Serving's
                                        # saved_model_warmup_util.cc kMaxNumRecords)
TFLITE_FILE = "model.tflite"            # TF Serving's --prefer_tflite_model convention

# Beside the versions in a model base path, for a staged rollout (image_retrain/rollout.py): the TF Serving model config
# file (text ModelServerConfig) a server is started with (--model_config_file) and re-reads, naming the loaded versions
# and the `stable` and `canary` labels; and the next config to write once its versions have loaded.
ROLLOUT_CONFIG_FILE = "model_server.config"
ROLLOUT_NEXT_FILE = "model_server.config.next"

# model.tflite holds the network alone (float32 RGB pixels in [0, 1] -> softmax scores) under one signature; the
# SavedModel carries, per signature, the TF steps around it in the object `litert` (`<signature>_inputs`: the
# signature's input -> the network's inputs; `<signature>_outputs`: the network's outputs -> the signature's outputs).
NETWORK_SIGNATURE = PREDICT_SIGNATURE
NETWORK_INPUT = "images"
NETWORK_OUTPUT = "scores"
LITERT_STEPS = "litert"
LITERT_DESCRIPTION = "image_retrain.json"  # model.tflite metadata: what the input and output tensors mean
LITERT_LABELS = "labels.txt"               # model.tflite metadata: the class list

_INT64_MAX = 2**63 - 1


def inputs_step(signature: str) -> str:
    return f"{signature}_inputs"


def outputs_step(signature: str) -> str:
    return f"{signature}_outputs"


def parse_version(name: str) -> int | None:
    """A child name of a model base path ('123', '00000123', or gs:// listings' '123/') -> its version; None if it
    is not one."""
    name = name.rstrip("/")
    if not (name.isascii() and name.isdigit()):
        return None
    version = int(name)
    return version if version <= _INT64_MAX else None
