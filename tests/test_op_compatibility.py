"""The declared TF Serving release's op registry is that TensorFlow's own, and a SavedModel's ops are all found,
those inside library functions included."""
from __future__ import annotations

import json
import os
import subprocess

import tensorflow as tf

from components.serving_validator.checks import release_python
from image_retrain import op_compatibility
from pipelines import configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_committed_registry_is_what_the_release_s_tensorflow_registers(tmp_path):
    python = release_python(configs.TF_SERVING_RELEASE)
    assert python, "make setup installs TF Serving's TensorFlow beside the venv"
    written = tmp_path / "registry.json"
    done = subprocess.run([python, os.path.join(REPO, "scripts", "op_registry.py"), str(written)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    with open(op_compatibility.registry_path(configs.TF_SERVING_RELEASE)) as f:
        committed = json.load(f)
    fresh = json.loads(written.read_text())
    assert committed == fresh and committed["tensorflow"] == configs.TF_SERVING_RELEASE


def test_ops_inside_functions_count_and_call_sites_do_not(tmp_path):
    class Nested(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, data):
            return {"sizes": tf.map_fn(lambda d: tf.size(tf.io.decode_jxl(d)), data, fn_output_signature=tf.int32)}

    module = Nested()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    used = op_compatibility.ops_used(str(tmp_path))
    assert "DecodeJxl" in used  # inside the map_fn body, a function of the library
    assert not any(name.startswith("__inference") for name in used)  # calls of library functions are not ops
    report = op_compatibility.check(str(tmp_path), configs.TF_SERVING_RELEASE)
    assert report.missing_ops == ("DecodeJxl",) and report.ops_used == len(used)
