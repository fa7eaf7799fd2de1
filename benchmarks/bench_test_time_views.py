"""What test-time views buy on a trained classifier: held-out accuracy with the scores averaged over 1, 2, 4 and 8
views of each image (the views `--test-time-views` serves: pipelines.models.views.dihedral_views), from one pass
of the pushed model's network over the eight views of every example. The served cost is that many network passes.

    .venv/bin/python benchmarks/bench_test_time_views.py SERVING_DIR/MODEL/VERSION \
        'OUTPUT/tfx_pipeline_output/PIPELINE/ImageExampleGen/examples/RUN/Split-test/*'
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import describe  # noqa: E402

VIEW_COUNTS = (1, 2, 4, 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a pushed version folder (SavedModel with its `network`)")
    parser.add_argument("examples", help="file pattern of the labelled tf.Examples (GZIP), e.g. the test split")
    args = parser.parse_args()
    import tensorflow as tf

    from pipelines.models.training_data import decoded_images, model_inputs
    from pipelines.models.views import dihedral_views

    print(describe(), flush=True)
    model = tf.saved_model.load(args.model_dir)
    (spec,) = model.network.concrete_functions[0].structured_input_signature[0]
    size = (int(spec.shape[1]), int(spec.shape[2]))
    scores, labels, network_seconds = [], [], 0.0
    for images, batch_labels in model_inputs(decoded_images([args.examples]), size, 16):
        views = dihedral_views(images, max(VIEW_COUNTS))
        started = time.perf_counter()
        batch_scores = model.network(views)["scores"].numpy()
        network_seconds += time.perf_counter() - started
        scores.append(batch_scores.reshape(max(VIEW_COUNTS), len(batch_labels), -1))
        labels.append(batch_labels.numpy())
    scores, labels = np.concatenate(scores, axis=1), np.concatenate(labels)
    per_view_ms = 1000 * network_seconds / scores.shape[0] / len(labels)
    print(f"{len(labels)} examples from {args.examples}; network {per_view_ms:.1f} ms per view per image")
    print("| views | accuracy | correct | network ms per image |\n|---|---|---|---|")
    for count in VIEW_COUNTS:
        correct = int(np.sum(np.argmax(scores[:count].mean(axis=0), axis=1) == labels))
        print(f"| {count} | {correct / len(labels):.4f} | {correct}/{len(labels)} | {count * per_view_ms:.0f} |")


if __name__ == "__main__":
    main()
