"""Model server benchmark: p50/p99 latency and throughput over gRPC and REST at 1 and N concurrent clients, against
in-process calls of the same signature and a Flask-per-request server like the seeds'; plus the server's RSS.

    .venv/bin/python benchmarks/bench_serving.py                      # on a small fixture classifier
    .venv/bin/python benchmarks/bench_serving.py --model_base_path /path/to/pushed/model --image chelsea

The server runs as its own process (`python -m serving --enable_batching`), so client and server do not share a GIL;
the in-process rows load the same SavedModel version into this process and call the signature directly:
  in-process c=N      N threads, one image per call (the latency baseline, and what N clients get unbatched);
  in-process b=BxT    T threads (= the server's num_batch_threads), B images per call: the throughput ceiling that
                      the server's batching aims at (same work, no transport, no batch formation).
Every row is repeated --rounds times, interleaved; rows show their median round and ratios are taken per round (rows
measured side by side), then the median. The machine is shared, so single rounds catch other jobs' bursts.
Two Flask baselines, one request = one model call, threaded werkzeug (Flask's default), model loaded once:
  Flask seeds c=N     the seeds' pattern (the Keras-blog "simple Keras REST API" their Flask pages follow): a Keras
                      model (module + dense head, as TF Hub's make_image_classifier builds it), a multipart file upload,
                      PIL decode -> RGB -> resize -> float array, `model.predict`, top labels as JSON. This is the
                      baseline the >= 3x target names; it needs the pipeline's classifier (module + head).
  Flask lean c=N      a leaner Flask than the seeds wrote: the exported serving signature called eagerly per request on
                      the b64 bytes (TF decodes), jsonify. Printed for reference: it bounds what any front end can gain.
Flask comes from the optional `bench` extra.
"""
from __future__ import annotations

import argparse
import base64
import functools
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

METRICS_PATH = "/monitoring/prometheus/metrics"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.machine import describe  # noqa: E402

LEAN_FLASK_APP = r'''
import base64, sys
import flask, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
predict = model.signatures["serving_default"]
app = flask.Flask(__name__)

@app.route("/predict", methods=["POST"])
def handle():  # decode the JSON body, call the serving signature eagerly, jsonify
    image = base64.b64decode(flask.request.get_json()["image"])
    outputs = predict(image_bytes=tf.constant([image]))
    return flask.jsonify({k: v.numpy().tolist() if v.dtype != tf.string else [s.decode() for s in v.numpy().ravel()]
                          for k, v in outputs.items()})

app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
'''


SEEDS_FLASK_APP = r"""
import io, sys
import flask, keras, numpy as np
from PIL import Image


def build_model(module_dir, head_file):
    # As TF Hub's make_image_classifier builds it: the feature-vector module as a layer, then the dense head.
    head = np.load(head_file)
    height, width = (int(v) for v in head["input_size"])
    inputs = keras.Input((height, width, 3))
    features = keras.layers.TFSMLayer(module_dir, call_endpoint="serving_default")(inputs)
    x = next(iter(features.values())) if isinstance(features, dict) else features
    layers = int(head["layers"])
    for i in range(layers):
        dense = keras.layers.Dense(head[f"kernel_{i}"].shape[1], activation="softmax" if i == layers - 1 else "relu")
        x = dense(x)
        dense.set_weights([head[f"kernel_{i}"], head[f"bias_{i}"]])
    return keras.Model(inputs, x), [str(label) for label in head["labels"]], (width, height)


def preprocess(image_bytes, size):
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB").resize(size, Image.BILINEAR)
    return np.expand_dims(np.asarray(image, dtype="float32") / 255.0, 0)


if __name__ == "__main__":
    module_dir, head_file, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model, labels, size = build_model(module_dir, head_file)
    app = flask.Flask(__name__)

    @app.route("/predict", methods=["POST"])
    def predict():
        pixels = preprocess(flask.request.files["image"].read(), size)
        scores = model.predict(pixels, verbose=0)[0]
        top = np.argsort(scores)[::-1][:5]
        return flask.jsonify({"success": True, "predictions": [
            {"label": labels[i], "probability": float(scores[i])} for i in top]})

    app.run(host="127.0.0.1", port=port, threaded=True)
"""


def seeds_cost_breakdown(app_file: str, module_dir: str, head_file: str, image: bytes, calls: int = 30) -> None:
    """Where a seeds' request goes, in this process with the app's own code: PIL preprocessing, `model.predict`
    and, for comparison, a direct `model(pixels)` call (what the lean baseline and the server avoid paying)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("seeds_flask_app", app_file)
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    model, _, size = app.build_model(module_dir, head_file)
    pixels = app.preprocess(image, size)
    steps = {"PIL preprocessing": lambda: app.preprocess(image, size),
             "model.predict(pixels)": lambda: model.predict(pixels, verbose=0),
             "model(pixels) (direct call)": lambda: model(pixels, training=False)}
    print("seeds' per-request cost, in-process, one thread (ms per call, median of "
          f"{calls}):")
    for name, step in steps.items():
        step(), step()
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            step()
            times.append(1000 * (time.perf_counter() - t0))
        print(f"  {name:30}{statistics.median(times):8.2f}")


def write_seeds_head(version_dir: str, module_handle: str, head_file: str) -> str | None:
    """Writes the exported classifier's head weights, labels and the module's input size for the seeds' Flask app.

    Returns the module's SavedModel dir, or None when the model is not the pipeline's module + head export."""
    import numpy as np
    import tensorflow as tf

    from image_retrain.image_module.loader import resolve_handle

    exported = tf.saved_model.load(version_dir)
    if not hasattr(exported, "head"):
        return None
    module_dir = resolve_handle(module_handle)
    image_spec = tf.saved_model.load(module_dir).signatures["serving_default"].structured_input_signature[1]
    height, width = next(iter(image_spec.values())).shape[1:3]
    with open(os.path.join(version_dir, "assets", "labels.txt")) as f:
        labels = [line.rstrip("\n") for line in f if line.strip()]
    arrays = {"labels": np.array(labels), "input_size": np.array([height, width]),
              "layers": np.array(len(exported.head.kernels))}
    for i, (kernel, bias) in enumerate(zip(exported.head.kernels, exported.head.biases)):
        arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = kernel.numpy(), bias.numpy()
    np.savez(head_file, **arrays)
    return module_dir


def multipart_body(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file, as `requests.post(url, files={field: ...})` sends it."""
    boundary = "benchboundary7MA4YWxkTrZu0gW"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + content + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory (VmRSS) or its peak (VmHWM) of a process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def test_image(kind: str, size: int) -> tuple[bytes, str]:
    """The request payload and a description of it.

    random: noise JPEG of size x size (worst case for JPEG size); chelsea / coffee: scikit-image's photos as JPEG,
    resized to size x size (0 keeps the native 451x300 / 600x400); digit: a 32x32 grayscale PNG like the demo's
    digits (scikit-learn's 8x8 digit scaled up); anything else is read as an image file and sent unchanged.
    """
    import numpy as np
    from PIL import Image

    def encode(pixels, image_format, **save_args):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=image_format, **save_args)
        return buffer.getvalue()

    if kind == "random":
        pixels = (np.random.default_rng(0).random((size, size, 3)) * 255).astype("uint8")
        return encode(pixels, "JPEG", quality=90), f"random noise JPEG {size}x{size}"
    if kind in ("chelsea", "coffee"):
        import skimage.data
        photo = Image.fromarray(getattr(skimage.data, kind)())
        if size:
            photo = photo.resize((size, size), Image.BILINEAR)
        return encode(np.asarray(photo), "JPEG", quality=90), f"{kind} JPEG {photo.width}x{photo.height}"
    if kind == "digit":
        from sklearn.datasets import load_digits
        gray = (255 - load_digits().images[0] * 255.0 / 16.0).clip(0, 255).astype(np.uint8)
        digit = Image.fromarray(gray, mode="L").resize((32, 32), Image.NEAREST)
        return encode(np.asarray(digit), "PNG"), "digit PNG 32x32 grayscale"
    with open(kind, "rb") as f:
        return f.read(), kind


def measure(call_factory, concurrency: int, requests: int, images_per_call: int = 1) -> dict:
    """Runs `requests` calls split over `concurrency` threads (each with its own call from call_factory).

    Latency is per call; throughput ("rps") counts images, i.e. calls x images_per_call per second."""
    per_thread = max(1, requests // concurrency)
    latencies: list[float] = []
    lock = threading.Lock()
    start_barrier = threading.Barrier(concurrency + 1)

    errors: list[BaseException] = []

    def worker():
        try:
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
        except threading.BrokenBarrierError:
            pass
        except BaseException as error:  # noqa: BLE001 -- reported by the caller instead of a silently shorter run
            errors.append(error)
            start_barrier.abort()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        start_barrier.wait()
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} client thread(s) failed") from errors[0]
    latencies.sort()
    return {"p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "rps": len(latencies) * images_per_call / elapsed, "images": len(latencies) * images_per_call}


def wait_for(port: int, process, timeout_s=180):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(process.log_path, errors="replace") as log:
                raise RuntimeError(f"server exited with {process.returncode}: {log.read()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"port {port} did not open")


def batch_counts(rest_port: int) -> tuple[float, float]:
    """(sum, count) of the server's processed_batch_size histogram, read from its Prometheus page."""
    connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=30)
    connection.request("GET", METRICS_PATH)
    text = connection.getresponse().read().decode()
    connection.close()
    values = {}
    for line in text.splitlines():
        for field in ("sum", "count"):
            if line.startswith(f":tensorflow:serving:batching_session:processed_batch_size_{field} "):
                values[field] = float(line.split()[1])
    return values.get("sum", 0.0), values.get("count", 0.0)


def round_ratio(rounds: dict, name: str, base_name: str) -> float:
    """Throughput ratio per round (rows measured side by side), then the median over rounds."""
    return statistics.median(a["rps"] / b["rps"] for a, b in zip(rounds[name], rounds[base_name]))


def round_p50_overhead(rounds: dict, name: str, base_name: str) -> float:
    return statistics.median(a["p50_ms"] - b["p50_ms"] for a, b in zip(rounds[name], rounds[base_name]))


def median_round(rounds: list[dict]) -> dict:
    """The round with the median throughput (the machine is shared: single rounds catch other jobs' bursts)."""
    return sorted(rounds, key=lambda row: row["rps"])[(len(rounds) - 1) // 2]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_base_path", help="model dir with numeric versions (default: a fixture classifier)")
    parser.add_argument("--model_name", default="classifier")
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=3,
                        help="repeat every row, interleaved; rows report their median round")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--image", default="random",
                        help="request image: random | chelsea | coffee | digit | path to an image file")
    parser.add_argument("--image_size", type=int, default=224,
                        help="side of the random / chelsea / coffee JPEG (0: the photo's native size)")
    parser.add_argument("--max_batch_size", type=int, default=16)
    parser.add_argument("--batch_timeout_micros", type=int, default=0)
    parser.add_argument("--num_batch_threads", type=int, default=os.cpu_count() or 1,
                        help="server batch threads, and callers of the batched in-process row (default: CPUs)")
    parser.add_argument("--skip_flask", action="store_true")
    parser.add_argument("--module", default="efficientnet_lite0",
                        help="the model's image module (handle or SavedModel dir), for the seeds' Flask app")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    from serving import versions  # imports TensorFlow: after the flags are read

    tmp = tempfile.mkdtemp(prefix="bench_serving_")
    base_path = args.model_base_path
    if not base_path:
        sys.path.insert(0, os.path.join(REPO, "tests", "serving"))
        import model_fixtures
        base_path = os.path.join(tmp, "classifier")
        model_fixtures.write_image_classifier(os.path.join(base_path, "1"))
    base_path = os.path.abspath(base_path)
    version_dir = versions.version_folder(base_path)
    version = int(os.path.basename(version_dir))
    image, image_description = test_image(args.image, args.image_size)
    print(describe())
    print(f"model {version_dir}; image: {image_description}, {len(image)} bytes; "
          f"{args.requests} requests per row, median of {args.rounds} rounds")

    batching_file = os.path.join(tmp, "batching.config")
    with open(batching_file, "w") as f:
        f.write(f"max_batch_size {{ value: {args.max_batch_size} }}\n"
                f"batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n"
                f"num_batch_threads {{ value: {args.num_batch_threads} }}\nmax_enqueued_batches {{ value: 1000 }}\n")
    monitoring_file = os.path.join(tmp, "monitoring.config")
    with open(monitoring_file, "w") as f:
        f.write(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
    grpc_port, rest_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         f"--model_name={args.model_name}", f"--model_base_path={base_path}", "--enable_batching",
         f"--batching_parameters_file={batching_file}", f"--monitoring_config_file={monitoring_file}",
         "--bind_address=127.0.0.1", "--log_level=WARNING"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "server.log"), "w"))  # noqa: SIM115
    server.log_path = os.path.join(tmp, "server.log")
    rounds: dict[str, list[dict]] = {}

    def record(name, row):
        rounds.setdefault(name, []).append(row)

    def in_process_row(name, call_factory, concurrency, requests, images_per_call=1):
        cpu_before = cpu_seconds(os.getpid())
        row = measure(call_factory, concurrency, requests, images_per_call)
        row["cpu_ms"] = 1000 * (cpu_seconds(os.getpid()) - cpu_before) / row["images"]
        record(name, row)

    def server_row(name, call_factory, concurrency):
        sum_before, count_before = batch_counts(rest_port)
        cpu_before, client_cpu_before = cpu_seconds(server.pid), cpu_seconds(os.getpid())
        row = measure(call_factory, concurrency, args.requests)
        row["cpu_ms"] = 1000 * (cpu_seconds(server.pid) - cpu_before) / row["images"]
        row["client_cpu_ms"] = 1000 * (cpu_seconds(os.getpid()) - client_cpu_before) / row["images"]
        sum_after, count_after = batch_counts(rest_port)
        row["mean_batch"] = (sum_after - sum_before) / max(1.0, count_after - count_before)
        record(name, row)

    try:
        wait_for(rest_port, server)
        rss_loaded = rss_mib(server.pid)

        # ---- in-process: the same signature, same session runtime, no transport
        import numpy as np

        from serving.saved_model_version import SavedModelVersion
        loaded = SavedModelVersion(args.model_name, version, version_dir)
        signature = loaded.signatures["serving_default"]
        input_name = next(iter(signature.inputs))
        outputs = sorted(signature.outputs)
        single = np.array([image], dtype=object)
        batched = np.array([image] * args.max_batch_size, dtype=object)

        first_outputs = loaded.run("serving_default", {input_name: single}, outputs)
        server_label = first_outputs["label"][0].decode() if "label" in first_outputs else None

        def in_process(inputs=single):
            return lambda: loaded.run("serving_default", {input_name: inputs}, outputs)

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

        def rest_call(port=rest_port, path=f"/v1/models/{args.model_name}:predict", body=rest_body,
                      content_type="application/json"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

            def call():
                connection.request("POST", path, body, {"Content-Type": content_type})
                response = connection.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
            return call

        # The batched in-process row is the throughput ceiling the server's batching aims at: num_batch_threads
        # callers each running whole batches of max_batch_size images, no transport, no batch formation.
        batched_row = f"in-process b={args.max_batch_size}x{args.num_batch_threads}"
        batched_calls = max(10 * args.num_batch_threads, args.requests // args.max_batch_size)
        for _ in range(args.rounds):
            in_process_row(batched_row, lambda: in_process(batched), args.num_batch_threads, batched_calls,
                           args.max_batch_size)
            for c in concurrencies:
                in_process_row(f"in-process c={c}", in_process, c, args.requests)
                server_row(f"gRPC c={c}", grpc_call, c)
                server_row(f"REST c={c}", rest_call, c)
        rss_after, rss_peak = rss_mib(server.pid), rss_mib(server.pid, "VmHWM")
        loaded.unload()
    finally:
        server.terminate()
        server.wait(timeout=60)

    if not args.skip_flask:
        flask_apps = [("Flask lean", LEAN_FLASK_APP, [version_dir],
                       json.dumps({"image": base64.b64encode(image).decode()}).encode(), "application/json")]
        head_file = os.path.join(tmp, "seeds_head.npz")
        module_dir = write_seeds_head(version_dir, args.module, head_file)
        if module_dir:
            flask_apps.insert(0, ("Flask seeds", SEEDS_FLASK_APP, [module_dir, head_file])
                              + multipart_body("image", "image.jpg", image))
        else:
            print(f"Flask seeds: skipped, {version_dir} is not the pipeline's module + head export")
        for name, source, app_args, body, content_type in flask_apps:
            flask_port = free_port()
            app_file = os.path.join(tmp, name.replace(" ", "_").lower() + ".py")
            with open(app_file, "w") as f:
                f.write(source)
            log_path = app_file[:-3] + ".log"  # a pipe nobody reads would fill up with the access log
            flask = subprocess.Popen([sys.executable, app_file, *app_args, str(flask_port)],
                                     stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))  # noqa: SIM115
            flask.log_path = log_path
            try:
                wait_for(flask_port, flask)
                if name == "Flask seeds":  # same model, same answer: the baseline does the server's work
                    connection = http.client.HTTPConnection("127.0.0.1", flask_port, timeout=60)
                    connection.request("POST", "/predict", body, {"Content-Type": content_type})
                    answer = json.loads(connection.getresponse().read())
                    connection.close()
                    print(f"Flask seeds top label {answer['predictions'][0]['label']!r} "
                          f"({answer['predictions'][0]['probability']:.3f}); server label {server_label!r}")
                for _ in range(args.rounds):
                    for c in concurrencies:
                        record(f"{name} c={c}", measure(
                            lambda: rest_call(flask_port, "/predict", body, content_type),  # noqa: B023 (called now)
                            c, args.requests))
            finally:
                flask.terminate()
                flask.wait(timeout=60)
        if module_dir:
            seeds_cost_breakdown(os.path.join(tmp, "flask_seeds.py"), module_dir, head_file, image)

    results = {name: median_round(rows) for name, rows in rounds.items()}

    ratio = functools.partial(round_ratio, rounds)
    p50_overhead = functools.partial(round_p50_overhead, rounds)

    print(f"\n{'':20}{'p50 ms':>9}{'p99 ms':>9}{'img/s':>9}{'cpu ms':>8}{'client':>8}{'batch':>7}")
    for name, row in results.items():
        cpu = f"{row['cpu_ms']:8.2f}" if "cpu_ms" in row else f"{'':8}"
        client = f"{row['client_cpu_ms']:8.2f}" if "client_cpu_ms" in row else f"{'':8}"
        batch = f"{row['mean_batch']:7.1f}" if "mean_batch" in row else ""
        print(f"{name:20}{row['p50_ms']:9.2f}{row['p99_ms']:9.2f}{row['rps']:9.1f}{cpu}{client}{batch}")
    print("(median round of each row; latency per call; img/s = images per second; cpu ms = CPU per image of the "
          "process doing the work: this one in-process, the server otherwise; client = CPU per image of the load "
          "generator (this process) on the same cores; batch = mean batch the server ran)")
    print("\nratios: per round, median over rounds (targets in brackets)")
    for c in concurrencies:
        base = f"in-process c={c}"
        for transport in ("gRPC", "REST"):
            name = f"{transport} c={c}"
            line = (f"  c={c:<3} {transport:5} p50 overhead {p50_overhead(name, base):+6.2f} ms vs {base}"
                    f"{' [<= 2 ms]' if c == 1 else ''}; throughput {ratio(name, base):.2f}x {base}")
            if c > 1:
                target = ">= 0.8x" if transport == "gRPC" else ">= 0.7x"
                line += f", {ratio(name, batched_row):.2f}x {batched_row} [{target}]"
            print(line)
        for flask_name, target in (("Flask seeds", " [>= 3x]"), ("Flask lean", "")):
            if f"{flask_name} c={c}" in rounds:
                print(f"  c={c:<3} REST vs {flask_name} throughput {ratio(f'REST c={c}', f'{flask_name} c={c}'):.2f}x, "
                      f"gRPC vs {flask_name} {ratio(f'gRPC c={c}', f'{flask_name} c={c}'):.2f}x{target}")
    print(describe().split("; ")[1] + " after")
    print(f"\nserver RSS: {rss_loaded:.0f} MiB after load, {rss_after:.0f} MiB after the run, peak {rss_peak:.0f} MiB "
          "[<= 1024 MiB]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
