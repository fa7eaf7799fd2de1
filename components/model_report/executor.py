"""Writes the run's human report from TFMA's evaluation and the trained model's own predictions.

Accuracy and the confusion matrix come from TFMA (per-class precision and recall are derived from that matrix); the
misclassified images come from running the exported serving signature on the raw test images, exactly as a client
would see them; the likely-mislabelled training images from confident learning on the cached embeddings
(label_issues.py). Besides the report's folder, the same results go out as the Kubeflow Pipelines types its UI renders:
scalar metrics, the confusion matrix, the page (images inline) and a Markdown summary.
"""
from __future__ import annotations

import base64
import functools
import html
import io
import json
import logging
import os
import re
from typing import Any

import matplotlib
import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from PIL import Image
from sklearn.metrics import ConfusionMatrixDisplay
from tensorflow_model_analysis.constants import BASELINE_KEY as BASELINE_MODEL_NAME
from tensorflow_model_analysis.constants import CANDIDATE_KEY as CANDIDATE_MODEL_NAME
from tensorflow_model_analysis.writers import eval_config_writer
from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components.model_report.label_issues import ranked_label_issues, read_training_examples, to_csv
from image_retrain import contract
from image_retrain.contract import IMAGE_KEY, LABEL_NAME_KEY, PATH_KEY
from image_retrain.ingestion_files import read_label_vocabulary

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

from image_retrain import step_results

log = logging.getLogger(__name__)


def _overall_slice(key) -> bool:
    return not key.single_slice_keys


def load_metrics(evaluation_uri: str) -> dict[str, dict[str, float]]:
    """{model name: {metric name: value}} of the overall slice, read with TFMA's loader. Model names are
    'candidate' and 'baseline' when TFMA compared against a baseline, '' otherwise; diff metrics are left out."""
    by_model: dict[str, dict[str, float]] = {}
    for metrics in tfma.load_metrics(evaluation_uri):
        if not _overall_slice(metrics.slice_key):
            continue
        for item in metrics.metric_keys_and_values:
            kind = item.value.WhichOneof("type")
            if item.key.is_diff or kind not in ("double_value", "bounded_value"):
                continue
            value = item.value.double_value if kind == "double_value" else item.value.bounded_value.value
            by_model.setdefault(item.key.model_name, {})[item.key.name] = value.value
    return by_model


def load_confusion_matrix(evaluation_uri: str, model_name: str, num_classes: int) -> np.ndarray:
    """The overall slice's multi-class confusion matrix (rows: true class, columns: predicted), from TFMA's plots."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for plots in tfma.load_plots(evaluation_uri):
        if not _overall_slice(plots.slice_key):
            continue
        for item in plots.plot_keys_and_values:
            matrices = item.value.multi_class_confusion_matrix_at_thresholds.matrices
            if item.key.model_name != model_name or not matrices:
                continue
            for entry in matrices[0].entries:
                if 0 <= entry.actual_class_id < num_classes and 0 <= entry.predicted_class_id < num_classes:
                    matrix[entry.actual_class_id, entry.predicted_class_id] += round(entry.num_weighted_examples)
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
    size = max(4.0, 0.45 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    # A `$` would start matplotlib mathtext: `$x^$` in a label failed the plot.
    ConfusionMatrixDisplay(matrix, display_labels=[label.replace("$", r"\$") for label in labels]).plot(
        ax=axes, cmap="Blues", colorbar=False, xticks_rotation=60, values_format="d")
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
        functools.partial(tf.io.parse_example, features=spec))
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


def _threshold(summary: dict) -> str:
    threshold = summary.get("threshold")  # None when the eval config has no value threshold
    return "n/a" if threshold is None else str(threshold)


def _md(text: str) -> str:
    """Text that Markdown shows as it is, inside a line (a table cell, a list item): the characters that start
    markup there backslash-escaped (`|` ends a cell, `<` starts HTML, `&` an entity, `[`/`!` a link or image,
    `*`/`_`/`~`/`` ` `` emphasis or code), line breaks as spaces."""
    return re.sub(r"([\\`*_\[\]<>|!~&])", r"\\\1", " ".join(text.splitlines()))


def _md_code(text: str) -> str:
    """A code span showing `text` as it is (Markdown interprets nothing inside one): fenced by more backticks than
    it holds in a row (CommonMark), padded when it starts or ends with one, line breaks as spaces."""
    text = " ".join(text.splitlines())
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"


def _summary_lines(summary: dict) -> list[str]:
    lines = [f"# Model report: {summary['split']} split", "",
             f"- blessed: **{summary['blessed']}**",
             f"- accuracy: **{_fmt(summary['accuracy'])}** on {summary['example_count']} examples",
             f"- baseline accuracy: {_fmt(summary['baseline_accuracy'])}",
             f"- threshold: {_threshold(summary)}"]
    if summary.get("baseline_note"):
        lines.append(f"- note: {summary['baseline_note']}")
    lines += ["",
             "| class | support | precision | recall |", "|---|---|---|---|"]
    lines += [f"| {_md(row['label'])} | {row['support']} | {_fmt(row['precision'])} | {_fmt(row['recall'])} |"
              for row in summary["per_class"]]
    return lines


def render_markdown(summary: dict) -> str:
    lines = _summary_lines(summary)
    lines += ["", f"![confusion matrix]({contract.CONFUSION_MATRIX_FILE})", "",
              f"## Misclassified ({summary['misclassified_count']} of {summary['example_count']})", ""]
    lines += [f"- {_md_code(m['path'])}: true **{_md(m['true'])}**, predicted **{_md(m['predicted'])}** "
              f"({m['score']:.2f}) ![]({m['thumbnail']})" for m in summary["misclassified"]]
    issues = summary.get("label_issues")
    if issues is not None:
        lines += ["", f"## Likely mislabelled training images ({_label_issues_count(issues)})", "",
                  f"All {issues['training_images']} ranked in [{contract.LABEL_ISSUES_FILE}]"
                  f"({contract.LABEL_ISSUES_FILE}), least consistent with their label first.", ""]
        lines += [f"- {_md_code(m['path'])}: labelled **{_md(m['given_label'])}**, looks like "
                  f"**{_md(m['suggested_label'])}** (label quality {m['label_quality']:.2f}) ![]({m['thumbnail']})"
                  for m in issues["shown"]]
    return "\n".join(lines) + "\n"


def _label_issues_count(issues: dict) -> str:
    return f"{issues['flagged']} of {issues['training_images']} flagged by confident learning"


def render_markdown_summary(summary: dict) -> str:
    """The report without its pictures: KFP's Markdown viewer has no files beside the one it shows."""
    lines = _summary_lines(summary)
    lines += ["", f"Misclassified: {summary['misclassified_count']} of {summary['example_count']} (shown in the HTML "
                  "report)."]
    if summary.get("label_issues") is not None:
        lines += ["", f"Likely mislabelled training images: {_label_issues_count(summary['label_issues'])} (shown "
                      "in the HTML report)."]
    return "\n".join(lines) + "\n"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(images: dict[str, bytes], item: dict, caption: str) -> str:
    """One image of the report's lists: its thumbnail inline, the (already escaped) caption, then its path."""
    path = html.escape(item["path"])
    return (f"<figure><img src='{_data_uri(images[item['thumbnail']])}' alt='{path}'><figcaption>{caption}"
            f"<br><small>{path}</small></figcaption></figure>")


def render_html(summary: dict, images: dict[str, bytes]) -> str:
    """A self-contained page: `images` (report-relative file name -> PNG bytes) inline as data: URIs, so it shows the
    same wherever it is opened, KFP's sandboxed viewer included (frontend/src/components/viewers/HTMLViewer.tsx)."""
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(r['label'])}</td><td>{r['support']}</td><td>{_fmt(r['precision'])}</td>"
                   f"<td>{_fmt(r['recall'])}</td></tr>" for r in summary["per_class"])
    wrong = "".join(_figure(images, m, f"true <b>{esc(m['true'])}</b><br>predicted <b>{esc(m['predicted'])}</b> "
                                       f"({m['score']:.2f})") for m in summary["misclassified"])
    issues = summary.get("label_issues")
    suspects = "".join(_figure(images, m, f"labelled <b>{esc(m['given_label'])}</b><br>looks like "
                                          f"<b>{esc(m['suggested_label'])}</b> ({m['label_quality']:.2f})")
                       for m in (issues or {}).get("shown", []))
    suspects_section = (
        f"<h2>Likely mislabelled training images ({esc(_label_issues_count(issues))})</h2><p>Ranked by label quality "
        f"(out-of-fold probability of the given label), lowest first; all {issues['training_images']} in "
        f"{esc(contract.LABEL_ISSUES_FILE)} beside this page.</p>{suspects or '<p>none</p>'}"
        if issues is not None else "")
    verdict = "blessed" if summary["blessed"] else "NOT blessed"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Model report</title><style>
body{{font-family:sans-serif;margin:2em;max-width:70em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:right}} td:first-child{{text-align:left}}
figure{{display:inline-block;margin:.5em;text-align:center;font-size:.85em}} img{{image-rendering:pixelated}}
</style></head><body>
<h1>Model report ({esc(summary['split'])} split): {verdict}</h1>
<p>Accuracy <b>{_fmt(summary['accuracy'])}</b> on {summary['example_count']} examples;
baseline {_fmt(summary['baseline_accuracy'])}; threshold {_threshold(summary)}.</p>
{f"<p><i>{esc(summary['baseline_note'])}</i></p>" if summary.get('baseline_note') else ''}
<h2>Per class</h2><table><tr><th>class</th><th>support</th><th>precision</th><th>recall</th></tr>{rows}</table>
<h2>Confusion matrix</h2><img src="{_data_uri(images[contract.CONFUSION_MATRIX_FILE])}" alt="confusion matrix">
<h2>Misclassified ({summary['misclassified_count']} of {summary['example_count']})</h2>{wrong or '<p>none</p>'}
{suspects_section}
</body></html>
"""


def confusion_matrix_property(matrix: np.ndarray, labels: list[str]) -> dict:
    """What KFP's confusion-matrix viewer reads (MetricsVisualizations.tsx validateConfusionMatrix): one display name
    per class and one row per true class, square; the same layout as the KFP SDK's ClassificationMetrics."""
    return {"annotationSpecs": [{"displayName": label} for label in labels],
            "rows": [{"row": [int(count) for count in row]} for row in matrix]}


def write_single_file(uri: str, text: str) -> None:
    """Writes `text` as the artifact itself: KFP's UI reads the one object at an HTML or Markdown artifact's URI
    (frontend/server/handlers/artifacts.ts). TFX's local orchestrator has made an empty folder there
    (outputs_utils.make_output_dirs); the KFP launcher makes only its parent."""
    if tf.io.gfile.isdir(uri):
        tf.io.gfile.rmtree(uri)
    with tf.io.gfile.GFile(uri, "w") as f:
        f.write(text)


def accuracy_threshold(evaluation_uri: str) -> float | None:
    """The value threshold the blessing used, from the eval config TFMA writes beside its results."""
    eval_config = eval_config_writer.load_eval_run(evaluation_uri)[0]
    for metrics_spec in eval_config.metrics_specs:
        for metric in metrics_spec.metrics:
            if metric.threshold.value_threshold.HasField("lower_bound"):
                return metric.threshold.value_threshold.lower_bound.value
    return None


def save_thumbnail(report_uri: str, name: str, image_bytes: bytes, images: dict[str, bytes]) -> str:
    """Writes the image's thumbnail as the report-relative file `name`, keeps its PNG in `images`; returns `name`."""
    images[name] = _thumbnail_png(image_bytes)
    with tf.io.gfile.GFile(os.path.join(report_uri, name), "wb") as f:
        f.write(images[name])
    return name


def write_label_issues(report_uri: str, examples, labels: list[str], limit: int, images: dict[str, bytes]
                       ) -> dict[str, Any] | None:
    """Ranks the training images (label_issues.py) into LABEL_ISSUES_FILE and thumbnails of the flagged ones among
    the first `limit` (added to `images`); the report's summary of them, None when there are too few to judge."""
    rows = ranked_label_issues(read_training_examples(_split_files(examples, contract.TRAIN_SPLIT)), labels)
    if rows is None:
        return None
    with tf.io.gfile.GFile(os.path.join(report_uri, contract.LABEL_ISSUES_FILE), "w") as f:
        f.write(to_csv(rows))
    tf.io.gfile.makedirs(os.path.join(report_uri, contract.LABEL_ISSUES_DIR))
    shown = []
    for row in (row for row in rows[:limit] if row["flagged"]):
        thumbnail = save_thumbnail(report_uri, f"{contract.LABEL_ISSUES_DIR}/{len(shown):03d}.png", row["image"],
                                   images)
        shown.append({key: value for key, value in row.items() if key != "image"} | {"thumbnail": thumbnail})
    return {"training_images": len(rows), "flagged": sum(row["flagged"] for row in rows), "shown": shown}


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        model = artifact_utils.get_single_instance(input_dict["model"])
        evaluation = artifact_utils.get_single_instance(input_dict["evaluation"])
        blessing = artifact_utils.get_single_instance(input_dict["blessing"])
        report = artifact_utils.get_single_instance(output_dict[contract.REPORT_KEY])
        split = exec_properties["split"]
        limit = int(exec_properties.get("max_misclassified") or contract.DEFAULT_MAX_MISCLASSIFIED)
        issues_limit = int(exec_properties.get("max_label_issues") or contract.DEFAULT_MAX_LABEL_ISSUES)

        labels = read_label_vocabulary(examples.uri)
        by_model = load_metrics(evaluation.uri)
        # With a baseline TFMA stores results per model name; without one, under no name.
        candidate = CANDIDATE_MODEL_NAME if CANDIDATE_MODEL_NAME in by_model else ""
        metrics, baseline_metrics = by_model.get(candidate, {}), by_model.get(BASELINE_MODEL_NAME, {})
        matrix = load_confusion_matrix(evaluation.uri, candidate, len(labels))
        model_dir = path_utils.serving_model_path(model.uri)
        wrong, total = misclassified_examples(model_dir, _split_files(examples, split), limit)

        tf.io.gfile.makedirs(os.path.join(report.uri, contract.MISCLASSIFIED_DIR))
        images = {}  # report-relative file name -> PNG bytes: the folder's pictures, inline in the page
        for number, item in enumerate(wrong):
            item["thumbnail"] = save_thumbnail(report.uri, f"{contract.MISCLASSIFIED_DIR}/{number:03d}.png",
                                               item.pop("image"), images)
        label_issues = write_label_issues(report.uri, examples, labels, issues_limit, images)
        plot_confusion_matrix(matrix, labels, os.path.join(report.uri, contract.CONFUSION_MATRIX_FILE))
        with tf.io.gfile.GFile(os.path.join(report.uri, contract.CONFUSION_MATRIX_FILE), "rb") as f:
            images[contract.CONFUSION_MATRIX_FILE] = f.read()
        summary = {
            "split": split,
            "blessed": bool(blessing.get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY)),
            "accuracy": metrics.get(contract.ACCURACY_METRIC),
            "baseline_accuracy": baseline_metrics.get(contract.ACCURACY_METRIC),
            "threshold": accuracy_threshold(evaluation.uri),
            "baseline_note": evaluation.get_string_custom_property(contract.BASELINE_SKIPPED_PROPERTY) or None,
            "example_count": int(metrics.get(contract.EXAMPLE_COUNT_METRIC, total)),
            "labels": labels,
            "per_class": per_class_precision_recall(matrix, labels),
            "confusion_matrix": matrix.tolist(),
            "misclassified_count": int(matrix.sum() - np.trace(matrix)) if matrix.sum() else len(wrong),
            "misclassified": wrong,
            "label_issues": label_issues,
            "model_uri": model.uri,
        }
        files = {contract.REPORT_METRICS_FILE: json.dumps(summary, indent=2),
                 contract.REPORT_MARKDOWN_FILE: render_markdown(summary),
                 contract.REPORT_HTML_FILE: render_html(summary, images)}
        for name, text in files.items():
            with tf.io.gfile.GFile(os.path.join(report.uri, name), "w") as f:
                f.write(text)

        scalars = artifact_utils.get_single_instance(output_dict[contract.METRICS_KEY])
        for name in (contract.ACCURACY_PROPERTY, contract.BASELINE_ACCURACY_PROPERTY):
            if summary[name] is not None:  # absent, not 0.0, when TFMA has no value (e.g. no baseline)
                scalars.set_float_custom_property(name, summary[name])
        scalars.set_int_custom_property(contract.EXAMPLE_COUNT_PROPERTY, summary["example_count"])
        # 0/1: TFX's Kubeflow entrypoint cannot pass a bool custom property on (kubeflow_v2_entrypoint_utils).
        scalars.set_int_custom_property(contract.BLESSED_PROPERTY, int(summary["blessed"]))
        artifact_utils.get_single_instance(output_dict[contract.CONFUSION_MATRIX_KEY]).set_json_value_custom_property(
            contract.CONFUSION_MATRIX_PROPERTY, confusion_matrix_property(matrix, labels))
        write_single_file(artifact_utils.get_single_instance(output_dict[contract.REPORT_HTML_KEY]).uri,
                          files[contract.REPORT_HTML_FILE])
        write_single_file(artifact_utils.get_single_instance(output_dict[contract.REPORT_SUMMARY_KEY]).uri,
                          render_markdown_summary(summary))
        if exec_properties.get("report_dir"):
            target = os.path.join(exec_properties["report_dir"], os.path.basename(os.path.dirname(report.uri))
                                  + "-" + os.path.basename(report.uri))
            io_utils.copy_dir(report.uri, target)
            log.info("report copied to %s", target)
        step_results.report("report", f"{split} accuracy {_fmt(summary['accuracy'])} (baseline "
                                      f"{_fmt(summary['baseline_accuracy'])}), blessed={summary['blessed']}: "
                                      f"{os.path.join(report.uri, contract.REPORT_HTML_FILE)}")
