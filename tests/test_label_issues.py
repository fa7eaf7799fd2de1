"""The report's likely-mislabelled training images (components/model_report/label_issues.py) on real embeddings:
scikit-learn's digits, embedded by the builtin EfficientNet-Lite0 as the embedding stage does, with 5 % of the
training labels flipped on purpose."""
from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from components.model_report import executor as report_executor
from components.model_report.label_issues import CSV_COLUMNS, ranked_label_issues
from image_retrain import contract
from image_retrain.image_decoding import preprocess_batch
from image_retrain.image_module import load_image_module
from pipelines import configs

LABELS = [str(digit) for digit in range(10)]
PER_CLASS = 60
FLIPPED_FRACTION = 0.05


def _digit_pngs() -> tuple[list[bytes], np.ndarray]:
    """PER_CLASS digits of each class as 32x32 PNGs (nearest-neighbour, as `make run` writes them) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    chosen = np.concatenate([np.flatnonzero(digits.target == digit)[:PER_CLASS] for digit in range(10)])
    pngs = []
    for image in digits.images[chosen]:
        buffer = io.BytesIO()
        gray = (255 - image * 255 / 16).astype(np.uint8)
        Image.fromarray(gray, mode="L").resize((32, 32), Image.NEAREST).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs, digits.target[chosen]


@pytest.fixture(scope="module")
def flipped_digits():
    """Embedded training examples with FLIPPED_FRACTION of the labels changed to another class, and which ones."""
    pngs, labels = _digit_pngs()
    module = load_image_module(configs.MODULE_HANDLE)
    embeddings = np.concatenate([module(preprocess_batch(tf.constant(pngs[start:start + 64]), module.input_size))
                                 .numpy() for start in range(0, len(pngs), 64)])
    random = np.random.RandomState(7)
    flipped = random.choice(len(labels), int(FLIPPED_FRACTION * len(labels)), replace=False)
    given = labels.copy()
    given[flipped] = (labels[flipped] + random.randint(1, 10, len(flipped))) % 10
    return {"pngs": pngs, "embeddings": embeddings, "given": given, "flipped": set(flipped.tolist())}


def _write_train_split(root, digits) -> object:
    """The embedded Examples artifact the report reads: Split-train with image, label, path and embedding."""
    from tfx.types import artifact_utils, standard_artifacts

    os.makedirs(os.path.join(root, "Split-train"))
    with tf.io.TFRecordWriter(os.path.join(root, "Split-train", "data_tfrecord-00000-of-00001.gz"),
                              options="GZIP") as writer:
        for index, (png, label, embedding) in enumerate(zip(digits["pngs"], digits["given"], digits["embeddings"])):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                contract.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                contract.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                contract.PATH_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[f"{label}/digit_{index:04d}.png".encode()])),
                contract.EMBEDDING_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=embedding)),
            })).SerializeToString())
    examples = standard_artifacts.Examples()
    examples.uri = str(root)
    examples.split_names = artifact_utils.encode_split_names(["train"])
    return examples


def test_most_flipped_labels_are_in_the_report_s_top_tenth(flipped_digits, tmp_path):
    examples = _write_train_split(tmp_path / "examples", flipped_digits)
    report = tmp_path / "report"
    report.mkdir()
    images = {}
    summary = report_executor.write_label_issues(str(report), examples, LABELS, limit=48, images=images)

    table = pd.read_csv(report / contract.LABEL_ISSUES_FILE, dtype={"given_label": str, "suggested_label": str})
    assert tuple(table.columns) == CSV_COLUMNS and len(table) == summary["training_images"] == 10 * PER_CLASS
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    assert table["label_quality"].is_monotonic_increasing
    top = table.head(len(table) // 10)
    indices = {int(path.split("_")[-1].split(".")[0]) for path in top["path"]}
    caught = len(indices & flipped_digits["flipped"]) / len(flipped_digits["flipped"])
    assert caught >= 0.7, f"only {caught:.0%} of the flipped labels in the top 10 %"
    # What the model suggests for a caught image is mostly its true digit.
    true_labels = {f"digit_{index:04d}": str(label) for index, label in enumerate(_digit_pngs()[1])}
    caught_rows = top[[int(p.split("_")[-1].split(".")[0]) in flipped_digits["flipped"] for p in top["path"]]]
    suggested_right = np.mean([row.suggested_label == true_labels[row.path.split("/")[-1][:-4]]
                               for row in caught_rows.itertuples()])
    assert suggested_right >= 0.8
    # The report shows the flagged ones among the first `limit`, each with its thumbnail.
    assert 0 < len(summary["shown"]) <= 48 and summary["flagged"] >= len(summary["shown"])
    assert all(row["flagged"] and images[row["thumbnail"]].startswith(b"\x89PNG") for row in summary["shown"])
    assert all((report / row["thumbnail"]).is_file() for row in summary["shown"])
    page = report_executor.render_html({**_report_summary(), "label_issues": summary},
                                       {**images, contract.CONFUSION_MATRIX_FILE: b"\x89PNG figure"})
    assert f"<h2>Likely mislabelled training images ({summary['flagged']} of {10 * PER_CLASS} flagged" in page
    text = report_executor.render_markdown({**_report_summary(), "label_issues": summary})
    assert f"## Likely mislabelled training images ({summary['flagged']} of {10 * PER_CLASS}" in text


def test_too_few_images_per_class_or_no_embeddings_are_not_judged(flipped_digits):
    examples = {contract.EMBEDDING_KEY: flipped_digits["embeddings"][:11], contract.LABEL_KEY: np.arange(11) % 10,
                contract.PATH_KEY: np.array([b"x"] * 11), contract.IMAGE_KEY: np.array([b""] * 11)}
    assert ranked_label_issues(examples, LABELS) is None  # classes 1-9 have one image: nothing to hold out
    assert ranked_label_issues(dict(examples, **{contract.EMBEDDING_KEY: np.zeros([11, 0])}), LABELS) is None


def _report_summary() -> dict:
    return {"split": "test", "blessed": True, "accuracy": 0.99, "baseline_accuracy": None, "threshold": 0.9,
            "baseline_note": None, "example_count": 4, "misclassified_count": 0, "per_class": [],
            "misclassified": []}
