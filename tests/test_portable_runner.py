"""The embedding stage on Beam's portable runner: the Fn API protocol Flink, Spark and Dataflow workers speak.

The job service is Beam's own (`local_job_service_main`); the SDK harness is an EXTERNAL worker pool started with
the command of the Beam sidecar in kubeflow/manifests/flink, the process each Flink task manager runs beside it.
Both are started on loopback by the test and stopped after it. The rest of the pipeline stays on the DirectRunner
(`--embed-beam-arg`).
"""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import numpy as np
import portpicker
import pytest
from image_fixtures import make_shapes_dataset
from test_flink_manifests import flink_deployment, worker_pool_container

from serving.process import stop, wait_until_listening


def worker_pool_command(port: int) -> list[str]:
    """The Flink task managers' Beam sidecar (kubeflow/manifests/flink), run here with this venv's python."""
    sidecar = worker_pool_container(flink_deployment())
    command = [sys.executable if part == "python" else part for part in sidecar["command"]]
    return command + [re.sub(r"^--service_port=\d+$", f"--service_port={port}", arg) for arg in sidecar["args"]]


@pytest.fixture
def beam_services(tmp_path):
    """Beam's job service and an EXTERNAL SDK worker pool; workers start `python` from PATH, so the venv's first."""
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    job_port, pool_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    processes = [
        subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                          "--port", str(job_port)], env=env, stdout=subprocess.DEVNULL,
                         stderr=open(tmp_path / "job_service.log", "w")),
        subprocess.Popen(worker_pool_command(pool_port), env=env, stdout=subprocess.DEVNULL,
                         stderr=open(tmp_path / "worker_pool.log", "w")),
    ]
    try:
        for port, process in zip((job_port, pool_port), processes):
            wait_until_listening(process, port)
        yield ["--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}", "--environment_type=EXTERNAL",
               f"--environment_config=localhost:{pool_port}"]
    finally:
        stop(processes)


def _embeddings(output_dir: str) -> dict[bytes, np.ndarray]:
    import tensorflow as tf

    files = glob.glob(os.path.join(output_dir, "tfx_pipeline_output", "*", "ImageEmbedder", "embedded_examples",
                                   "*", "Split-*", "*.gz"))
    assert files, f"no embedded examples under {output_dir}"
    result = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.train.Example.FromString(record.numpy())
        result[example.features.feature["sha256"].bytes_list.value[0]] = np.array(
            example.features.feature["embedding"].float_list.value, dtype=np.float32)
    return result


@pytest.mark.e2e
def test_embedding_stage_on_the_portable_runner_matches_the_direct_runner(tmp_path, beam_services):
    from pipelines.local_runner import RunOptions, run_pipeline

    data = tmp_path / "data"
    make_shapes_dataset(data, n_per_class=12, seed=5)
    common = dict(data_dir=str(data), model_name="shapes", accuracy_threshold=0.7,
                  hyperparameters={"epochs": 25, "fine_tune_variables": 0})
    direct = run_pipeline(RunOptions(**common, output_dir=str(tmp_path / "direct")))
    portable = run_pipeline(RunOptions(**common, output_dir=str(tmp_path / "portable"),
                                       embed_beam_args=beam_services))

    assert portable.embeddings_computed == direct.embeddings_computed == 36  # Beam metrics came back from the job
    expected, actual = _embeddings(str(tmp_path / "direct")), _embeddings(str(tmp_path / "portable"))
    assert expected.keys() == actual.keys() and len(actual) == 36
    assert max(float(np.abs(expected[key] - actual[key]).max()) for key in expected) <= 1e-5
    assert (portable.blessed, portable.pushed) == (direct.blessed, direct.pushed) == (True, True)
    assert portable.accuracy == pytest.approx(direct.accuracy, abs=1e-6)
