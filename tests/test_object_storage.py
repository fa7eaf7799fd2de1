"""Every path on gs://: the pipeline (data, module, pipeline root, embedding cache, serving dir) and the model server
(model base path) against a local Google Cloud Storage (tests/gcs.py: gcp-storage-emulator behind mitmproxy, which
TensorFlow's and Beam's own GCS clients talk to). ML Metadata's SQLite file is the one thing that stays local."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from gcs import local_gcs
from image_fixtures import make_shapes_dataset

from serving.client import RestClient
from serving.process import model_server

BUCKET = "image-retrain-test"
GS = f"gs://{BUCKET}"
MODEL = "shapes"

UPLOAD = """
import os, sys
import tensorflow as tf
from image_retrain.image_module.loader import resolve_handle

def upload(local, remote):
    for root, _, files in os.walk(local):
        for name in files:
            target = remote + "/" + os.path.relpath(os.path.join(root, name), local)
            tf.io.gfile.makedirs(os.path.dirname(target))
            tf.io.gfile.copy(os.path.join(root, name), target, overwrite=True)

upload(sys.argv[1], sys.argv[2] + "/images")
upload(resolve_handle("efficientnet_lite0"), sys.argv[2] + "/modules/efficientnet_lite0")
"""


def _run(env: dict, output_dir: str, *flags: str) -> dict:
    command = [sys.executable, "-m", "pipelines.cli", "run", "--json", "--model-name", MODEL,
               "--data-dir", f"{GS}/images", "--module", f"{GS}/modules/efficientnet_lite0",
               "--pipeline-root", f"{GS}/pipeline_root", "--embedding-cache-dir", f"{GS}/embedding_cache",
               "--serving-dir", f"{GS}/serving", "--output-dir", output_dir, "--epochs", "10",
               "--fine-tune-variables", "0", *flags]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    start = 0 if result.stdout.startswith("{") else result.stdout.index("\n{") + 1  # --json: the result, last
    return json.loads(result.stdout[start:])


@pytest.mark.e2e
def test_pipeline_and_model_server_with_every_path_on_gcs(tmp_path):
    images = make_shapes_dataset(tmp_path / "images", n_per_class=12)
    count = sum(len(paths) for paths in images.values())
    with local_gcs(str(tmp_path), BUCKET) as gcs_env:
        env = {**os.environ, **gcs_env}
        upload = subprocess.run([sys.executable, "-c", UPLOAD, str(tmp_path / "images"), GS], env=env,
                                capture_output=True, text=True, timeout=300)
        assert upload.returncode == 0, upload.stderr[-3000:]

        first = _run(env, str(tmp_path / "output"))
        assert first["blessed"] and first["pushed"], first
        assert first["pushed_path"].startswith(f"{GS}/serving/{MODEL}/"), first
        assert first["embeddings_computed"] == count and first["embeddings_cached"] == 0, first
        assert not (tmp_path / "output" / "tfx_pipeline_output").exists(), "artifacts must go to the bucket"
        assert not (tmp_path / "output" / "embedding_cache").exists()

        # Unchanged images in the bucket: the run stops after listing them (their object stats); forced, it embeds
        # nothing again from the cache in the bucket.
        assert _run(env, str(tmp_path / "output"))["nothing_changed"]
        second = _run(env, str(tmp_path / "output"), "--force")
        assert second["embeddings_computed"] == 0 and second["embeddings_cached"] == count, second

        latest = second["pushed_path"] if second["pushed"] else first["pushed_path"]
        with open(tmp_path / "server.log", "w") as server_log, \
                model_server(f"--model_name={MODEL}", f"--model_base_path={GS}/serving/{MODEL}", env=env,
                             stderr=server_log) as server:
            rest = RestClient(server.rest_url)
            (status,) = rest.status(MODEL)["model_version_status"]
            assert status["state"] == "AVAILABLE" and status["version"] == os.path.basename(latest)
            (prediction,) = rest.predict_images(MODEL, [images["circle"][0].read_bytes()])
            assert prediction.label in images
