"""Whether a SavedModel's graph runs on an older TensorFlow: its ops against that release's op registry.

TF Serving loads a SavedModel by converting its whole GraphDef, function library included, so one op the serving
binary does not register fails the load ("Op type not registered 'DecodeWebP' in binary running on ..."), even if the
op sits in a function no signature calls. An attr the older op lacks is only logged and ignored by TF 2.19+
("NodeDef mentions attribute ... Unknown attributes will be ignored"), so it is a warning, not a failure.

Registries (image_retrain/op_registries/tensorflow-<version>.json) are written by scripts/op_registry.py with that
TensorFlow release itself; the SavedModel is read as a protobuf, so the check runs with any TensorFlow.
"""
from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from serving.model_format import SAVED_MODEL_FILE

REGISTRY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "op_registries")


@dataclasses.dataclass(frozen=True)
class OpReport:
    tensorflow: str
    ops_used: int
    missing_ops: tuple[str, ...]                   # ops the release does not register: the load fails
    unknown_attrs: tuple[tuple[str, str], ...]     # (op, attr) the release's op lacks: ignored there, with a log line


def registry_path(tensorflow_version: str) -> str:
    return os.path.join(REGISTRY_DIR, f"tensorflow-{tensorflow_version}.json")


def load_registry(tensorflow_version: str) -> dict[str, set[str]]:
    """{op: attr names} as that TensorFlow release registers them."""
    path = registry_path(tensorflow_version)
    if not os.path.exists(path):
        known = sorted(name[len("tensorflow-"):-len(".json")] for name in os.listdir(REGISTRY_DIR))
        raise ValueError(f"no op registry for TensorFlow {tensorflow_version} (have {', '.join(known)}): write one "
                         f"with scripts/op_registry.py run by that TensorFlow")
    with open(path) as f:
        return {op: set(attrs) for op, attrs in json.load(f)["ops"].items()}


def ops_used(export_dir: str) -> dict[str, set[str]]:
    """{op: attrs set on its nodes} over every meta graph's nodes and function library; calls of library functions
    and internal attrs (`_...`, which TensorFlow's NodeDef validation skips) left out."""
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(os.path.join(export_dir, SAVED_MODEL_FILE), "rb") as f:
        saved_model.ParseFromString(f.read())
    used: dict[str, set[str]] = {}
    for meta_graph in saved_model.meta_graphs:
        library = meta_graph.graph_def.library
        functions = {function.signature.name for function in library.function}
        nodes = [*meta_graph.graph_def.node, *(node for function in library.function for node in function.node_def)]
        for node in nodes:
            if node.op in functions:
                continue
            used.setdefault(node.op, set()).update(attr for attr in node.attr if not attr.startswith("_"))
    return used


def check(export_dir: str, tensorflow_version: str) -> OpReport:
    registry = load_registry(tensorflow_version)
    used = ops_used(export_dir)
    missing = sorted(op for op in used if op not in registry)
    unknown = sorted((op, attr) for op, attrs in used.items() if op in registry for attr in attrs - registry[op])
    return OpReport(tensorflow_version, len(used), tuple(missing), tuple(unknown))
