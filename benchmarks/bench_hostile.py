"""Hostile requests: first the probe of issue 25 (benchmarks/hostile_probe.py: one case per way a request could cost
far more than it sent or reach what it should not; "passes N of M") against a server from --server-repo (default this
checkout; another checkout gives the figures before a change); then two server processes side by side: the capped
server (the image header check in the model, --max_request_batch_size, --max_implied_tensor_elements at their
defaults) and the same classifier exported without the header check, served with both request caps off (what the
server did before issue 11).

For each request: bytes sent, the server's peak RSS rise while it ran (VmHWM reset through /proc/<pid>/clear_refs),
wall time and the answer. Then the cost of the header check itself on ordinary images (decode_rgb with and without
it, in-process).

    nice -n 5 .venv/bin/python benchmarks/bench_hostile.py [--probe-only] [--server-repo DIR]

The uncapped column uses smaller bombs than the tests (PNG 10500^2, 200 images) so one run stays within a few GB on
a shared machine; the capped server refuses them all from a few hundred bytes of header.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from benchmarks import hostile_probe, machine  # noqa: E402
from benchmarks.hostile_probe import png_bomb  # noqa: E402

UNLIMITED = 2**62


def encoded(image_format: str, size=(16, 16), color=(230, 20, 20)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=image_format)
    return buffer.getvalue()


def jpeg_header_bomb(side: int) -> bytes:
    data = bytearray(encoded("JPEG", (8, 8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def write_classifier(export_dir: str, max_pixels: int) -> None:
    """The test suite's tiny classifier contract (mean colour -> 3 labels) with the pipeline's decode step."""
    import numpy as np
    import tensorflow as tf

    from image_retrain.image_decoding import preprocess_batch

    class Classifier(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(np.eye(3, dtype=np.float32) * 10)
            self.labels = tf.constant(["red", "green", "blue"])

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            pixels = preprocess_batch(image_bytes, (8, 8), max_pixels=max_pixels)
            scores = tf.nn.softmax(tf.matmul(tf.reduce_mean(pixels, axis=[1, 2]), self.kernel))
            return {"scores": scores, "label": tf.gather(self.labels, tf.argmax(scores, axis=1))}

    module = Classifier()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def post(port: int, body: dict):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/m:predict", data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def rest_answer(port: int, body: dict) -> str:
    code, payload = post(port, body)
    return f"{code} " + (json.loads(payload).get("error", "ok")[:40] if payload else "")


def grpc_answer(port: int, request) -> str:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=600)
            return "OK"
        except grpc.RpcError as error:
            return f"{error.code().name} {error.details()[:40]}"


def measure(pid: int, send) -> tuple[float, float, str]:
    """(peak RSS rise MiB, seconds, answer) of one request."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    before = status_kb(pid, "VmRSS")
    started = time.monotonic()
    answer = send()
    seconds = time.monotonic() - started
    return (status_kb(pid, "VmHWM") - before) / 1024, seconds, answer


def serve(model_dir: str, port: int, *flags: str) -> subprocess.Popen:
    from serving.process import wait_until_listening

    process = subprocess.Popen([sys.executable, "-m", "serving", f"--port={port + 1}", f"--rest_api_port={port}",
                                "--bind_address=127.0.0.1", "--model_name=m", f"--model_base_path={model_dir}",
                                *flags], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_listening(process, port, timeout_s=300)
    return process


def header_check_cost(rounds: int) -> None:
    import tensorflow as tf

    from image_retrain.image_decoding import decode_rgb

    with_check = tf.function(lambda b: decode_rgb(b))
    without_check = tf.function(lambda b: decode_rgb(b, max_pixels=UNLIMITED))
    plain = tf.function(lambda b: tf.io.decode_image(b, channels=3, expand_animations=False))
    print(f"\nheader check cost per image (in-process tf.function, best of {rounds} x 50 calls)")
    print(f"{'image':<26} {'bytes':>8} {'decode only':>12} {'with check':>11} {'overhead':>9}")
    from PIL import Image

    noise = Image.effect_noise((640, 480), 60).convert("RGB")
    for name, image_format in (("640x480 JPEG", "JPEG"), ("640x480 PNG", "PNG"), ("640x480 GIF", "GIF")):
        buffer = io.BytesIO()
        noise.save(buffer, format=image_format)
        blob = tf.constant(buffer.getvalue())
        timings = {}
        for label, fn in (("plain", plain), ("check", with_check), ("nocheck", without_check)):
            fn(blob)
            best = float("inf")
            for _ in range(rounds):
                started = time.perf_counter()
                for _ in range(50):
                    fn(blob)
                best = min(best, (time.perf_counter() - started) / 50)
            timings[label] = best * 1000
        print(f"{name:<26} {len(buffer.getvalue()):>8} {timings['plain']:>10.2f}ms {timings['check']:>9.2f}ms "
              f"{timings['check'] - timings['plain']:>7.2f}ms")


def run_overhead(work: str, rounds: int) -> None:
    """Per-call cost of a trivial model run: no deadline (cached callable) vs with a deadline (TF_SessionRun with
    RunOptions.timeout_in_ms), through serving.saved_model_version.SavedModelVersion."""
    import numpy as np
    import tensorflow as tf

    from serving.saved_model_version import SavedModelVersion

    class Affine(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def predict(self, x):
            return {"y": 0.5 * x + 2.0}

    export_dir = os.path.join(work, "affine", "1")
    module = Affine()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.predict})
    loaded = SavedModelVersion("affine", 1, export_dir)
    inputs = {"x": np.array([2.0], np.float32)}
    print(f"\nmodel run overhead (y = 0.5x + 2, best of {rounds} x 2000 calls)")
    for name, timeout_ms in (("no deadline (callable)", 0), ("with a deadline (TF_SessionRun + timeout)", 30000)):
        for _ in range(200):
            loaded.run("serving_default", inputs, ["y"], timeout_ms)
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(2000):
                loaded.run("serving_default", inputs, ["y"], timeout_ms)
            best = min(best, (time.perf_counter() - started) / 2000)
        print(f"{name:<44} {best * 1e6:>6.1f} us/call")
    loaded.unload()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--png_side", type=int, default=10500)
    parser.add_argument("--jpeg_side", type=int, default=13000)
    parser.add_argument("--images", type=int, default=200, help="images in the big-batch request")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server-repo", default=REPO, help="checkout whose serving/ the probe's server runs")
    parser.add_argument("--probe-only", action="store_true", help="only the issue-25 probe")
    args = parser.parse_args()
    print(machine.describe())
    from serving.main import import_tensorflow_without_keras

    import_tensorflow_without_keras()
    work = tempfile.mkdtemp(prefix="bench_hostile_")
    print(f"\nhostile probe (issue 25) against the server of {os.path.abspath(args.server_repo)}")
    passed, total = hostile_probe.run(args.server_repo, work)
    print(f"hostile probe: passes {passed} of {total}", flush=True)
    if args.probe_only:
        return 0
    write_classifier(os.path.join(work, "capped", "1"), max_pixels=100_000_000)
    write_classifier(os.path.join(work, "uncapped", "1"), max_pixels=UNLIMITED)
    ports = {"capped": 18601, "uncapped": 18611}  # REST; gRPC on the next port
    servers = {"capped": serve(os.path.join(work, "capped"), ports["capped"]),
               "uncapped": serve(os.path.join(work, "uncapped"), ports["uncapped"], "--max_request_batch_size=0",
                                 f"--max_implied_tensor_elements={UNLIMITED}")}

    def b64(*blobs):
        return {"instances": [{"b64": base64.b64encode(blob).decode()} for blob in blobs]}

    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    implied = predict_pb2.PredictRequest()
    implied.model_spec.name = "m"
    implied.inputs["image_bytes"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING,
                                                                  string_val=[encoded("JPEG")]))
    implied.inputs["image_bytes"].tensor_shape.dim.add(size=5000)
    # name -> (bytes sent, send(rest_port))
    requests = {f"PNG {args.png_side}^2": b64(png_bomb(args.png_side)),
                f"JPEG header {args.jpeg_side}^2": b64(jpeg_header_bomb(args.jpeg_side)),
                f"{args.images} small images": b64(*[encoded("JPEG")] * args.images)}
    sends = {name: (len(json.dumps(body)), lambda port, body=body: rest_answer(port, body))
             for name, body in requests.items()}
    sends["gRPC: 1 image, shape [5000]"] = (implied.ByteSize(), lambda port: grpc_answer(port + 1, implied))
    try:
        for port in ports.values():  # first-call costs (graph executors) are not counted against the requests
            assert rest_answer(port, b64(encoded("JPEG"))).startswith("200")
        print(f"\n{'request':<28} {'sent B':>8} | {'capped: +RSS':>13} {'time':>7}  {'answer':<44} | "
              f"{'uncapped: +RSS':>15} {'time':>7}  answer")
        for name, (sent, send) in sends.items():
            row = [f"{name:<28} {sent:>8}"]
            for which in ("capped", "uncapped"):
                rise, seconds, answer = measure(servers[which].pid, lambda: send(ports[which]))  # noqa: B023
                row.append(f"{rise:>+10.0f} MiB {seconds:>6.2f}s  {answer:<44}")
            print(" | ".join(row), flush=True)
            for which in ("capped", "uncapped"):  # both still answer a valid request
                assert rest_answer(ports[which], b64(encoded("JPEG"))).startswith("200")
    finally:
        for process in servers.values():
            process.terminate()
            process.wait(timeout=60)
    header_check_cost(args.rounds)
    run_overhead(work, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
