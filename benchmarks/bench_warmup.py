"""First-request latency after a push, with and without the warmup records the Trainer writes, against the steady
p50 of the same version, on the model server as a process.

    .venv/bin/python benchmarks/bench_warmup.py [--model_base_path SERVING_DIR/MODEL] [--rounds 3]

A pushed version (default: an EfficientNet-Lite0 classifier exported here with warmup records) is pushed again as a
new version, alternately with its warmup records and without them; as soon as the server reports the new version
AVAILABLE, one single-image request goes to it (the first request: gRPC Predict with a deadline, or REST :predict),
then `--requests` more of the same (steady p50).
"""
from __future__ import annotations

import argparse
import base64
import io
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.machine import describe  # noqa: E402

MODEL = "classifier"


def jpeg(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(seed).randint(0, 255, (224, 224, 3), np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def export_classifier(version_dir: str) -> None:
    from image_retrain.image_module import load_image_module
    from pipelines import configs
    from pipelines.models.head import build_head
    from pipelines.models.saved_model_export import export_serving_model

    module = load_image_module(configs.MODULE_HANDLE)
    head = build_head(module.feature_dim, 3, dict(configs.HYPERPARAMETERS))
    export_serving_model(module, head, ["a", "b", "c"], version_dir, warmup_images=[jpeg(i) for i in range(4)])


def wait_available(rest, version: int) -> None:
    while not any(entry["version"] == str(version) and entry["state"] == "AVAILABLE"
                  for entry in rest.status(MODEL)["model_version_status"]):
        time.sleep(0.01)


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return 1000 * (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_base_path", help="a model base path with a version holding warmup records")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=30, help="requests for each version's steady p50")
    args = parser.parse_args()
    print(describe(), flush=True)
    import tensorflow as tf

    from serving import versions
    from serving.client import RestClient
    from serving.grpc_client import GrpcClient
    from serving.model_format import IMAGE_BYTES_INPUT, PREDICT_SIGNATURE, WARMUP_FILE
    from serving.process import model_server

    work = tempfile.mkdtemp(prefix="bench_warmup_")
    base = os.path.join(work, MODEL)
    if args.model_base_path:
        shutil.copytree(versions.version_folder(args.model_base_path), os.path.join(base, "1"))
    else:
        export_classifier(os.path.join(base, "1"))
    source = os.path.join(base, "1")
    assert os.path.exists(os.path.join(source, WARMUP_FILE)), f"{source} holds no warmup records"
    image = tf.make_tensor_proto([jpeg(99)])
    body = {"instances": [{IMAGE_BYTES_INPUT: {"b64": base64.b64encode(jpeg(99)).decode()}}]}
    cases = [(warmup, api) for warmup in ("with warmup", "without warmup") for api in ("gRPC", "REST")]
    rows = {case: [] for case in cases}
    with model_server(f"--model_name={MODEL}", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
                      "--log_level=WARNING", cwd=REPO) as server:
        rest, grpc_client = RestClient(server.rest_url), GrpcClient(server.grpc_address)
        next_version = 2
        for _ in range(args.rounds):
            for warmup, api in cases:
                staging = os.path.join(work, f".staging-{next_version}")
                shutil.copytree(source, staging)
                if warmup == "without warmup":
                    os.remove(os.path.join(staging, WARMUP_FILE))
                os.rename(staging, os.path.join(base, str(next_version)))  # atomic, as the pusher publishes
                pushed = time.perf_counter()
                wait_available(rest, next_version)
                loaded_s = time.perf_counter() - pushed

                def predict(version=next_version, api=api):
                    if api == "gRPC":
                        grpc_client.predict(MODEL, {IMAGE_BYTES_INPUT: image}, PREDICT_SIGNATURE, version=version)
                    else:
                        rest.predict(MODEL, body, version=version)

                first = timed(predict)
                steady = statistics.median(timed(predict) for _ in range(args.requests))
                rows[(warmup, api)].append((first, steady, loaded_s))
                next_version += 1
        grpc_client.close()
    shutil.rmtree(work)
    print(f"\nfirst single-image request after a push vs that version's steady p50 ({args.rounds} rounds, "
          f"{args.requests} requests each)")
    print(f"{'':21s} {'first (ms)':>11s} {'steady p50 (ms)':>16s} {'first / p50':>12s} {'push -> AVAILABLE (s)':>22s}")
    for (warmup, api), measured in rows.items():
        first = statistics.median(row[0] for row in measured)
        steady = statistics.median(row[1] for row in measured)
        loaded = statistics.median(row[2] for row in measured)
        print(f"{api + ', ' + warmup:21s} {first:11.1f} {steady:16.1f} {first / steady:11.1f}x {loaded:22.1f}")
    print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
