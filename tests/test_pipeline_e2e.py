"""The real pipeline end to end on a small generated image set (LocalDagRunner, SQLite MLMD, builtin module)."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from image_fixtures import make_shapes_dataset

pytestmark = pytest.mark.e2e

CLASSIFY_IN_FRESH_PROCESS = r"""
import io, json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
items = json.loads(sys.stdin.read())
images = [open(path, "rb").read() for path, _ in items]
out = model.signatures["serving_default"](image_bytes=tf.constant(images))
labels = [label.decode() for label in out["label"].numpy()]
print(json.dumps({"predicted": labels, "classes": [c.decode() for c in out["classes"].numpy()[0]]}))
"""


def test_pipeline_trains_blesses_pushes_and_reuses_embeddings(tmp_path):
    from pipelines.local_runner import RunOptions, format_result, run_pipeline

    data = tmp_path / "data"
    make_shapes_dataset(data, n_per_class=20, seed=0)
    (data / "circle" / "empty.jpg").write_bytes(b"")
    (data / "square" / "truncated.jpg").write_bytes((data / "square").glob("*.jpg").__next__().read_bytes()[:200])
    options = RunOptions(data_dir=str(data), model_name="shapes", output_dir=str(tmp_path / "out"),
                         accuracy_threshold=0.8, hyperparameters={"epochs": 30}, mobile_formats=("tflite",))

    first = run_pipeline(options)
    assert first.rejects == 2
    assert first.embeddings_computed == 60 and first.embeddings_cached == 0
    assert first.blessed and first.pushed and first.accuracy >= 0.8
    assert first.baseline_accuracy is None  # nothing blessed before
    assert first.training == "from the image module: no model has been blessed or served yet"
    # Every step's wall time, from ML Metadata, in the order the steps ran; the summary's last line shows them.
    ran = list(first.step_seconds)
    steps = ["ImageExampleGen", "ImageEmbedder", "Trainer", "Evaluator", "ServingValidator", "AtomicPusher"]
    assert [ran.index(step) for step in steps] == sorted(ran.index(step) for step in steps)
    assert all(seconds >= 0 for seconds in first.step_seconds.values()) and first.step_seconds["Trainer"] > 1
    step_line = next(line for line in format_result(first).splitlines() if line.startswith("step times:"))
    assert f"Trainer {first.step_seconds['Trainer']:.0f} s" in step_line
    version_dir = Path(first.pushed_path)
    assert version_dir.parent == Path(options.serving_model_dir) and version_dir.name.isdigit()
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "assets" / "labels.txt").is_file()
    assert (version_dir / "model.tflite").is_file()  # TF Serving's --prefer_tflite_model convention
    assert [Path(p).name for p in first.mobile_exports] == [f"shapes-{version_dir.name}.tflite"]
    embedding_counts = next(Path(tmp_path / "out" / "tfx_pipeline_output").glob(
        "*/ImageEmbedder/embedded_examples/*/embedding_counts.json"))
    assert json.loads(embedding_counts.read_text())["engine"] == "litert"
    assert not [p for p in version_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    report = Path(first.report_path)
    assert report.is_file() and (report.parent / "confusion_matrix.png").stat().st_size > 1000
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert [row["label"] for row in metrics["per_class"]] == ["circle", "square", "triangle"]
    assert sum(sum(row) for row in metrics["confusion_matrix"]) == metrics["example_count"]
    rejects = next(Path(tmp_path / "out" / "tfx_pipeline_output").glob("*/ImageExampleGen/examples/*/rejects.csv"))
    assert "empty.jpg" in rejects.read_text() and "truncated.jpg" in rejects.read_text()

    # The pushed model in a process that never imports the project: raw JPEG/PNG bytes in, labels out.
    fresh = tmp_path / "fresh"
    make_shapes_dataset(fresh, n_per_class=10, seed=123)
    items = [(str(path), path.parent.name) for path in sorted(fresh.glob("*/*"))]
    result = subprocess.run([sys.executable, "-c", CLASSIFY_IN_FRESH_PROCESS, str(version_dir)],
                            input=json.dumps(items), capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["classes"] == ["circle", "square", "triangle"]
    accuracy = sum(p == t for p, (_, t) in zip(output["predicted"], items)) / len(items)
    assert accuracy >= 0.9, output

    # Unchanged data and settings: the run stops after listing the images, in seconds, training and pushing nothing.
    started = time.monotonic()
    unchanged = run_pipeline(options)
    assert unchanged.nothing_changed and not unchanged.pushed and time.monotonic() - started < 20
    assert format_result(unchanged).startswith("nothing to do: the images and the settings are those of the last run")

    # --force runs anyway: no embedding is computed again, and the new model is compared with the blessed one.
    second = run_pipeline(dataclasses.replace(options, force=True))
    assert second.embeddings_computed == 0 and second.embeddings_cached == 60
    assert second.baseline_accuracy is not None and second.data_changes == "no change"

    # Three new images: exactly three embeddings computed.
    make_shapes_dataset(data, n_per_class=1, seed=7, start_index=100)
    third = run_pipeline(options)
    assert third.data_changes == "3 new"
    # Same classes: the blessed model is continued on the new images and a replay sample, not trained again.
    assert re.fullmatch(r"continued \S+/Trainer/model/\d+/Format-Serving on \d+ new and \d+ replayed images \(the "
                        r"classes are those of the model it continues\)", third.training), third.training
    assert third.embeddings_computed == 3 and third.embeddings_cached == 60
