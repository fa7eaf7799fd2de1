"""ModelReport: the run's human report, from a real TFMA evaluation and the exported model's own predictions.

The inputs are real: an Examples artifact in ImageExampleGen's layout (gzipped tf.Example TFRecords under
`Split-<name>/`, `labels.txt` at the root), a classifier exported in the pipeline's serving format
(tests/serving/model_fixtures.py: mean colour -> class, so every answer is known in advance), and the evaluation and
blessing the pipeline's own Evaluator (VocabularyCheckedEvaluator, TFX's Evaluator underneath) writes with the
pipeline's eval config. The pure functions are tested on small hand-made inputs below.
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.model_report import executor as report_executor
from image_retrain import contract

# The vocabulary sorts in the fixture model's score order (red, green, blue channel, then a class it never predicts),
# as labels.txt must: line index == label == score column.
LABELS = ["1-red", "2-green", "3-blue", "4-unseen"]
RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)

# (path, true label, colour): the model predicts by colour, so two of the eight test images are misclassified.
TEST_IMAGES = [
    ("1-red/a.png", "1-red", RED),
    ("1-red/b.png", "1-red", RED),
    ("1-red/blue <&> one.png", "1-red", BLUE),  # -> 3-blue; a path that must be escaped in HTML
    ("2-green/c.png", "2-green", GREEN),
    ("2-green/d.png", "2-green", GREEN),
    ("2-green/e.png", "2-green", GREEN),
    ("3-blue/f.png", "3-blue", BLUE),
    ("3-blue/g.png", "3-blue", GREEN),  # -> 2-green
]
# Another split's mistakes must not reach the test report.
TRAIN_IMAGES = [("1-red/train-green.png", "1-red", GREEN), ("3-blue/train.png", "3-blue", BLUE)]
MISCLASSIFIED = {"1-red/blue <&> one.png": ("1-red", "3-blue", BLUE), "3-blue/g.png": ("3-blue", "2-green", GREEN)}
ACCURACY = 6 / 8
# Rows: true class, columns: predicted class.
CONFUSION = [[2, 0, 1, 0],
             [0, 3, 0, 0],
             [0, 1, 1, 0],
             [0, 0, 0, 0]]
PER_CLASS = [  # (label, support, precision, recall)
    ("1-red", 3, 1.0, 2 / 3),
    ("2-green", 3, 3 / 4, 1.0),
    ("3-blue", 2, 1 / 2, 1 / 2),
    ("4-unseen", 0, None, None),  # never true, never predicted
]


def _png(colour, size=(16, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _score(colour) -> float:
    """The fixture model's top score for a solid colour: softmax(10 * mean RGB in [0, 1]) over the 4 classes."""
    logits = np.array([*(10.0 * np.array(colour) / 255.0), 0.0])
    return float(np.exp(logits.max()) / np.exp(logits).sum())


def _example(path: str, label: str, colour) -> bytes:
    import hashlib

    image = _png(colour)
    feature = {
        contract.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        contract.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[LABELS.index(label)])),
        contract.LABEL_NAME_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[label.encode()])),
        contract.PATH_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode()])),
        contract.SHA256_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[hashlib.sha256(image).hexdigest().encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _artifact(kind, uri):
    artifact = kind()
    artifact.uri = str(uri)
    return artifact


def _write_examples(uri) -> object:
    """An Examples artifact as ImageExampleGen leaves it: a gzipped TFRecord file per split, labels.txt at the root."""
    from tfx.types import artifact_utils, standard_artifacts

    for split, images in (("train", TRAIN_IMAGES), ("test", TEST_IMAGES)):
        os.makedirs(os.path.join(uri, f"Split-{split}"))
        with tf.io.TFRecordWriter(os.path.join(uri, f"Split-{split}", "data_tfrecord-00000-of-00001.gz"),
                                  options="GZIP") as writer:
            for image in images:
                writer.write(_example(*image))
    with open(os.path.join(uri, contract.LABELS_FILE), "w") as f:
        f.write("".join(label + "\n" for label in LABELS))
    examples = _artifact(standard_artifacts.Examples, uri)
    examples.split_names = artifact_utils.encode_split_names(["train", "test"])
    return examples


def _write_model(uri, labels=LABELS) -> object:
    """A Model artifact holding the exported classifier at <uri>/Format-Serving, with the class list it ships."""
    import sys

    from tfx.types import standard_artifacts
    from tfx.utils import path_utils

    fixtures_dir = os.path.join(os.path.dirname(__file__), "serving")
    if fixtures_dir not in sys.path:
        sys.path.insert(0, fixtures_dir)
    from model_fixtures import write_image_classifier

    export_dir = path_utils.serving_model_dir(str(uri))
    write_image_classifier(export_dir, labels=tuple(labels))
    os.makedirs(os.path.join(export_dir, "assets"), exist_ok=True)
    with open(os.path.join(export_dir, "assets", "labels.txt"), "w") as f:
        f.write("\n".join(labels) + "\n")
    return _artifact(standard_artifacts.Model, uri)


def _evaluate(root, examples, model, threshold: float, baseline=None):
    """The pipeline's Evaluator step on the test split: (ModelEvaluation, ModelBlessing) artifacts."""
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.vocabulary_checked_evaluator import executor as evaluator_executor
    from pipelines.pipeline import eval_config

    evaluation = _artifact(standard_artifacts.ModelEvaluation, root / "Evaluator" / "evaluation" / "1")
    blessing = _artifact(standard_artifacts.ModelBlessing, root / "Evaluator" / "blessing" / "1")
    inputs = {"examples": [examples], "model": [model], "baseline_model": [baseline] if baseline else []}
    # No context: no Beam arguments, so Beam's DirectRunner in this process, one worker.
    evaluator_executor.Executor().Do(
        inputs, {"evaluation": [evaluation], "blessing": [blessing]},
        {"eval_config": proto_utils.proto_to_json(eval_config(threshold)), "example_splits": json.dumps(["test"])})
    return evaluation, blessing


def _run_report(root, examples, model, evaluation, blessing, **exec_properties):
    """Every output of the report (output key -> artifact): the folder and the KFP UI's types."""
    from components.model_report.component import OUTPUT_TYPES

    outputs = {key: _artifact(kind, root / "ModelReport" / key / "7") for key, kind in OUTPUT_TYPES.items()}
    for artifact in outputs.values():
        os.makedirs(artifact.uri, exist_ok=True)  # as TFX's local orchestrator does (outputs_utils.make_output_dirs)
    report_executor.Executor().Do(
        {"examples": [examples], "model": [model], "evaluation": [evaluation], "blessing": [blessing]},
        {key: [artifact] for key, artifact in outputs.items()}, {"split": "test", **exec_properties})
    return outputs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One pipeline run's inputs to the report: examples, the candidate, and its evaluation without a baseline."""
    root = tmp_path_factory.mktemp("run")
    examples = _write_examples(str(root / "ImageExampleGen" / "examples" / "3"))
    model = _write_model(root / "Trainer" / "model" / "4")
    evaluation, blessing = _evaluate(root, examples, model, threshold=0.7)
    return SimpleNamespace(root=root, examples=examples, model=model, evaluation=evaluation, blessing=blessing)


def _read(report, name, mode="r"):
    with open(os.path.join(report.uri, name), mode) as f:
        return f.read()


def _is_png(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def test_the_loaders_read_genuine_tfma_output(run):
    by_model = report_executor.load_metrics(run.evaluation.uri)
    assert set(by_model) == {""}  # no baseline: TFMA files results under no model name
    assert by_model[""][contract.ACCURACY_METRIC] == pytest.approx(ACCURACY)
    assert by_model[""][contract.EXAMPLE_COUNT_METRIC] == len(TEST_IMAGES)
    matrix = report_executor.load_confusion_matrix(run.evaluation.uri, "", len(LABELS))
    assert matrix.dtype == np.int64 and matrix.tolist() == CONFUSION
    assert report_executor.load_confusion_matrix(run.evaluation.uri, "baseline", len(LABELS)).sum() == 0
    assert report_executor.accuracy_threshold(run.evaluation.uri) == pytest.approx(0.7)


def test_the_report_of_a_run_without_baseline(run, tmp_path):
    report_dir = tmp_path / "reports"
    outputs = _run_report(run.root, run.examples, run.model, run.evaluation, run.blessing, report_dir=str(report_dir))
    report = outputs[contract.REPORT_KEY]
    assert run.blessing.get_int_custom_property("blessed") == 1  # 0.75 >= 0.7, nothing to compare with

    summary = json.loads(_read(report, contract.REPORT_METRICS_FILE))
    assert summary["split"] == "test"
    assert summary["blessed"] is True
    assert summary["accuracy"] == pytest.approx(ACCURACY)
    assert summary["baseline_accuracy"] is None
    assert summary["threshold"] == pytest.approx(0.7)
    assert summary["baseline_note"] is None
    assert summary["example_count"] == len(TEST_IMAGES)
    assert summary["labels"] == LABELS
    assert summary["confusion_matrix"] == CONFUSION
    assert [(r["label"], r["support"]) for r in summary["per_class"]] == [row[:2] for row in PER_CLASS]
    for row, (_, _, precision, recall) in zip(summary["per_class"], PER_CLASS):
        assert row["precision"] == (None if precision is None else pytest.approx(precision)), row
        assert row["recall"] == (None if recall is None else pytest.approx(recall)), row
    assert summary["model_uri"] == run.model.uri

    assert summary["misclassified_count"] == len(MISCLASSIFIED)
    wrong = {m["path"]: m for m in summary["misclassified"]}
    assert set(wrong) == set(MISCLASSIFIED)  # the train split's mistake is not in the test report
    for path, (true, predicted, colour) in MISCLASSIFIED.items():
        item = wrong[path]
        assert (item["true"], item["predicted"]) == (true, predicted)
        assert item["score"] == pytest.approx(_score(colour), abs=1e-5)
        assert "image" not in item  # the bytes go to the thumbnail file, not into the JSON
        thumbnail = _is_png(_read(report, item["thumbnail"], "rb"))
        assert thumbnail.size == (96, 72)  # a 16x12 image is scaled up 6x to stay readable
        assert thumbnail.convert("RGB").getpixel((40, 30)) == colour
    assert sorted(m["thumbnail"] for m in summary["misclassified"]) == ["misclassified/000.png",
                                                                        "misclassified/001.png"]
    assert sorted(os.listdir(os.path.join(report.uri, contract.MISCLASSIFIED_DIR))) == ["000.png", "001.png"]

    figure = _is_png(_read(report, contract.CONFUSION_MATRIX_FILE, "rb"))
    assert min(figure.size) >= 400

    markdown = _read(report, contract.REPORT_MARKDOWN_FILE)
    assert "- blessed: **True**" in markdown
    assert "- accuracy: **0.7500** on 8 examples" in markdown
    assert "- baseline accuracy: n/a" in markdown
    assert "- threshold: 0.7" in markdown
    assert "| 1-red | 3 | 1.0000 | 0.6667 |" in markdown
    assert "| 2-green | 3 | 0.7500 | 1.0000 |" in markdown
    assert "| 3-blue | 2 | 0.5000 | 0.5000 |" in markdown
    assert "| 4-unseen | 0 | n/a | n/a |" in markdown
    assert "## Misclassified (2 of 8)" in markdown
    assert f"- `1-red/blue <&> one.png`: true **1-red**, predicted **3-blue** ({_score(BLUE):.2f})" in markdown
    assert "note:" not in markdown

    page = _read(report, contract.REPORT_HTML_FILE)
    assert "<h1>Model report (test split): blessed</h1>" in page
    assert "Accuracy <b>0.7500</b> on 8 examples" in page and "baseline n/a; threshold 0.7." in page
    assert "<tr><td>1-red</td><td>3</td><td>1.0000</td><td>0.6667</td></tr>" in page
    assert "<tr><td>4-unseen</td><td>0</td><td>n/a</td><td>n/a</td></tr>" in page
    assert "<h2>Misclassified (2 of 8)</h2>" in page
    assert "<small>1-red/blue &lt;&amp;&gt; one.png</small>" in page and "blue <&> one" not in page
    # Self-contained: the pictures inline, so the page shows the same anywhere (KFP's sandboxed viewer included).
    thumbnail = _read(report, wrong['3-blue/g.png']['thumbnail'], "rb")
    assert f"src='data:image/png;base64,{base64.b64encode(thumbnail).decode()}'" in page
    figure_bytes = _read(report, contract.CONFUSION_MATRIX_FILE, "rb")
    assert f'<img src="data:image/png;base64,{base64.b64encode(figure_bytes).decode()}"' in page

    # The KFP UI's artifacts: scalar metrics, the confusion matrix in its viewer's layout, the page and a summary,
    # each HTML/Markdown artifact a single file at its URI.
    metrics = outputs[contract.METRICS_KEY]
    assert metrics.get_float_custom_property("accuracy") == pytest.approx(ACCURACY)
    assert metrics.get_int_custom_property("blessed") == 1
    assert metrics.get_int_custom_property("example_count") == len(TEST_IMAGES)
    assert not metrics.has_custom_property("baseline_accuracy")  # absent, not 0.0
    assert outputs[contract.CONFUSION_MATRIX_KEY].get_json_value_custom_property("confusionMatrix") == {
        "annotationSpecs": [{"displayName": label} for label in LABELS],
        "rows": [{"row": row} for row in CONFUSION]}
    with open(outputs[contract.REPORT_HTML_KEY].uri) as f:
        assert f.read() == page
    with open(outputs[contract.REPORT_SUMMARY_KEY].uri) as f:
        summary_text = f.read()
    assert summary_text.startswith("# Model report: test split\n") and "| 1-red | 3 | 1.0000 | 0.6667 |" in summary_text
    assert "Misclassified: 2 of 8" in summary_text and "![" not in summary_text

    # report_dir: a copy of the whole folder, named after the run (<execution id's parent>-<execution id>).
    [copy] = os.listdir(report_dir)
    assert copy == "report-7"
    for name in (contract.REPORT_METRICS_FILE, contract.REPORT_MARKDOWN_FILE, contract.REPORT_HTML_FILE,
                 contract.CONFUSION_MATRIX_FILE, "misclassified/000.png", "misclassified/001.png"):
        assert (report_dir / copy / name).read_bytes() == _read(report, name, "rb"), name


def test_max_misclassified_limits_the_list_but_not_the_count(run):
    outputs = _run_report(run.root / "limited", run.examples, run.model, run.evaluation, run.blessing,
                          max_misclassified=1)
    report = outputs[contract.REPORT_KEY]
    summary = json.loads(_read(report, contract.REPORT_METRICS_FILE))
    assert len(summary["misclassified"]) == 1 and summary["misclassified"][0]["path"] in MISCLASSIFIED
    assert summary["misclassified_count"] == 2  # from TFMA's confusion matrix
    assert os.listdir(os.path.join(report.uri, contract.MISCLASSIFIED_DIR)) == ["000.png"]
    assert "## Misclassified (2 of 8)" in _read(report, contract.REPORT_MARKDOWN_FILE)


def test_the_report_against_a_baseline_that_is_not_beaten_enough(run, tmp_path):
    """With a baseline TFMA files the results under 'candidate' and 'baseline'; a threshold above the accuracy
    refuses the blessing, and the report says so."""
    baseline = _artifact(type(run.model), tmp_path / "served")
    shutil.copytree(os.path.join(run.model.uri, "Format-Serving"), tmp_path / "served" / "Format-Serving")
    evaluation, blessing = _evaluate(tmp_path, run.examples, run.model, threshold=0.9, baseline=baseline)
    assert blessing.get_int_custom_property("blessed") == 0
    assert set(report_executor.load_metrics(evaluation.uri)) == {"candidate", "baseline"}

    outputs = _run_report(tmp_path, run.examples, run.model, evaluation, blessing)
    report = outputs[contract.REPORT_KEY]
    summary = json.loads(_read(report, contract.REPORT_METRICS_FILE))
    assert summary["blessed"] is False and summary["threshold"] == pytest.approx(0.9)
    assert summary["accuracy"] == pytest.approx(ACCURACY)
    assert summary["baseline_accuracy"] == pytest.approx(ACCURACY)  # the same model
    assert summary["confusion_matrix"] == CONFUSION  # the candidate's, not the sum of both models'
    assert outputs[contract.METRICS_KEY].get_float_custom_property("baseline_accuracy") == pytest.approx(ACCURACY)
    assert outputs[contract.METRICS_KEY].get_int_custom_property("blessed") == 0
    assert "- baseline accuracy: 0.7500" in _read(report, contract.REPORT_MARKDOWN_FILE)
    assert "<h1>Model report (test split): NOT blessed</h1>" in _read(report, contract.REPORT_HTML_FILE)
    assert not (tmp_path / "reports").exists()  # no report_dir: nothing copied


def test_the_report_notes_a_baseline_the_evaluator_dropped(run, tmp_path):
    """A served model trained on other classes cannot be compared: the Evaluator drops it and says why."""
    baseline = _write_model(tmp_path / "served", labels=["1-red", "3-blue"])
    evaluation, blessing = _evaluate(tmp_path, run.examples, run.model, threshold=0.7, baseline=baseline)
    outputs = _run_report(tmp_path, run.examples, run.model, evaluation, blessing)
    report = outputs[contract.REPORT_KEY]
    summary = json.loads(_read(report, contract.REPORT_METRICS_FILE))
    assert "added ['2-green', '4-unseen'], removed []" in summary["baseline_note"]
    assert summary["baseline_accuracy"] is None
    assert not outputs[contract.METRICS_KEY].has_custom_property("baseline_accuracy")
    assert summary["blessed"] is True and summary["accuracy"] == pytest.approx(ACCURACY)
    assert f"- note: {summary['baseline_note']}" in _read(report, contract.REPORT_MARKDOWN_FILE)
    assert "<p><i>class list changed (added [&#x27;2-green&#x27;, &#x27;4-unseen&#x27;]" in _read(
        report, contract.REPORT_HTML_FILE)


def test_an_evaluation_without_a_value_threshold_reports_the_threshold_as_unknown(run, tmp_path):
    """The threshold is read back from the eval config TFMA wrote; one without a value threshold gives n/a."""
    from google.protobuf import json_format
    from tensorflow_model_analysis.proto import config_pb2

    evaluation = _artifact(type(run.evaluation), tmp_path / "evaluation")
    shutil.copytree(run.evaluation.uri, evaluation.uri)
    config_file = os.path.join(evaluation.uri, "eval_config.json")
    with open(config_file) as f:
        eval_run = json_format.Parse(f.read(), config_pb2.EvalRun())
    for metrics_spec in eval_run.eval_config.metrics_specs:
        for metric in metrics_spec.metrics:
            metric.ClearField("threshold")
    with open(config_file, "w") as f:
        f.write(json_format.MessageToJson(eval_run))
    assert report_executor.accuracy_threshold(evaluation.uri) is None

    outputs = _run_report(tmp_path, run.examples, run.model, evaluation, run.blessing)
    report = outputs[contract.REPORT_KEY]
    assert json.loads(_read(report, contract.REPORT_METRICS_FILE))["threshold"] is None
    assert "- threshold: n/a\n" in _read(report, contract.REPORT_MARKDOWN_FILE)
    assert "; threshold n/a.</p>" in _read(report, contract.REPORT_HTML_FILE)


# ---------------------------------------------------------------------------------------------------------------------
# The pure functions, on small hand-made inputs.

def test_per_class_precision_recall_from_a_confusion_matrix():
    matrix = np.array([[3, 1, 0],
                       [0, 0, 0],
                       [2, 4, 0]])
    rows = report_executor.per_class_precision_recall(matrix, ["a", "b", "c"])
    assert rows[0] == {"label": "a", "support": 4, "precision": 3 / 5, "recall": 3 / 4}
    # b: predicted 5 times, always wrongly, and never true: precision 0, recall undefined.
    assert rows[1] == {"label": "b", "support": 0, "precision": 0.0, "recall": None}
    # c: never predicted: precision undefined (None, not 0), recall 0.
    assert rows[2] == {"label": "c", "support": 6, "precision": None, "recall": 0.0}
    assert all(isinstance(row["support"], int) for row in rows)  # JSON-serialisable, not numpy ints
    json.dumps(rows)


def _summary(**overrides) -> dict:
    summary = {
        "split": "test", "blessed": False, "accuracy": 0.5, "baseline_accuracy": 0.625, "threshold": 0.6,
        "baseline_note": None, "example_count": 4, "misclassified_count": 2,
        "per_class": [{"label": "cats & <dogs>", "support": 3, "precision": 0.5, "recall": 1 / 3},
                      {"label": "plain", "support": 1, "precision": None, "recall": 0.0}],
        "misclassified": [{"path": "cats & <dogs>/x<1>.png", "true": "cats & <dogs>", "predicted": "plain",
                           "score": 0.875, "thumbnail": "misclassified/000.png"}],
    }
    summary.update(overrides)
    return summary


# The pictures _summary's report names, as render_html inlines them.
IMAGES = {"misclassified/000.png": b"\x89PNG thumbnail", contract.CONFUSION_MATRIX_FILE: b"\x89PNG figure"}


def test_render_html_escapes_labels_and_paths():
    page = report_executor.render_html(_summary(baseline_note="baseline <old> & dropped"), IMAGES)
    assert "<h1>Model report (test split): NOT blessed</h1>" in page
    assert "Accuracy <b>0.5000</b> on 4 examples;\nbaseline 0.6250; threshold 0.6." in page
    assert "<tr><td>cats &amp; &lt;dogs&gt;</td><td>3</td><td>0.5000</td><td>0.3333</td></tr>" in page
    assert "<tr><td>plain</td><td>1</td><td>n/a</td><td>0.0000</td></tr>" in page
    assert "alt='cats &amp; &lt;dogs&gt;/x&lt;1&gt;.png'" in page
    assert "true <b>cats &amp; &lt;dogs&gt;</b><br>predicted <b>plain</b> (0.88)" in page
    assert "<small>cats &amp; &lt;dogs&gt;/x&lt;1&gt;.png</small>" in page
    assert "<p><i>baseline &lt;old&gt; &amp; dropped</i></p>" in page
    assert "<dogs>" not in page and "<old>" not in page and "<1>" not in page
    assert "<h2>Misclassified (2 of 4)</h2><figure>" in page
    # A quote in a path cannot end the attribute it is written into.
    quoted = report_executor.render_html(_summary(misclassified=[dict(_summary()["misclassified"][0],
                                                                     path="it's.png")]), IMAGES)
    assert "alt='it&#x27;s.png'" in quoted
    assert f"<img src='data:image/png;base64,{base64.b64encode(IMAGES['misclassified/000.png']).decode()}'" in page


def test_render_html_without_mistakes_or_numbers():
    page = report_executor.render_html(_summary(blessed=True, accuracy=None, baseline_accuracy=None, threshold=None,
                                                misclassified=[], misclassified_count=0), IMAGES)
    assert "<h1>Model report (test split): blessed</h1>" in page
    assert "Accuracy <b>n/a</b> on 4 examples;\nbaseline n/a; threshold n/a." in page
    assert "<h2>Misclassified (0 of 4)</h2><p>none</p>" in page
    assert "<i>" not in page  # no baseline note


def test_render_markdown():
    text = report_executor.render_markdown(_summary(baseline_note="class list changed"))
    assert text.startswith("# Model report: test split\n\n- blessed: **False**\n")
    assert "- accuracy: **0.5000** on 4 examples\n- baseline accuracy: 0.6250\n- threshold: 0.6\n" in text
    assert "- note: class list changed\n" in text
    # Labels and paths are text, never Markdown or HTML: what starts markup inside a line is backslash-escaped.
    assert "| cats \\& \\<dogs\\> | 3 | 0.5000 | 0.3333 |\n| plain | 1 | n/a | 0.0000 |\n" in text
    assert "![confusion matrix](confusion_matrix.png)" in text
    assert "## Misclassified (2 of 4)" in text
    assert ("- `cats & <dogs>/x<1>.png`: true **cats \\& \\<dogs\\>**, predicted **plain** (0.88) "
            "![](misclassified/000.png)\n") in text
    plain = report_executor.render_markdown(_summary(baseline_accuracy=None, threshold=None))
    assert "- baseline accuracy: n/a\n- threshold: n/a\n" in plain and "note:" not in plain
    # A label that would end a table cell, start a link or break the line stays inside its cell.
    hostile = report_executor.render_markdown(_summary(per_class=[
        {"label": "a | b](http://x)\n# c", "support": 1, "precision": 1.0, "recall": 1.0}]))
    assert "| a \\| b\\](http://x) # c | 1 | 1.0000 | 1.0000 |\n" in hostile
    # A path with backticks cannot end its code span.
    ticked = report_executor.render_markdown(_summary(misclassified=[dict(_summary()["misclassified"][0],
                                                                         path="a``b`.png")]))
    assert "- ```a``b`.png```: true" in ticked


def test_a_dollar_in_a_label_does_not_break_the_confusion_matrix_plot(tmp_path):
    """matplotlib reads `$...$` as mathtext: `$x^$` failed the plot (and the run) before the labels were escaped."""
    from PIL import Image

    path = tmp_path / "matrix.png"
    report_executor.plot_confusion_matrix(np.eye(3, dtype=np.int64), ["$x^$", "$\\frac$", "5 $"], str(path))
    assert Image.open(path).size[0] > 100


def test_the_markdown_summary_is_the_report_without_pictures():
    summary = _summary(baseline_note="class list changed")
    text = report_executor.render_markdown_summary(summary)
    head = report_executor.render_markdown(summary).split("\n\n![confusion matrix]")[0]
    assert text == head + "\n\nMisclassified: 2 of 4 (shown in the HTML report).\n"


def test_the_confusion_matrix_in_the_kfp_viewer_s_layout():
    """frontend/src/components/viewers/MetricsVisualizations.tsx validateConfusionMatrix: a displayName per class,
    a row per true class, square (the KFP SDK's ClassificationMetrics.log_confusion_matrix writes the same)."""
    matrix = np.array([[3, 1], [0, 4]], dtype=np.int64)
    value = report_executor.confusion_matrix_property(matrix, ["cat", "dog"])
    assert value == {"annotationSpecs": [{"displayName": "cat"}, {"displayName": "dog"}],
                     "rows": [{"row": [3, 1]}, {"row": [0, 4]}]}
    json.dumps(value)  # plain ints, not numpy's
