"""The server as a process: bad config exits non-zero with TF Serving's message; SIGTERM drains in-flight requests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest
from conftest import free_port, write

from serving.process import model_server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _serve(*flags):
    return subprocess.Popen([sys.executable, "-m", "serving", *flags], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_bad_model_config_is_a_clear_error(tmp_path):
    config = write(tmp_path / "bad.config", "improperly formatted file")
    process = _serve(f"--model_config_file={config}", f"--port={free_port()}")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in stderr


@pytest.mark.e2e
def test_sigterm_drains_in_flight_requests(models_dir, tmp_path):
    # A 1.5 s batch timeout keeps a lone request in flight long enough to send SIGTERM meanwhile.
    batching = write(tmp_path / "batching.config",
                     "max_batch_size { value: 64 } batch_timeout_micros { value: 1500000 }")
    with model_server("--model_name=half", f"--model_base_path={models_dir / 'half'}", "--enable_batching",
                      f"--batching_parameters_file={batching}", cwd=REPO, timeout_s=120) as server:
        result = {}

        def call():
            request = urllib.request.Request(f"{server.rest_url}/v1/models/half:predict",
                                             data=json.dumps({"instances": [2.0]}).encode())
            with urllib.request.urlopen(request, timeout=30) as response:
                result["status"], result["body"] = response.status, json.loads(response.read())

        thread = threading.Thread(target=call)
        thread.start()
        threading.Event().wait(0.5)
        server.process.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        assert result == {"status": 200, "body": {"predictions": [3.0]}}
        assert server.process.wait(timeout=60) == 0


def test_server_process_imports_tensorflow_without_keras():
    # TensorFlow's eager Keras import costs the server ~200 MiB of RSS; it stays out, yet Keras remains importable.
    script = ("import sys\n"
              "from serving.main import import_tensorflow_without_keras\n"
              "import_tensorflow_without_keras()\n"
              "import tensorflow as tf\n"
              "print(tf.constant(2.0).numpy(), 'keras' in sys.modules, 'sklearn' in sys.modules)\n"
              "import keras\n"
              "print(keras.__name__)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["2.0", "False", "False", "keras"]
