"""The classifier head: a Keras model trained on the image module's embeddings, and its class weights."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from image_retrain.contract import EMBEDDING_KEY


def build_head(feature_dim: int, num_classes: int, hp: dict[str, Any]):
    inputs = keras.Input(shape=(feature_dim,), name=EMBEDDING_KEY)
    x = inputs
    if hp["hidden_units"] > 0:
        x = keras.layers.Dense(hp["hidden_units"], activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(hp["dropout"], name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="scores")(x)
    model = keras.Model(inputs, outputs, name="classifier_head")
    model.compile(
        optimizer=keras.optimizers.Adam(hp["learning_rate"]),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=hp["label_smoothing"]),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (k * count) per class (scikit-learn's "balanced"), 1 for classes absent from `labels`."""
    weights = np.ones(num_classes, np.float32)
    present = np.unique(labels)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights
