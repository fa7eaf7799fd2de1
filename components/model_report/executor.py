"""Writes the run's human report from TFMA's evaluation and the trained model's own predictions.

Accuracy and the confusion matrix come from TFMA (per-class precision and recall are derived from that matrix); the
misclassified images come from running the exported serving signature on the raw test images, exactly as a client
would see them.
"""
from __future__ import annotations

import html
import io
import json
import os
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components import contract
from components.contract import IMAGE_KEY, LABEL_NAME_KEY, PATH_KEY


def _metric_value(metric: dict) -> float | None:
    if "doubleValue" in metric:
        return float(metric["doubleValue"])
    if "boundedValue" in metric:
        return float(metric["boundedValue"]["value"])
    return None


def _load_metrics(evaluation_uri: str, model_name: str | None) -> tuple[dict[str, float], list]:
    """(overall metrics, confusion-matrix entries) of one model from TFMA's output."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_eval_result(evaluation_uri, model_name=model_name)
    metrics: dict[str, float] = {}
    for slice_key, by_output in result.slicing_metrics:
        if slice_key:  # overall slice only
            continue
        for by_sub_key in by_output.values():
            for values in by_sub_key.values():
                for name, metric in values.items():
                    value = _metric_value(metric)
                    if value is not None:
                        metrics[name] = value
    entries: list = []
    for slice_key, by_output in result.plots or []:
        if slice_key:
            continue
        for by_sub_key in by_output.values():
            for plots in by_sub_key.values():
                matrices = plots.get("multiClassConfusionMatrixAtThresholds", {}).get("matrices", [])
                if matrices:
                    entries = matrices[0].get("entries", [])
    return metrics, entries


def confusion_matrix(entries: list, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for entry in entries:
        actual, predicted = int(entry.get("actualClassId", 0)), int(entry.get("predictedClassId", 0))
        if 0 <= actual < num_classes and 0 <= predicted < num_classes:
            matrix[actual, predicted] += int(round(float(entry.get("numWeightedExamples", 0))))
    return matrix


def per_class_precision_recall(matrix: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    rows = []
    for index, label in enumerate(labels):
        true_positive = matrix[index, index]
        predicted, actual = matrix[:, index].sum(), matrix[index, :].sum()
        rows.append({"label": label, "support": int(actual),
                     "precision": float(true_positive / predicted) if predicted else None,
                     "recall": float(true_positive / actual) if actual else None})
    return rows


def plot_confusion_matrix(matrix: np.ndarray, labels: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.45 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        if count:
            axes.text(column, row, str(count), ha="center", va="center",
                      color="white" if count > threshold else "black", fontsize=8)
    axes.set_title("Confusion matrix (TFMA, test split)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def _split_files(examples, split: str) -> list[str]:
    return tf.io.gfile.glob(os.path.join(artifact_utils.get_split_uri([examples], split), "*"))


def misclassified_examples(model_dir: str, files: list[str], limit: int) -> tuple[list[dict], int]:
    """Runs the exported serving signature over the split's raw images; returns (misclassified, total)."""
    serving = tf.saved_model.load(model_dir).signatures["serving_default"]
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string), LABEL_NAME_KEY: tf.io.FixedLenFeature([], tf.string),
            PATH_KEY: tf.io.FixedLenFeature([], tf.string, default_value="")}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(32).map(
        lambda records: tf.io.parse_example(records, spec))
    wrong, total = [], 0
    for batch in dataset:
        outputs = serving(image_bytes=batch[IMAGE_KEY])
        predicted = outputs["label"].numpy()
        scores = outputs["scores"].numpy().max(axis=1)
        for index, (true_label, predicted_label) in enumerate(zip(batch[LABEL_NAME_KEY].numpy(), predicted)):
            total += 1
            if true_label != predicted_label and len(wrong) < limit:
                wrong.append({"path": batch[PATH_KEY][index].numpy().decode(errors="replace"),
                              "true": true_label.decode(errors="replace"),
                              "predicted": predicted_label.decode(errors="replace"),
                              "score": float(scores[index]), "image": batch[IMAGE_KEY][index].numpy()})
    return wrong, total


def _thumbnail_png(image_bytes: bytes) -> bytes:
    from PIL import Image

    image = Image.open(io.BytesIO(image_bytes))
    image.seek(0)
    image = image.convert("RGB")
    image.thumbnail((160, 160))
    if max(image.size) < 96:  # tiny images (digits are 8x8) are unreadable at their own size
        factor = max(1, 96 // max(image.size))
        image = image.resize((image.size[0] * factor, image.size[1] * factor), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def render_markdown(summary: dict) -> str:
    lines = [f"# Model report: {summary['split']} split", "",
             f"- blessed: **{summary['blessed']}**",
             f"- accuracy: **{_fmt(summary['accuracy'])}** on {summary['example_count']} examples",
             f"- baseline accuracy: {_fmt(summary['baseline_accuracy'])}",
             f"- threshold: {summary.get('threshold', 'n/a')}"]
    if summary.get("baseline_note"):
        lines.append(f"- note: {summary['baseline_note']}")
    lines += ["",
             "| class | support | precision | recall |", "|---|---|---|---|"]
    lines += [f"| {row['label']} | {row['support']} | {_fmt(row['precision'])} | {_fmt(row['recall'])} |"
              for row in summary["per_class"]]
    lines += ["", f"![confusion matrix]({contract.CONFUSION_MATRIX_FILE})", "",
              f"## Misclassified ({summary['misclassified_count']} of {summary['example_count']})", ""]
    lines += [f"- `{m['path']}`: true **{m['true']}**, predicted **{m['predicted']}** ({m['score']:.2f}) "
              f"![]({m['thumbnail']})" for m in summary["misclassified"]]
    return "\n".join(lines) + "\n"


def render_html(summary: dict) -> str:
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(r['label'])}</td><td>{r['support']}</td><td>{_fmt(r['precision'])}</td>"
                   f"<td>{_fmt(r['recall'])}</td></tr>" for r in summary["per_class"])
    wrong = "".join(f"<figure><img src='{esc(m['thumbnail'])}' alt='{esc(m['path'])}'><figcaption>"
                    f"true <b>{esc(m['true'])}</b><br>predicted <b>{esc(m['predicted'])}</b> ({m['score']:.2f})"
                    f"<br><small>{esc(m['path'])}</small></figcaption></figure>" for m in summary["misclassified"])
    verdict = "blessed" if summary["blessed"] else "NOT blessed"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Model report</title><style>
body{{font-family:sans-serif;margin:2em;max-width:70em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:right}} td:first-child{{text-align:left}}
figure{{display:inline-block;margin:.5em;text-align:center;font-size:.85em}} img{{image-rendering:pixelated}}
</style></head><body>
<h1>Model report ({esc(summary['split'])} split): {verdict}</h1>
<p>Accuracy <b>{_fmt(summary['accuracy'])}</b> on {summary['example_count']} examples;
baseline {_fmt(summary['baseline_accuracy'])}; threshold {summary.get('threshold', 'n/a')}.</p>
{f"<p><i>{esc(summary['baseline_note'])}</i></p>" if summary.get('baseline_note') else ''}
<h2>Per class</h2><table><tr><th>class</th><th>support</th><th>precision</th><th>recall</th></tr>{rows}</table>
<h2>Confusion matrix</h2><img src="{contract.CONFUSION_MATRIX_FILE}" alt="confusion matrix">
<h2>Misclassified ({summary['misclassified_count']} of {summary['example_count']})</h2>{wrong or '<p>none</p>'}
</body></html>
"""


def _accuracy_threshold(evaluation_uri: str) -> float | None:
    """The value threshold the blessing used, from the eval config TFMA writes beside its results."""
    path = os.path.join(evaluation_uri, "eval_config.json")
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        config = json.load(f).get("evalConfig", {})
    for metrics_spec in config.get("metricsSpecs", []):
        for metric in metrics_spec.get("metrics", []):
            bound = metric.get("threshold", {}).get("valueThreshold", {}).get("lowerBound")
            if bound is not None:
                return float(bound)
    return None


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        from tfx.utils import path_utils

        from components.image_example_gen.labels import read_label_vocabulary

        examples = artifact_utils.get_single_instance(input_dict["examples"])
        model = artifact_utils.get_single_instance(input_dict["model"])
        evaluation = artifact_utils.get_single_instance(input_dict["evaluation"])
        blessing = artifact_utils.get_single_instance(input_dict["blessing"])
        report = artifact_utils.get_single_instance(output_dict["report"])
        split = exec_properties["split"]
        limit = int(exec_properties.get("max_misclassified") or contract.DEFAULT_MAX_MISCLASSIFIED)

        labels = read_label_vocabulary(examples.uri)
        # With a baseline TFMA stores results per model name; without one, under no name.
        metrics, entries = _load_metrics(evaluation.uri, "candidate")
        baseline_metrics: dict[str, float] = {}
        if metrics:
            baseline_metrics, _ = _load_metrics(evaluation.uri, "baseline")
        else:
            metrics, entries = _load_metrics(evaluation.uri, None)
        matrix = confusion_matrix(entries, len(labels))
        model_dir = path_utils.serving_model_path(model.uri)
        wrong, total = misclassified_examples(model_dir, _split_files(examples, split), limit)

        tf.io.gfile.makedirs(os.path.join(report.uri, contract.MISCLASSIFIED_DIR))
        for number, item in enumerate(wrong):
            item["thumbnail"] = f"{contract.MISCLASSIFIED_DIR}/{number:03d}.png"
            with tf.io.gfile.GFile(os.path.join(report.uri, item["thumbnail"]), "wb") as f:
                f.write(_thumbnail_png(item.pop("image")))
        plot_confusion_matrix(matrix, labels, os.path.join(report.uri, contract.CONFUSION_MATRIX_FILE))
        summary = {
            "split": split,
            "blessed": bool(blessing.get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY)),
            "accuracy": metrics.get(contract.ACCURACY_METRIC),
            "baseline_accuracy": baseline_metrics.get(contract.ACCURACY_METRIC),
            "threshold": _accuracy_threshold(evaluation.uri),
            "baseline_note": evaluation.get_string_custom_property(contract.BASELINE_SKIPPED_PROPERTY) or None,
            "example_count": int(metrics.get(contract.EXAMPLE_COUNT_METRIC, total)),
            "labels": labels,
            "per_class": per_class_precision_recall(matrix, labels),
            "confusion_matrix": matrix.tolist(),
            "misclassified_count": int(matrix.sum() - np.trace(matrix)) if matrix.sum() else len(wrong),
            "misclassified": wrong,
            "model_uri": model.uri,
        }
        files = {contract.REPORT_METRICS_FILE: json.dumps(summary, indent=2),
                 contract.REPORT_MARKDOWN_FILE: render_markdown(summary),
                 contract.REPORT_HTML_FILE: render_html(summary)}
        for name, text in files.items():
            with tf.io.gfile.GFile(os.path.join(report.uri, name), "w") as f:
                f.write(text)
        for name in (contract.ACCURACY_PROPERTY, contract.BASELINE_ACCURACY_PROPERTY):
            if summary[name] is not None:  # absent, not 0.0, when TFMA has no value (e.g. no baseline)
                report.set_float_custom_property(name, summary[name])
        report.set_int_custom_property(contract.BLESSED_PROPERTY, int(summary["blessed"]))
        if exec_properties.get("report_dir"):
            target = os.path.join(exec_properties["report_dir"], os.path.basename(os.path.dirname(report.uri))
                                  + "-" + os.path.basename(report.uri))
            _copy_tree(report.uri, target)
            logging.info("report copied to %s", target)
        print(f"[report] {split} accuracy {_fmt(summary['accuracy'])} (baseline "
              f"{_fmt(summary['baseline_accuracy'])}), blessed={summary['blessed']}: "
              f"{os.path.join(report.uri, contract.REPORT_HTML_FILE)}", flush=True)


def _copy_tree(source: str, target: str) -> None:
    for directory, _, names in tf.io.gfile.walk(source):
        relative = os.path.relpath(directory, source)
        tf.io.gfile.makedirs(os.path.join(target, relative))
        for name in names:
            tf.io.gfile.copy(os.path.join(directory, name), os.path.join(target, relative, name), overwrite=True)
