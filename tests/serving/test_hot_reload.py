"""Hot reload under load: a new version is pushed and a broken version appears while clients keep predicting."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request

import grpc
import tensorflow as tf
from conftest import wait_for
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.client import RestClient


def _status(server, model):
    return [(s["version"], s["state"], s["status"]["error_code"])
            for s in RestClient(f"http://localhost:{server.rest_port}").status(model)["model_version_status"]]



def test_push_new_version_and_broken_version_under_load(models_dir, tmp_path, make_server):
    base = tmp_path / "half"
    shutil.copytree(models_dir / "half" / "123", base / "1")
    server = make_server(model_name="half", model_base_path=str(base), file_system_poll_wait_seconds=1,
                         max_num_load_retries=0, enable_batching=True)
    channel = grpc.insecure_channel(f"localhost:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    stop = threading.Event()
    failures, versions_seen, counts = [], set(), {"grpc": 0, "rest": 0}

    def grpc_loop():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0], dtype=tf.float32))
        while not stop.is_set():
            try:
                response = stub.Predict(request, timeout=10)
                assert list(response.outputs["y"].float_val) == [3.0]
                versions_seen.add(response.model_spec.version.value)
                counts["grpc"] += 1
            except Exception as error:  # every failure is a test failure, collected for the message
                failures.append(f"grpc: {error!r}")

    def rest_loop():
        url = f"http://localhost:{server.rest_port}/v1/models/half:predict"
        body = json.dumps({"instances": [2.0]}).encode()
        while not stop.is_set():
            try:
                with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as response:
                    assert json.loads(response.read()) == {"predictions": [3.0]}
                counts["rest"] += 1
            except Exception as error:
                failures.append(f"rest: {error!r}")

    threads = [threading.Thread(target=loop) for loop in (grpc_loop, grpc_loop, rest_loop)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        # Push version 2 the way a pusher should: copy under a temp name, then rename (numeric names only count).
        shutil.copytree(models_dir / "half" / "123", base / ".tmp-2")
        os.rename(base / ".tmp-2", base / "2")
        assert wait_for(lambda: _status(server, "half")[:2] == [("2", "AVAILABLE", "OK"), ("1", "END", "OK")]), \
            _status(server, "half")
        # A broken version 3 appears: it fails to load, version 2 keeps serving.
        os.makedirs(base / "3")
        with open(base / "3" / "saved_model.pb", "wb") as f:
            f.write(b"this is not a SavedModel")
        assert wait_for(lambda: _status(server, "half")[0][1] == "END"), _status(server, "half")
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        channel.close()
    status = _status(server, "half")
    assert status[0][0] == "3" and status[0][1] == "END" and status[0][2] != "OK"
    assert status[1:] == [("2", "AVAILABLE", "OK"), ("1", "END", "OK")]
    assert failures == []
    assert counts["grpc"] > 10 and counts["rest"] > 5
    assert versions_seen == {1, 2}

    error_message = RestClient(f"http://localhost:{server.rest_port}").status("half")[
        "model_version_status"][0]["status"]["error_message"]
    assert error_message  # the load error is shown in status
