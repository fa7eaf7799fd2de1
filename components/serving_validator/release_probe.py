"""Loads a SavedModel the way TF Serving does and answers requests, with whatever TensorFlow runs this file.

    SERVING_TF/bin/python release_probe.py EXPORT_DIR REQUESTS.json ANSWERS.json

Run as a script by the TensorFlow of the declared TF Serving release (a side environment), so it imports nothing but
that TensorFlow. TF Serving's SavedModelBundle loads the `serve` meta graph into a Session (the TF1 loader: restore op,
init op) and runs a signature by its tensor names; so does this. REQUESTS is
[{"signature": name, "inputs": {alias: base64 TensorProto}}]; ANSWERS gets {"tensorflow": version,
"answers": [{alias: base64 TensorProto}]}, or {"tensorflow": version, "error": message} when the load or a run fails.
"""
import base64
import json
import sys

import tensorflow as tf
from tensorflow.core.framework import tensor_pb2


def tensor(encoded: str):
    return tf.make_ndarray(tensor_pb2.TensorProto.FromString(base64.b64decode(encoded)))


def encoded(value) -> str:
    return base64.b64encode(tf.make_tensor_proto(value).SerializeToString()).decode("ascii")


def answer(export_dir: str, requests: list[dict]) -> list[dict]:
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], export_dir)
        answers = []
        for request in requests:
            signature = meta_graph.signature_def[request["signature"]]
            feeds = {signature.inputs[alias].name: tensor(value) for alias, value in request["inputs"].items()}
            fetches = {alias: info.name for alias, info in signature.outputs.items()}
            answers.append({alias: encoded(value) for alias, value in session.run(fetches, feeds).items()})
        return answers


def main(export_dir: str, requests_path: str, answers_path: str) -> int:
    with open(requests_path) as f:
        requests = json.load(f)
    try:
        result = {"tensorflow": tf.__version__, "answers": answer(export_dir, requests)}
    except Exception as error:  # noqa: BLE001 - whatever fails, the caller reports TensorFlow's own words
        result = {"tensorflow": tf.__version__, "error": f"{type(error).__name__}: {error}"}
    with open(answers_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
