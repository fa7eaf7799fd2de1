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
import dataclasses
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


def parse_args() -> argparse.Namespace:
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
    return parser.parse_args()


@dataclasses.dataclass
class Bench:
    """One run: its flags, scratch dir, served model version and request image, and the rounds of every row."""
    args: argparse.Namespace
    tmp: str
    base_path: str
    version_dir: str
    image: bytes
    concurrencies: list[int]
    rounds: dict[str, list[dict]] = dataclasses.field(default_factory=dict)

    def record(self, name: str, row: dict) -> None:
        self.rounds.setdefault(name, []).append(row)

    @property
    def batched_row(self) -> str:
        return f"in-process b={self.args.max_batch_size}x{self.args.num_batch_threads}"


def model_base_path(given: str | None, tmp: str) -> str:
    """The model to serve: the one given, or a small fixture classifier written under `tmp`."""
    if given:
        return os.path.abspath(given)
    sys.path.insert(0, os.path.join(REPO, "tests", "serving"))
    import model_fixtures
    base_path = os.path.join(tmp, "classifier")
    model_fixtures.write_image_classifier(os.path.join(base_path, "1"))
    return os.path.abspath(base_path)


@dataclasses.dataclass
class ModelServer:
    process: subprocess.Popen
    grpc_port: int
    rest_port: int


def write_server_configs(args: argparse.Namespace, tmp: str) -> tuple[str, str]:
    """The server's batching parameters file and its monitoring config file (Prometheus, read for the batch sizes)."""
    batching_file = os.path.join(tmp, "batching.config")
    with open(batching_file, "w") as f:
        f.write(f"max_batch_size {{ value: {args.max_batch_size} }}\n"
                f"batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n"
                f"num_batch_threads {{ value: {args.num_batch_threads} }}\nmax_enqueued_batches {{ value: 1000 }}\n")
    monitoring_file = os.path.join(tmp, "monitoring.config")
    with open(monitoring_file, "w") as f:
        f.write(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
    return batching_file, monitoring_file


def start_server(bench: Bench) -> ModelServer:
    """`python -m serving --enable_batching` as its own process (client and server do not share a GIL)."""
    args = bench.args
    batching_file, monitoring_file = write_server_configs(args, bench.tmp)
    grpc_port, rest_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         f"--model_name={args.model_name}", f"--model_base_path={bench.base_path}", "--enable_batching",
         f"--batching_parameters_file={batching_file}", f"--monitoring_config_file={monitoring_file}",
         "--bind_address=127.0.0.1", "--log_level=WARNING"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(os.path.join(bench.tmp, "server.log"), "w"))  # noqa: SIM115
    process.log_path = os.path.join(bench.tmp, "server.log")
    return ModelServer(process, grpc_port, rest_port)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=60)


def in_process_caller(loaded, input_name: str, outputs: list[str], inputs):
    """The same signature, same session runtime, no transport."""
    return lambda: loaded.run("serving_default", {input_name: inputs}, outputs)


def grpc_predict_request(model_name: str, input_name: str, image: bytes):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.inputs[input_name].CopyFrom(tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[image],
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)])))
    return request


def grpc_caller(port: int, request):
    """Official stubs, one channel per client thread."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)]))
    return lambda: stub.Predict(request, timeout=60)


def rest_caller(port: int, path: str, body: bytes, content_type: str):
    """A keep-alive HTTP connection per client thread."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call():
        connection.request("POST", path, body, {"Content-Type": content_type})
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
    return call


def in_process_row(call_factory, concurrency: int, requests: int, images_per_call: int = 1) -> dict:
    """measure() plus this process's CPU per image."""
    cpu_before = cpu_seconds(os.getpid())
    row = measure(call_factory, concurrency, requests, images_per_call)
    row["cpu_ms"] = 1000 * (cpu_seconds(os.getpid()) - cpu_before) / row["images"]
    return row


def server_row(server: ModelServer, call_factory, concurrency: int, requests: int) -> dict:
    """measure() plus the server's and this client's CPU per image and the mean batch the server ran."""
    sum_before, count_before = batch_counts(server.rest_port)
    cpu_before, client_cpu_before = cpu_seconds(server.process.pid), cpu_seconds(os.getpid())
    row = measure(call_factory, concurrency, requests)
    row["cpu_ms"] = 1000 * (cpu_seconds(server.process.pid) - cpu_before) / row["images"]
    row["client_cpu_ms"] = 1000 * (cpu_seconds(os.getpid()) - client_cpu_before) / row["images"]
    sum_after, count_after = batch_counts(server.rest_port)
    row["mean_batch"] = (sum_after - sum_before) / max(1.0, count_after - count_before)
    return row


def row_callers(bench: Bench, server: ModelServer, loaded) -> tuple:
    """Call factories for measure(), all sending the request image: (in-process one image, in-process a batch of
    max_batch_size images, gRPC Predict, REST predict)."""
    import numpy as np

    args = bench.args
    signature = loaded.signatures["serving_default"]
    input_name = next(iter(signature.inputs))
    outputs = sorted(signature.outputs)
    single = np.array([bench.image], dtype=object)
    batched = np.array([bench.image] * args.max_batch_size, dtype=object)
    rest_body = json.dumps({"instances": [{input_name: {"b64": base64.b64encode(bench.image).decode()}}]}).encode()
    return (functools.partial(in_process_caller, loaded, input_name, outputs, single),
            functools.partial(in_process_caller, loaded, input_name, outputs, batched),
            functools.partial(grpc_caller, server.grpc_port,
                              grpc_predict_request(args.model_name, input_name, bench.image)),
            functools.partial(rest_caller, server.rest_port, f"/v1/models/{args.model_name}:predict", rest_body,
                              "application/json"))


def measure_server_rows(bench: Bench, server: ModelServer) -> tuple[str | None, tuple[float, float, float]]:
    """The in-process, gRPC and REST rows, interleaved round by round.

    Returns the label the model gives the image (None for a model without a "label" output) and the server's RSS
    in MiB after load, after the run and at its peak."""
    from serving.saved_model_version import SavedModelVersion

    args = bench.args
    wait_for(server.rest_port, server.process)
    rss_loaded = rss_mib(server.process.pid)
    loaded = SavedModelVersion(args.model_name, int(os.path.basename(bench.version_dir)), bench.version_dir)
    in_process_single, in_process_batched, grpc_call, rest_call = row_callers(bench, server, loaded)
    first_outputs = in_process_single()()
    server_label = first_outputs["label"][0].decode() if "label" in first_outputs else None
    # The batched in-process row is the throughput ceiling the server's batching aims at: num_batch_threads
    # callers each running whole batches of max_batch_size images, no transport, no batch formation.
    batched_calls = max(10 * args.num_batch_threads, args.requests // args.max_batch_size)
    for _ in range(args.rounds):
        bench.record(bench.batched_row, in_process_row(in_process_batched, args.num_batch_threads, batched_calls,
                                                       args.max_batch_size))
        for c in bench.concurrencies:
            bench.record(f"in-process c={c}", in_process_row(in_process_single, c, args.requests))
            bench.record(f"gRPC c={c}", server_row(server, grpc_call, c, args.requests))
            bench.record(f"REST c={c}", server_row(server, rest_call, c, args.requests))
    rss_after, rss_peak = rss_mib(server.process.pid), rss_mib(server.process.pid, "VmHWM")
    loaded.unload()
    return server_label, (rss_loaded, rss_after, rss_peak)


def start_flask_app(bench: Bench, name: str, source: str, app_args: list[str]) -> tuple[subprocess.Popen, int]:
    """Writes the app's source into the scratch dir and runs it; returns the process and its port."""
    flask_port = free_port()
    app_file = os.path.join(bench.tmp, name.replace(" ", "_").lower() + ".py")
    with open(app_file, "w") as f:
        f.write(source)
    log_path = app_file[:-3] + ".log"  # a pipe nobody reads would fill up with the access log
    flask = subprocess.Popen([sys.executable, app_file, *app_args, str(flask_port)],
                             stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))  # noqa: SIM115
    flask.log_path = log_path
    return flask, flask_port


def print_seeds_answer(port: int, body: bytes, content_type: str, server_label: str | None) -> None:
    """Same model, same answer: shows the seeds' baseline does the server's work."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/predict", body, {"Content-Type": content_type})
    answer = json.loads(connection.getresponse().read())
    connection.close()
    print(f"Flask seeds top label {answer['predictions'][0]['label']!r} "
          f"({answer['predictions'][0]['probability']:.3f}); server label {server_label!r}")


def measure_flask_app(bench: Bench, name: str, source: str, app_args: list[str], body: bytes, content_type: str,
                      server_label: str | None) -> None:
    """One Flask baseline's rows, its rounds one after another, while it alone runs."""
    flask, flask_port = start_flask_app(bench, name, source, app_args)
    try:
        wait_for(flask_port, flask)
        if name == "Flask seeds":
            print_seeds_answer(flask_port, body, content_type, server_label)
        call = functools.partial(rest_caller, flask_port, "/predict", body, content_type)
        for _ in range(bench.args.rounds):
            for c in bench.concurrencies:
                bench.record(f"{name} c={c}", measure(call, c, bench.args.requests))
    finally:
        stop(flask)


def measure_flask_rows(bench: Bench, server_label: str | None) -> None:
    """The seeds' Flask (when the model is the pipeline's module + head export) and the lean Flask; then where a
    seeds' request spends its time."""
    image = bench.image
    flask_apps = [("Flask lean", LEAN_FLASK_APP, [bench.version_dir],
                   json.dumps({"image": base64.b64encode(image).decode()}).encode(), "application/json")]
    head_file = os.path.join(bench.tmp, "seeds_head.npz")
    module_dir = write_seeds_head(bench.version_dir, bench.args.module, head_file)
    if module_dir:
        flask_apps.insert(0, ("Flask seeds", SEEDS_FLASK_APP, [module_dir, head_file])
                          + multipart_body("image", "image.jpg", image))
    else:
        print(f"Flask seeds: skipped, {bench.version_dir} is not the pipeline's module + head export")
    for name, source, app_args, body, content_type in flask_apps:
        measure_flask_app(bench, name, source, app_args, body, content_type, server_label)
    if module_dir:
        seeds_cost_breakdown(os.path.join(bench.tmp, "flask_seeds.py"), module_dir, head_file, image)


def print_table(rounds: dict[str, list[dict]]) -> None:
    """Every row's median round."""
    results = {name: median_round(rows) for name, rows in rounds.items()}
    print(f"\n{'':20}{'p50 ms':>9}{'p99 ms':>9}{'img/s':>9}{'cpu ms':>8}{'client':>8}{'batch':>7}")
    for name, row in results.items():
        cpu = f"{row['cpu_ms']:8.2f}" if "cpu_ms" in row else f"{'':8}"
        client = f"{row['client_cpu_ms']:8.2f}" if "client_cpu_ms" in row else f"{'':8}"
        batch = f"{row['mean_batch']:7.1f}" if "mean_batch" in row else ""
        print(f"{name:20}{row['p50_ms']:9.2f}{row['p99_ms']:9.2f}{row['rps']:9.1f}{cpu}{client}{batch}")
    print("(median round of each row; latency per call; img/s = images per second; cpu ms = CPU per image of the "
          "process doing the work: this one in-process, the server otherwise; client = CPU per image of the load "
          "generator (this process) on the same cores; batch = mean batch the server ran)")


def print_ratios(bench: Bench) -> None:
    """The server's rows against the in-process and Flask rows measured beside them, with the targets."""
    ratio = functools.partial(round_ratio, bench.rounds)
    p50_overhead = functools.partial(round_p50_overhead, bench.rounds)
    batched_row = bench.batched_row
    print("\nratios: per round, median over rounds (targets in brackets)")
    for c in bench.concurrencies:
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
            if f"{flask_name} c={c}" in bench.rounds:
                print(f"  c={c:<3} REST vs {flask_name} throughput {ratio(f'REST c={c}', f'{flask_name} c={c}'):.2f}x, "
                      f"gRPC vs {flask_name} {ratio(f'gRPC c={c}', f'{flask_name} c={c}'):.2f}x{target}")


def print_memory(rss_loaded: float, rss_after: float, rss_peak: float) -> None:
    print(f"\nserver RSS: {rss_loaded:.0f} MiB after load, {rss_after:.0f} MiB after the run, peak {rss_peak:.0f} MiB "
          "[<= 1024 MiB]")


def main() -> int:
    args = parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    from serving import versions  # imports TensorFlow: after the flags are read

    tmp = tempfile.mkdtemp(prefix="bench_serving_")
    base_path = model_base_path(args.model_base_path, tmp)
    version_dir = versions.version_folder(base_path)
    image, image_description = test_image(args.image, args.image_size)
    bench = Bench(args, tmp, base_path, version_dir, image, concurrencies)
    print(describe())
    print(f"model {version_dir}; image: {image_description}, {len(image)} bytes; "
          f"{args.requests} requests per row, median of {args.rounds} rounds")

    server = start_server(bench)
    try:
        server_label, server_rss = measure_server_rows(bench, server)
    finally:
        stop(server.process)
    if not args.skip_flask:
        measure_flask_rows(bench, server_label)

    print_table(bench.rounds)
    print_ratios(bench)
    print(describe().split("; ")[1] + " after")
    print_memory(*server_rss)
    return 0


if __name__ == "__main__":
    sys.exit(main())
