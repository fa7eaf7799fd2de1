"""Writes the op registry of the TensorFlow that runs this script: every op it registers, with its attr names.

    SERVING_TF/bin/python scripts/op_registry.py image_retrain/op_registries/tensorflow-X.json

Run it with the TensorFlow of a TF Serving release (the side environment `make setup` creates) whenever the declared
release changes. TF_GetAllOpList is the C API's whole registry; `tf.raw_ops` misses ~270 public ops.
"""
import json
import sys

import tensorflow as tf
from tensorflow.core.framework import op_def_pb2
from tensorflow.python.client import pywrap_tf_session as c_api

buffer = c_api.TF_GetAllOpList()
ops = op_def_pb2.OpList.FromString(c_api.TF_GetBuffer(buffer))
c_api.TF_DeleteBuffer(buffer)
registry = {op.name: sorted(attr.name for attr in op.attr) for op in ops.op}
lines = [f"  {json.dumps(name)}: {json.dumps(attrs)}" for name, attrs in sorted(registry.items())]
with open(sys.argv[1], "w") as f:
    f.write(f'{{"tensorflow": {json.dumps(tf.__version__)}, "git_version": {json.dumps(tf.__git_version__)}, '
            f'"ops": {{\n' + ",\n".join(lines) + "\n}}\n")
print(f"{sys.argv[1]}: {len(registry)} ops of TensorFlow {tf.__version__}")
