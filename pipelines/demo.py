"""`make run`: the whole product on data that ships with scikit-learn, offline.

1. Writes scikit-learn's 1,797 handwritten digits as PNG files, one folder per class.
2. Runs the pipeline (ingest -> embed -> train -> evaluate -> push) with the builtin EfficientNet-Lite0 module.
3. Starts the model server (`python -m serving`, tensorflow_model_server flags) on the pushed model.
4. Prints one gRPC and one REST prediction for held-out digits, then stops the server.

A second run on unchanged data stops after listing the images and serves the model pushed before (`RUN_ARGS=--force`
runs the pipeline anyway: no embedding is computed again, and it evaluates against the blessed model).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from pipelines import console

MODEL_NAME = "digits"
# Digits are 8x8; upscaled with nearest-neighbour so a stroke stays a stroke after the module's own resize.
DIGIT_PIXELS = 32
ACCURACY_TARGET = 0.90


def write_digits(root: str) -> int:
    """Writes the digits once (existing files are kept, so reruns see unchanged data); returns the image count."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        path = os.path.join(root, str(target), f"digit_{index:04d}.png")
        if os.path.exists(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        gray = (255 - pixels * 255.0 / 16.0).clip(0, 255).astype(np.uint8)  # dark ink on white paper
        Image.fromarray(gray, mode="L").resize((DIGIT_PIXELS, DIGIT_PIXELS), Image.NEAREST).save(path)
    return len(digits.target)


def serve_and_predict(model_base_path: str, images: list[tuple[str, bytes]]) -> None:
    from serving.client import RestClient
    from serving.grpc_client import GrpcClient
    from serving.process import model_server

    with model_server(f"--model_name={MODEL_NAME}", f"--model_base_path={model_base_path}", stdout=None, stderr=None,
                      echo=True) as server:
        rest = RestClient(server.rest_url)
        (status,) = rest.status(MODEL_NAME)["model_version_status"]
        print(f"model server up: gRPC {server.grpc_address}, REST {rest.base_url}, version {status['version']}")
        (grpc_path, grpc_image), (rest_path, rest_image) = images[0], images[1]
        grpc_client = GrpcClient(server.grpc_address)
        predictions = [("gRPC Predict ", grpc_path, grpc_client.predict_images(MODEL_NAME, [grpc_image], top_k=3)[0]),
                       ("REST :predict", rest_path, rest.predict_images(MODEL_NAME, [rest_image], top_k=3)[0])]
        grpc_client.close()
        for api, path, prediction in predictions:
            print(f"{api} {path} (true label {path.split('/')[0]}): {prediction.label}   top-3 "
                  + ", ".join(f"{label}={score:.3f}" for label, score in prediction.top_k))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="output")
    parser.add_argument("--no-serve", action="store_true", help="Stop after the pipeline.")
    parser.add_argument("--force", action="store_true", help="Run the pipeline even when the digits and settings "
                                                             "are those of the last run.")
    parser.add_argument("--verbose", action="store_true", help="Also show TensorFlow/TFX/Beam warnings and start-up "
                                                               "lines and Keras' per-epoch lines.")
    args = parser.parse_args(argv)
    console.configure(args.verbose)
    if not args.verbose and argv is None:  # the program itself (`make run`), not a caller in this process
        console.filter_native_stderr()

    from pipelines.local_runner import RunOptions, format_result, run_pipeline

    data_dir = os.path.abspath(os.path.join(args.output_dir, "data", "digits"))
    count = write_digits(data_dir)
    print(f"digits data set: {count} PNG files in {data_dir}", flush=True)
    options = RunOptions(data_dir=data_dir, model_name=MODEL_NAME, output_dir=args.output_dir,
                         accuracy_threshold=ACCURACY_TARGET, force=args.force)
    if not args.verbose:
        console.quiet_keras()
    started = time.time()
    result = run_pipeline(options)
    print(f"\npipeline finished in {time.time() - started:.0f} s")
    print(format_result(result))
    if result.accuracy is not None:
        verdict = "meets" if result.accuracy >= ACCURACY_TARGET else "BELOW"
        print(f"digits test accuracy {result.accuracy:.4f} {verdict} the {ACCURACY_TARGET:.2f} target")
    if args.no_serve:
        return 0
    if not os.path.isdir(result.serving_model_dir):
        print("no model has been pushed yet (never blessed): nothing to serve", file=sys.stderr)
        return 1
    # A run that found nothing new ran no pipeline: the held-out images are the last run's.
    serve_and_predict(result.serving_model_dir, held_out_images(options, result.run_id or None, count=2))
    return 0


def held_out_images(options, run_id: str | None, count: int) -> list[tuple[str, bytes]]:
    """The first images of the run's test split (never trained on): (path relative to the data dir, bytes)."""
    import tensorflow as tf
    from tfx.types import artifact_utils, standard_component_specs

    from image_retrain.contract import IMAGE_KEY, PATH_KEY, TEST_SPLIT
    from pipelines.local_runner import INGEST_NODE, run_outputs

    _, outputs = run_outputs(options.metadata_path, options.pipeline_name, run_id)
    test_split = artifact_utils.get_split_uri(outputs[(INGEST_NODE, standard_component_specs.EXAMPLES_KEY)], TEST_SPLIT)
    files = sorted(tf.io.gfile.glob(os.path.join(test_split, "*")))
    picked = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(count):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        picked.append((feature[PATH_KEY].bytes_list.value[0].decode(), feature[IMAGE_KEY].bytes_list.value[0]))
    return picked


if __name__ == "__main__":
    sys.exit(main())
