"""The served classifier from its SavedModel vs from model.tflite (--prefer_tflite_model), side by side in one run.

    .venv/bin/python benchmarks/bench_serving_litert.py [--model_base_path DIR] [--image chelsea] [--requests 240]

Two server processes over the same version folder, both `--enable_batching` (max_batch_size 16, timeout 0,
num_batch_threads = CPUs, as bench_serving.py), one of them with `--prefer_tflite_model`. Default model: the builtin
EfficientNet-Lite0 with a 5-class head cut from its own ImageNet classifier, exported by the trainer's
export_serving_model (so the version folder holds the SavedModel and model.tflite exactly as a pushed model does).
Rows, interleaved per round, at 1 and 16 clients: each server over gRPC and REST, and both servables called
in-process (the p50 overhead baseline). First checks that both servers answer the same labels and scores (<= 1e-4)
for the request image and the shipped photos.
"""
from __future__ import annotations

import argparse
import base64
import functools
import http.client
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_serving import (  # noqa: E402
    METRICS_PATH,
    batch_counts,
    cpu_seconds,
    free_port,
    measure,
    median_round,
    round_p50_overhead,
    round_ratio,
    test_image,
    wait_for,
)

IMAGENET_SUBSET = {"tabby cat": 281, "coffee mug": 504, "space shuttle": 812, "daisy": 985, "goldfish": 1}


def write_imagenet_subset_classifier(version_dir: str) -> None:
    """Lite0 + a softmax head over IMAGENET_SUBSET (weights from the module's ImageNet classifier), exported like a
    trained model."""
    from image_retrain.image_module import load_image_module
    from pipelines import configs
    from pipelines.models.head import build_head
    from pipelines.models.saved_model_export import export_serving_model

    module = load_image_module("efficientnet_lite0")
    indices = list(IMAGENET_SUBSET.values())
    head = build_head(module.feature_dim, len(indices), {**configs.HYPERPARAMETERS, "hidden_units": 0})
    head.get_layer("scores").set_weights([module.module.classifier_kernel.numpy()[:, indices],
                                          module.module.classifier_bias.numpy()[indices]])
    export_serving_model(module, head, list(IMAGENET_SUBSET), version_dir)


def start_server(tmp: str, name: str, base_path: str, model_name: str, extra: list[str]):
    grpc_port, rest_port = free_port(), free_port()
    log_path = os.path.join(tmp, f"{name}.log")
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         f"--model_name={model_name}", f"--model_base_path={base_path}", "--enable_batching",
         f"--batching_parameters_file={os.path.join(tmp, 'batching.config')}",
         f"--monitoring_config_file={os.path.join(tmp, 'monitoring.config')}", "--bind_address=127.0.0.1",
         "--log_level=WARNING", *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
    process.log_path = log_path
    process.grpc_port, process.rest_port = grpc_port, rest_port
    return process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_base_path", help="model dir with numeric versions holding model.tflite")
    parser.add_argument("--model_name", default="classifier")
    parser.add_argument("--requests", type=int, default=240, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--image", default="chelsea", help="as bench_serving.py: random | chelsea | coffee | path")
    parser.add_argument("--image_size", type=int, default=0, help="as bench_serving.py (0: the photo's own size)")
    parser.add_argument("--max_batch_size", type=int, default=16)
    parser.add_argument("--tflite_interpreters", type=int, default=1,
                        help="--num_tflite_interpreters_per_pool of the LiteRT server (and the in-process LiteRT row)")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    import numpy as np

    from benchmarks.machine import describe
    from serving import versions
    from serving.litert_version import TFLITE_FILE, LiteRTVersion
    from serving.saved_model_version import SavedModelVersion

    print(describe())
    tmp = tempfile.mkdtemp(prefix="bench_serving_litert_")
    base_path = os.path.abspath(args.model_base_path or os.path.join(tmp, "classifier"))
    if not args.model_base_path:
        write_imagenet_subset_classifier(os.path.join(base_path, "1"))
    version_dir = versions.version_folder(base_path)
    version = int(os.path.basename(version_dir))
    if not os.path.exists(os.path.join(version_dir, TFLITE_FILE)):
        print(f"{version_dir} has no {TFLITE_FILE}: export it with this version of the trainer", file=sys.stderr)
        return 1
    image, image_description = test_image(args.image, args.image_size)
    print(f"model {version_dir}; image: {image_description}, {len(image)} bytes; {args.requests} requests per row, "
          f"median of {args.rounds} rounds; LiteRT interpreters: {args.tflite_interpreters}")
    with open(os.path.join(tmp, "batching.config"), "w") as f:
        f.write(f"max_batch_size {{ value: {args.max_batch_size} }}\nbatch_timeout_micros {{ value: 0 }}\n"
                f"num_batch_threads {{ value: {os.cpu_count()} }}\nmax_enqueued_batches {{ value: 1000 }}\n")
    with open(os.path.join(tmp, "monitoring.config"), "w") as f:
        f.write(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')

    servers = {"SavedModel": start_server(tmp, "saved_model", base_path, args.model_name, []),
               "LiteRT": start_server(tmp, "litert", base_path, args.model_name, [
                   "--prefer_tflite_model", f"--num_tflite_interpreters_per_pool={args.tflite_interpreters}"])}
    rounds: dict[str, list[dict]] = {}

    def record(name, row):
        rounds.setdefault(name, []).append(row)

    try:
        for server in servers.values():
            wait_for(server.rest_port, server)
        loaded = {"SavedModel": SavedModelVersion(args.model_name, version, version_dir),
                  "LiteRT": LiteRTVersion(args.model_name, version, version_dir,
                                          interpreters=args.tflite_interpreters)}
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        def predict_request(images: list[bytes]):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = args.model_name
            request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(np.array(images, dtype=object)))
            return request

        single_request = predict_request([image])

        def grpc_call(server, request=single_request):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(
                f"127.0.0.1:{server.grpc_port}", options=[("grpc.max_receive_message_length", -1)]))
            return lambda: stub.Predict(request, timeout=60)

        rest_body = json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(image).decode()}}]}).encode()

        def rest_call(server):
            connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)

            def call():
                connection.request("POST", f"/v1/models/{args.model_name}:predict", rest_body,
                                   {"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
            return call

        # Same answers first: the request image and the shipped photos, through each server's gRPC API.
        import io

        import skimage.data
        from PIL import Image
        photos = [image]
        for name in ("chelsea", "coffee", "rocket"):
            buffer = io.BytesIO()
            Image.fromarray(getattr(skimage.data, name)()).save(buffer, "JPEG", quality=90)
            photos.append(buffer.getvalue())
        answers = {}
        for name, server in servers.items():
            response = grpc_call(server, predict_request(photos))()
            answers[name] = (tf.make_ndarray(response.outputs["scores"]),
                             [v.decode() for v in tf.make_ndarray(response.outputs["label"])])
        difference = float(np.abs(answers["SavedModel"][0] - answers["LiteRT"][0]).max())
        same_labels = answers["SavedModel"][1] == answers["LiteRT"][1]
        print(f"labels SavedModel {answers['SavedModel'][1]}, LiteRT {answers['LiteRT'][1]} "
              f"({'identical' if same_labels else 'DIFFERENT'}); max |score difference| {difference:.1e} "
              f"[<= 1e-4: {'met' if same_labels and difference <= 1e-4 else 'NOT met'}]")

        single = np.array([image], dtype=object)
        for _ in range(args.rounds):
            for c in concurrencies:
                for name in servers:
                    record(f"in-process {name} c={c}", measure(
                        lambda name=name: lambda: loaded[name].run("serving_default", {"image_bytes": single},
                                                                   ["label", "scores", "classes"]),
                        c, args.requests))
                for name, server in servers.items():
                    for transport, factory in (("gRPC", grpc_call), ("REST", rest_call)):
                        sum_before, count_before = batch_counts(server.rest_port)
                        cpu_before = cpu_seconds(server.pid)
                        row = measure(lambda factory=factory, server=server: factory(server), c, args.requests)
                        row["cpu_ms"] = 1000 * (cpu_seconds(server.pid) - cpu_before) / row["images"]
                        sum_after, count_after = batch_counts(server.rest_port)
                        row["mean_batch"] = (sum_after - sum_before) / max(1.0, count_after - count_before)
                        record(f"{transport} {name} c={c}", row)
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(timeout=60)

    ratio = functools.partial(round_ratio, rounds)
    p50_overhead = functools.partial(round_p50_overhead, rounds)

    print(f"\n{'':26}{'p50 ms':>9}{'p99 ms':>9}{'img/s':>9}{'cpu ms':>8}{'batch':>7}")
    for name, rows in rounds.items():
        row = median_round(rows)
        cpu = f"{row['cpu_ms']:8.2f}" if "cpu_ms" in row else f"{'':8}"
        batch = f"{row['mean_batch']:7.1f}" if "mean_batch" in row else ""
        print(f"{name:26}{row['p50_ms']:9.2f}{row['p99_ms']:9.2f}{row['rps']:9.1f}{cpu}{batch}")
    print("\nratios: per round, median over rounds (targets in brackets)")
    for c in concurrencies:
        for transport in ("gRPC", "REST"):
            target = " [>= 2x]" if c > 1 else ""
            print(f"  c={c:<3} {transport:5} LiteRT / SavedModel throughput "
                  f"{ratio(f'{transport} LiteRT c={c}', f'{transport} SavedModel c={c}'):.2f}x{target}; p50 overhead "
                  f"vs in-process: LiteRT {p50_overhead(f'{transport} LiteRT c={c}', f'in-process LiteRT c={c}'):+.2f}"
                  f" ms, SavedModel "
                  f"{p50_overhead(f'{transport} SavedModel c={c}', f'in-process SavedModel c={c}'):+.2f} ms"
                  f"{' [<= 2 ms]' if c == 1 else ''}")
        print(f"  c={c:<3} in-process LiteRT / SavedModel throughput "
              f"{ratio(f'in-process LiteRT c={c}', f'in-process SavedModel c={c}'):.2f}x")
    print(describe().split("; ")[1] + " after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
