"""Model server benchmark: p50/p99 latency and throughput over gRPC and REST at 1 and N concurrent clients, against
in-process calls of the same signature and a Flask-per-request server like the seeds'; plus the server's RSS.

    .venv/bin/python benchmarks/bench_serving.py                      # on a small fixture classifier
    .venv/bin/python benchmarks/bench_serving.py --model_base_path /path/to/pushed/model --requests 300

The server runs as its own process (`python -m serving --enable_batching`), so client and server do not share a GIL;
the in-process baseline loads the same SavedModel version into this process and calls the signature directly.
Flask comes from the optional `bench` extra.
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FLASK_APP = r'''
import base64, sys
import flask, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
predict = model.signatures["serving_default"]
app = flask.Flask(__name__)

@app.route("/predict", methods=["POST"])
def handle():  # the seeds' pattern: decode the JSON body, call the model eagerly, jsonify
    image = base64.b64decode(flask.request.get_json()["image"])
    outputs = predict(image_bytes=tf.constant([image]))
    return flask.jsonify({k: v.numpy().tolist() if v.dtype != tf.string else [s.decode() for s in v.numpy().ravel()]
                          for k, v in outputs.items()})

app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def test_image(size: int) -> bytes:
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    pixels = (rng.random((size, size, 3)) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def measure(call_factory, concurrency: int, requests: int) -> dict:
    """Runs `requests` calls split over `concurrency` threads (each with its own call from call_factory)."""
    per_thread = max(1, requests // concurrency)
    latencies: list[float] = []
    lock = threading.Lock()
    start_barrier = threading.Barrier(concurrency + 1)

    def worker():
        call = call_factory()
        call()  # warm connection / callable
        start_barrier.wait()
        mine = []
        for _ in range(per_thread):
            t0 = time.perf_counter()
            call()
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    start_barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "rps": len(latencies) / elapsed}


def wait_for(port: int, process, timeout_s=180):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"port {port} did not open")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_base_path", help="model dir with numeric versions (default: a fixture classifier)")
    parser.add_argument("--model_name", default="classifier")
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--image_size", type=int, default=224, help="side of the random JPEG sent")
    parser.add_argument("--max_batch_size", type=int, default=16)
    parser.add_argument("--skip_flask", action="store_true")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    tmp = tempfile.mkdtemp(prefix="bench_serving_")
    base_path = args.model_base_path
    if not base_path:
        sys.path.insert(0, os.path.join(REPO, "tests", "serving"))
        import model_fixtures
        base_path = os.path.join(tmp, "classifier")
        model_fixtures.write_image_classifier(os.path.join(base_path, "1"))
    base_path = os.path.abspath(base_path)
    version = max(int(v) for v in os.listdir(base_path) if v.isdigit())
    version_dir = os.path.join(base_path, str(version))
    image = test_image(args.image_size)
    print(f"model {version_dir}; image {len(image)} bytes JPEG {args.image_size}px; "
          f"{args.requests} requests per row; {os.cpu_count()} CPUs")

    batching_file = os.path.join(tmp, "batching.config")
    with open(batching_file, "w") as f:
        f.write(f"max_batch_size {{ value: {args.max_batch_size} }}\nbatch_timeout_micros {{ value: 0 }}\n"
                f"num_batch_threads {{ value: {os.cpu_count() or 1} }}\nmax_enqueued_batches {{ value: 1000 }}\n")
    grpc_port, rest_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         f"--model_name={args.model_name}", f"--model_base_path={base_path}", "--enable_batching",
         f"--batching_parameters_file={batching_file}", "--bind_address=127.0.0.1", "--log_level=WARNING"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    results: dict[str, dict] = {}
    try:
        wait_for(rest_port, server)
        rss_loaded = rss_mib(server.pid)

        # ---- in-process: the same signature, same session runtime, no transport
        import numpy as np
        from serving.servable import LoadedVersion
        loaded = LoadedVersion(args.model_name, version, version_dir)
        signature = loaded.signatures["serving_default"]
        input_name = next(iter(signature.inputs))
        outputs = sorted(signature.outputs)
        batch = np.array([image], dtype=object)

        def in_process():
            return lambda: loaded.run("serving_default", {input_name: batch}, outputs)

        # ---- gRPC: official stubs, one channel per client thread
        import grpc
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
        request = predict_pb2.PredictRequest()
        request.model_spec.name = args.model_name
        request.inputs[input_name].CopyFrom(tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[image],
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)])))

        def grpc_call():
            stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(
                f"127.0.0.1:{grpc_port}", options=[("grpc.max_receive_message_length", -1)]))
            return lambda: stub.Predict(request, timeout=60)

        # ---- REST: keep-alive HTTP connection per client thread
        rest_body = json.dumps({"instances": [{input_name: {"b64": base64.b64encode(image).decode()}}]}).encode()

        def rest_call(port=rest_port, path=f"/v1/models/{args.model_name}:predict", body=rest_body):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

            def call():
                connection.request("POST", path, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
            return call

        for c in concurrencies:
            results[f"in-process c={c}"] = measure(in_process, c, args.requests)
            results[f"gRPC c={c}"] = measure(grpc_call, c, args.requests)
            results[f"REST c={c}"] = measure(rest_call, c, args.requests)
        rss_after = rss_mib(server.pid)
        loaded.unload()
    finally:
        server.terminate()
        server.wait(timeout=60)

    if not args.skip_flask:
        flask_port = free_port()
        app_file = os.path.join(tmp, "flask_app.py")
        with open(app_file, "w") as f:
            f.write(FLASK_APP)
        flask = subprocess.Popen([sys.executable, app_file, version_dir, str(flask_port)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        try:
            wait_for(flask_port, flask)
            flask_body = json.dumps({"image": base64.b64encode(image).decode()}).encode()
            for c in concurrencies:
                results[f"Flask c={c}"] = measure(
                    lambda: rest_call(flask_port, "/predict", flask_body), c, args.requests)
        finally:
            flask.terminate()
            flask.wait(timeout=60)

    print(f"\n{'':18}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}")
    for name, row in results.items():
        print(f"{name:18}{row['p50_ms']:9.2f}{row['p99_ms']:9.2f}{row['rps']:9.1f}")
    print("\nratios (targets in brackets)")
    for c in concurrencies:
        base = results[f"in-process c={c}"]
        for transport in ("gRPC", "REST"):
            row = results[f"{transport} c={c}"]
            print(f"  c={c:<3} {transport:5} p50 overhead {row['p50_ms'] - base['p50_ms']:+.2f} ms [<= 2 ms]   "
                  f"throughput {row['rps'] / base['rps']:.2f}x in-process "
                  f"[{'>= 0.8x' if transport == 'gRPC' else '>= 0.7x'} with batching]")
        if f"Flask c={c}" in results:
            flask_rps = results[f"Flask c={c}"]["rps"]
            print(f"  c={c:<3} REST vs Flask throughput {results[f'REST c={c}']['rps'] / flask_rps:.2f}x, "
                  f"gRPC vs Flask {results[f'gRPC c={c}']['rps'] / flask_rps:.2f}x [>= 3x]")
    print(f"\nserver RSS: {rss_loaded:.0f} MiB after load, {rss_after:.0f} MiB after the run [<= 1024 MiB]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
