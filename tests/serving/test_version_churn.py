"""Version churn under load with the default retry flags (5 retries, 60 s apart): corrupt, empty and half-copied
versions land below and above good ones while clients keep predicting. No valid request fails, the newest good version
is served within two poll intervals, and every failed version shows its load error in the status."""
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

POLL_SECONDS = 1


def _status(server) -> dict[int, tuple[str, str, str]]:
    statuses = RestClient(f"http://localhost:{server.rest_port}").status("half")["model_version_status"]
    return {int(s["version"]): (s["state"], s["status"]["error_code"], s["status"]["error_message"]) for s in statuses}



def test_newest_good_version_served_despite_broken_versions(models_dir, tmp_path, make_server):
    good = models_dir / "half" / "123"
    base = tmp_path / "half"
    shutil.copytree(good, base / "1")
    server = make_server(model_name="half", model_base_path=str(base), file_system_poll_wait_seconds=POLL_SECONDS)
    channel = grpc.insecure_channel(f"localhost:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    stop = threading.Event()
    failures, seen, counts = [], [], {"grpc": 0, "rest": 0}

    def grpc_loop():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0], dtype=tf.float32))
        while not stop.is_set():
            try:
                response = stub.Predict(request, timeout=10)
                assert list(response.outputs["y"].float_val) == [3.0]
                seen.append((time.monotonic(), response.model_spec.version.value))
                counts["grpc"] += 1
            except Exception as error:  # every failure is a test failure, collected for the message
                failures.append(f"grpc: {error!r}")

    def rest_loop():
        url = f"http://localhost:{server.rest_port}/v1/models/half:predict"
        while not stop.is_set():
            try:
                with urllib.request.urlopen(urllib.request.Request(url, data=b'{"instances": [2.0]}'),
                                            timeout=10) as response:
                    assert json.loads(response.read()) == {"predictions": [3.0]}
                counts["rest"] += 1
            except Exception as error:
                failures.append(f"rest: {error!r}")

    def served_after(version: int, since: float) -> float | None:
        """Seconds from `since` to the first response by `version`."""
        times = [t for t, v in list(seen) if v == version and t >= since]
        return min(times) - since if times else None

    def push(version: int) -> float:
        """A good version the way a pusher should: copy under a hidden name, then rename."""
        shutil.copytree(good, base / f".tmp-{version}")
        os.rename(base / f".tmp-{version}", base / str(version))
        return time.monotonic()

    threads = [threading.Thread(target=grpc_loop), threading.Thread(target=grpc_loop),
               threading.Thread(target=rest_loop)]
    for thread in threads:
        thread.start()
    delays = {}
    try:
        # A corrupt version 2: it fails, its error shows at once while it waits to be retried; version 1 serves.
        (base / "2").mkdir()
        (base / "2" / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        assert wait_for(lambda: _status(server).get(2, ("", "OK"))[1] != "OK"), _status(server)
        assert _status(server)[2][0] == "LOADING" and _status(server)[2][2]
        # A good version 3 right above it: the retries of 2 stop (no longer aspired) and 3 serves within two polls.
        pushed = push(3)
        assert wait_for(lambda: served_after(3, pushed) is not None), _status(server)
        delays["good above a corrupt one"] = served_after(3, pushed)
        assert _status(server)[2][0] == "END"
        # An empty version 5 above: it fails; 3 keeps serving. A good version 4 pushed below it is served meanwhile.
        (base / "5").mkdir()
        assert wait_for(lambda: _status(server).get(5, ("", "OK"))[1] != "OK"), _status(server)
        pushed = push(4)
        assert wait_for(lambda: served_after(4, pushed) is not None), _status(server)
        delays["good below a failing one"] = served_after(4, pushed)
        # Version 6 copied in place, not atomically: first only its graph (fails: no variables), then the rest.
        (base / "6").mkdir()
        shutil.copy(good / "saved_model.pb", base / "6" / "saved_model.pb")
        assert wait_for(lambda: _status(server).get(6, ("", "OK"))[1] != "OK"), _status(server)
        shutil.copytree(good, base / "6", dirs_exist_ok=True)
        completed = time.monotonic()
        assert wait_for(lambda: served_after(6, completed) is not None), _status(server)
        delays["half-copied one once complete"] = served_after(6, completed)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        channel.close()
    status = _status(server)
    print("served after: " + ", ".join(f"{what} {seconds:.2f}s" for what, seconds in delays.items()))
    assert failures == []
    assert counts["grpc"] > 20 and counts["rest"] > 10
    assert status[6][:2] == ("AVAILABLE", "OK")
    for version in (2, 5):
        _, code, message = status[version]
        assert code != "OK" and message, status  # the load error stays in the status
    assert status[5][0] == "END"  # no longer aspired once 6 serves: not retried
    assert all(seconds <= 2 * POLL_SECONDS + 2.0 for seconds in delays.values()), delays  # was minutes
