"""Likely-mislabelled training images: confident learning (cleanlab) on out-of-fold predictions from the cached
embeddings, so a user can fix labels before the next retraining.

Each training image gets a probability for every class from a linear softmax classifier trained on the *other* folds'
embeddings (scikit-learn's multinomial logistic regression on standardised embeddings: the default head,
`hidden_units` 0, as a convex fit that takes a second per fold instead of a Keras run per fold). cleanlab's label
quality score (the out-of-fold probability of the given label, "self-confidence") ranks them, worst first, and
`find_label_issues` flags the ones whose given label confident learning judges wrong, with the class the model
suggests instead.
"""
from __future__ import annotations

import csv
import functools
import io
from typing import Any

import numpy as np
import tensorflow as tf
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from image_retrain.contract import EMBEDDING_KEY, IMAGE_KEY, LABEL_KEY, PATH_KEY

FOLDS = 5
CSV_COLUMNS = ("rank", "path", "given_label", "suggested_label", "label_quality", "flagged")


def read_training_examples(files: list[str]) -> dict[str, np.ndarray]:
    """The split's embeddings, label indices, paths and encoded images (for the thumbnails of the top ones)."""
    spec = {EMBEDDING_KEY: tf.io.VarLenFeature(tf.float32), LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
            PATH_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
            IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024).map(
        functools.partial(tf.io.parse_example, features=spec))
    parts: dict[str, list] = {EMBEDDING_KEY: [], LABEL_KEY: [], PATH_KEY: [], IMAGE_KEY: []}
    for batch in dataset:
        parts[EMBEDDING_KEY].append(tf.sparse.to_dense(batch[EMBEDDING_KEY]).numpy())
        for key in (LABEL_KEY, PATH_KEY, IMAGE_KEY):
            parts[key].append(batch[key].numpy())
    return {key: np.concatenate(values) if values else np.zeros([0]) for key, values in parts.items()}


def out_of_fold_probabilities(embeddings: np.ndarray, labels: np.ndarray, num_classes: int,
                              seed: int = 0) -> np.ndarray | None:
    """[N, num_classes] probabilities, each image's from a classifier that never saw it; None when some class has
    fewer than two images (no fold split can hold it out and still train on it)."""
    counts = np.bincount(labels, minlength=num_classes)
    folds = min(FOLDS, int(counts.min()))
    if folds < 2:
        return None
    # Standardised features: lbfgs converges in a tenth of the time on raw embeddings' uneven scales.
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000))
    return cross_val_predict(classifier, embeddings, labels, method="predict_proba",
                             cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed))


def ranked_label_issues(examples: dict[str, np.ndarray], label_names: list[str], seed: int = 0
                        ) -> list[dict[str, Any]] | None:
    """One row per training image, least consistent with its given label first (CSV_COLUMNS, plus the image's
    bytes under "image"); None when there are too few images per class to judge, or no embeddings."""
    if examples[EMBEDDING_KEY].ndim != 2 or examples[EMBEDDING_KEY].shape[1] == 0:
        return None
    labels = examples[LABEL_KEY].astype(np.int64)
    probabilities = out_of_fold_probabilities(examples[EMBEDDING_KEY], labels, len(label_names), seed)
    if probabilities is None:
        return None
    quality = get_label_quality_scores(labels, probabilities, method="self_confidence")
    flagged = find_label_issues(labels, probabilities, n_jobs=1)  # its worker pool fails in a spawned process
    suggested = probabilities.argmax(axis=1)
    return [{"rank": rank, "path": examples[PATH_KEY][index].decode(errors="replace"),
             "given_label": label_names[labels[index]], "suggested_label": label_names[suggested[index]],
             "label_quality": float(quality[index]), "flagged": bool(flagged[index]),
             "image": examples[IMAGE_KEY][index]}
            for rank, index in enumerate(np.argsort(quality, kind="stable"), start=1)]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({**row, "label_quality": f"{row['label_quality']:.6f}"} for row in rows)
    return buffer.getvalue()
