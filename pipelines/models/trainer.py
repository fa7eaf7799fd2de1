"""The TFX Trainer's module (`run_fn`, referenced by dotted path from pipelines/configs.py): the head on cached
embeddings, then optionally the module fine-tuned with it, exported so the served model takes raw image bytes."""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from image_retrain import step_results
from image_retrain.contract import TRAINING_SUMMARY_FILE
from image_retrain.image_module import load_image_module
from pipelines import configs
from pipelines.models.fine_tune import fine_tune
from pipelines.models.head import balanced_class_weights, build_head
from pipelines.models import warm_start
from pipelines.models.image_size import with_input_size
from pipelines.models.hparams import hyperparameters_from
from pipelines.models.saved_model_export import export_serving_model
from pipelines.models.training_data import (
    embed_images,
    embedding_dim,
    examples_uri,
    held_out_images,
    load_embeddings,
    read_vocabulary,
)
from pipelines.models.views import check_test_time_views

log = logging.getLogger(__name__)


def train(hp: dict[str, Any], module_handle: str, train_files: list[str], eval_files: list[str],
          log_dir: str | None = None, export: bool = True) -> dict[str, Any]:
    """The training both the Trainer and every Tuner trial (export=False) run: the head on embeddings (early stopping
    on the eval split), then, if fine_tune_variables != 0, module and head on images. Returns the module (None when
    neither exported nor needed), the head and a summary."""
    keras.utils.set_random_seed(hp["seed"])
    num_classes = len(read_vocabulary(examples_uri(train_files)))
    needs_images = hp["image_size"] > 0 or hp["augment_copies"] > 0 or hp["fine_tune_variables"] != 0
    # Loaded anew (fine-tuning changes its variables in place), and only when images are needed: a head-only Tuner
    # trial reads cached embeddings alone.
    image_module = load_image_module(module_handle) if needs_images or export else None
    resized = image_module and with_input_size(image_module, hp["image_size"])
    if resized:  # before any training: a view count the export would refuse
        check_test_time_views(hp["test_time_views"], resized.input_size)
    if resized is image_module:
        feature_dim = embedding_dim(train_files)
        x_train, y_train = load_embeddings(train_files, feature_dim)
        x_eval, y_eval = load_embeddings(eval_files, feature_dim)
    else:  # the cached embeddings are at the module's own size: the head must see those the fine-tuning starts from
        image_module = resized
        x_train, y_train = embed_images(train_files, image_module)
        x_eval, y_eval = embed_images(eval_files, image_module)
    class_weights = balanced_class_weights(y_train, num_classes) if hp["class_weights"] else None
    if hp["augment_copies"] > 0:
        x_aug, y_aug = embed_images(train_files, image_module, hp, copies=hp["augment_copies"])
        x_train, y_train = np.concatenate([x_train, x_aug]), np.concatenate([y_train, y_aug])
    log.info("training head on %d examples (%d classes), early stopping on %d eval examples",
             len(y_train), num_classes, len(y_eval))

    head = build_head(x_train.shape[1], num_classes, hp)
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=hp["early_stopping_patience"],
                                               restore_best_weights=True)]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, update_freq="epoch"))
    history = head.fit(
        x_train, keras.utils.to_categorical(y_train, num_classes),
        validation_data=(x_eval, keras.utils.to_categorical(y_eval, num_classes)),
        epochs=hp["epochs"], batch_size=hp["batch_size"], shuffle=True, callbacks=callbacks, verbose=2,
        class_weight=None if class_weights is None else dict(enumerate(class_weights.tolist())),
    )
    head_accuracy = float(np.mean(np.argmax(head.predict(x_eval, verbose=0), axis=1) == y_eval))
    fine_tuning = None
    if hp["fine_tune_variables"] != 0:
        fine_tuning = fine_tune(image_module, head, train_files, eval_files, num_classes, hp, class_weights)
    return {"image_module": image_module, "head": head, "summary": {
        "hyperparameters": hp, "module_handle": module_handle, "epochs_run": len(history.history["loss"]),
        "head_eval_accuracy": head_accuracy, "fine_tuning": fine_tuning,
        "eval_accuracy": fine_tuning["best_eval_accuracy"] if fine_tuning else head_accuracy,
        "final": {k: float(v[-1]) for k, v in history.history.items()}}}


def continue_training(base_model_dir: str, hp: dict[str, Any], module_handle: str, train_files: list[str],
                      eval_files: list[str], work_dir: str) -> dict[str, Any]:
    """Warm start (pipelines/models/warm_start.py): the base model's module and head fine-tuned for
    `warm_start_epochs` on the new training images and a replay sample of the others. Returns what `train` returns."""
    keras.utils.set_random_seed(hp["seed"])
    num_classes = len(read_vocabulary(examples_uri(train_files)))
    image_module, head = warm_start.restore(base_model_dir, load_image_module(module_handle), num_classes, hp)
    check_test_time_views(hp["test_time_views"], image_module.input_size)
    subset, new, replayed = warm_start.training_subset(
        train_files, hp, os.path.join(work_dir, "warm_start", "Split-train", "data.gz"))
    log.info("warm start from %s: fine-tuning on %d new and %d replayed training images", base_model_dir, new, replayed)
    class_weights = None
    if hp["class_weights"]:
        class_weights = balanced_class_weights(load_embeddings([subset], embedding_dim([subset]))[1], num_classes)
    fine_tuning = fine_tune(image_module, head, [subset], eval_files, num_classes,
                            dict(hp, fine_tune_epochs=hp["warm_start_epochs"]), class_weights)
    return {"image_module": image_module, "head": head, "summary": {
        "hyperparameters": hp, "module_handle": module_handle, "fine_tuning": fine_tuning,
        "warm_start": {"new_images": new, "replayed_images": replayed},
        "eval_accuracy": fine_tuning["best_eval_accuracy"]}}


def run_fn(fn_args) -> None:
    """TFX Trainer entry point: continues the base model when it can (warm start), else trains from the module."""
    hp = hyperparameters_from(fn_args.custom_config, getattr(fn_args, "hyperparameters", None))
    module_handle = (fn_args.custom_config or {}).get("module_handle", configs.MODULE_HANDLE)
    labels = read_vocabulary(examples_uri(fn_args.train_files))
    base, why = warm_start.base_to_continue(fn_args.base_model, labels, hp)
    trained = None
    if base:
        try:
            trained = continue_training(base, hp, module_handle, fn_args.train_files, fn_args.eval_files,
                                        fn_args.model_run_dir)
        except ValueError as error:
            why = f"{base} cannot be continued: {error}"
    if trained is None:
        trained = train(hp, module_handle, fn_args.train_files, fn_args.eval_files, fn_args.model_run_dir)
    trained["summary"]["start"] = {"warm_start_from": base if trained["summary"].get("warm_start") else None,
                                   "why": why}
    step_results.report("train", (f"continued the served model ({why})" if trained["summary"].get("warm_start")
                                  else f"from the image module: {why}"))
    export_serving_model(trained["image_module"], trained["head"], labels, fn_args.serving_model_dir,
                         test_time_views=hp["test_time_views"], warmup_images=held_out_images(fn_args.eval_files))
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, TRAINING_SUMMARY_FILE), "w") as f:
        json.dump(dict(trained["summary"], labels=labels), f, indent=2)
