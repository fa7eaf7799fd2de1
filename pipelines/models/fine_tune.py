"""Fine-tuning: the module's top variables trained with the head, end to end on augmented images, after the head has
been trained on frozen embeddings, keeping the weights of the epoch with the best eval accuracy.

Discriminative learning rates: the head gets `fine_tune_learning_rate`, each module layer below it that rate times
`fine_tune_layer_decay` per layer (generic pretrained features low down move least). The rate warms up linearly over
`fine_tune_warmup_epochs`, then follows a cosine decay to zero.

Weight averaging (`fine_tune_ema_decay` > 0): each epoch is evaluated, and kept, with an exponential moving average
of the trained variables; on a few thousand images the average is steadier than the last step's weights, so the
best-epoch choice depends less on eval noise.

Batch normalisation: statistics stay frozen. The builtin EfficientNet-Lite0 folds every BatchNorm into its
convolution, and other modules are called in inference mode, so their moving averages are used, never updated: batch
statistics of 16-32 images are too noisy to replace those learnt on ImageNet and would shift the features the head was
just trained on.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipelines.models.training_data import decoded_images, model_inputs
from pipelines.models.views import dihedral_views, mean_over_views

log = logging.getLogger(__name__)

MOMENTUM = 0.9


def fine_tuned_variables(image_module, count: int) -> list:
    """The module's top `count` trainable variables (all of them for count < 0), in forward order."""
    module_variables = list(image_module.module.trainable_variables)
    kept = len(module_variables) if count < 0 else min(count, len(module_variables))
    return module_variables[len(module_variables) - kept:]


def layer_rate_scales(module_variables: list, head_variables: list, layer_decay: float) -> list[float]:
    """Each variable's learning-rate factor: `layer_decay` per module layer below the head (a kernel and its bias
    make a layer; layer 1 is the one right below the head), 1 for the head."""
    depths = [(len(module_variables) - 1 - i) // 2 + 1 for i in range(len(module_variables))]
    return [layer_decay ** depth for depth in depths] + [1.0] * len(head_variables)


def learning_rate_schedule(steps_per_epoch: int, hp: dict[str, Any]):
    """(schedule, total steps): linear warm-up to `fine_tune_learning_rate`, then cosine decay to zero."""
    total_steps = max(1, steps_per_epoch * hp["fine_tune_epochs"])
    warmup_steps = min(total_steps - 1, int(hp["fine_tune_warmup_epochs"] * steps_per_epoch))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total_steps - warmup_steps, warmup_target=hp["fine_tune_learning_rate"],
        warmup_steps=warmup_steps)
    return schedule, total_steps


class NesterovSGD:
    """SGD with Nesterov momentum and a per-variable rate scale (exactly a per-variable learning rate). Written out:
    Keras 3 optimizers take only Keras variables, and the module's are restored tf.Variables."""

    def __init__(self, variables: list, scales: list[float], schedule):
        self.variables, self.scales, self.schedule = variables, scales, schedule
        self.velocities = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in variables]
        self.step_count = tf.Variable(0, dtype=tf.int64, trainable=False)

    def apply(self, gradients) -> None:
        rate = tf.cast(self.schedule(self.step_count), tf.float32)
        for gradient, variable, velocity, scale in zip(gradients, self.variables, self.velocities, self.scales):
            velocity.assign(MOMENTUM * velocity + gradient)
            variable.assign_sub(rate * scale * (gradient + MOMENTUM * velocity))
        self.step_count.assign_add(1)


class WeightAverage:
    """An exponential moving average of `variables`, and the swap that puts it in their place while it is judged.
    Written out: tf.train.ExponentialMovingAverage rejects Keras 3 variables (the head's)."""

    def __init__(self, variables: list, decay: float):
        self.variables, self.decay = variables, decay
        self.averages = [tf.Variable(v.numpy(), trainable=False) for v in variables]

    def update(self, step_count) -> None:
        # The decay ramps up over the first steps (as num_updates does in TF's class): the start point fades.
        steps = tf.cast(step_count, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + steps) / (10.0 + steps))
        for average, variable in zip(self.averages, self.variables):
            average.assign(decay * average + (1.0 - decay) * variable)

    @contextlib.contextmanager
    def swapped_in(self):
        """The variables hold the averages inside the block; the trained values go back afterwards."""
        trained_values = [v.numpy() for v in self.variables]
        for variable, average in zip(self.variables, self.averages):
            variable.assign(average)
        try:
            yield
        finally:
            for variable, value in zip(self.variables, trained_values):
                variable.assign(value)


def fine_tune(image_module, head, train_files: list[str], eval_files: list[str], num_classes: int,
              hp: dict[str, Any], class_weights: np.ndarray | None = None) -> dict[str, Any]:
    """Trains the module's top `fine_tune_variables` variables (-1: all) with the head (see the module docstring);
    the variables end holding the best epoch's weights. Returns a summary with the per-epoch history."""
    module_variables = fine_tuned_variables(image_module, hp["fine_tune_variables"])
    variables = module_variables + list(head.trainable_variables)
    size, batch_size = image_module.input_size, hp["fine_tune_batch_size"]
    train_images, eval_images = decoded_images(train_files), decoded_images(eval_files)
    train_count = int(train_images.reduce(0, lambda count, _: count + 1))
    steps_per_epoch = -(-train_count // batch_size)
    schedule, total_steps = learning_rate_schedule(steps_per_epoch, hp)
    optimizer = NesterovSGD(variables, layer_rate_scales(module_variables, head.trainable_variables,
                                                         hp["fine_tune_layer_decay"]), schedule)
    average = WeightAverage(variables, hp["fine_tune_ema_decay"]) if hp["fine_tune_ema_decay"] > 0 else None
    step = train_step(image_module, head, variables, optimizer, average, num_classes, hp, class_weights)
    views = hp["test_time_views"]

    @tf.function(reduce_retracing=True)
    def predict(images):  # as served: averaged over the test-time views
        return tf.argmax(mean_over_views(head(image_module(dihedral_views(images, views)), training=False), views),
                         axis=1)

    def eval_accuracy() -> float:
        with average.swapped_in() if average is not None else contextlib.nullcontext():  # judge the average
            correct = total = 0
            for images, labels in model_inputs(eval_images, size, max(1, 64 // views)):
                correct += int(tf.reduce_sum(tf.cast(predict(images) == labels, tf.int32)))
                total += int(tf.size(labels))
        return correct / max(total, 1)

    initial_accuracy = eval_accuracy()
    log.info("fine-tuning %d module variables at %dx%d on %d images, %d steps of %d; eval accuracy before: %.4f",
             len(module_variables), size[0], size[1], train_count, total_steps, batch_size, initial_accuracy)
    best_accuracy, best_epoch, best_values, history = initial_accuracy, 0, [v.numpy() for v in variables], []
    for epoch in range(hp["fine_tune_epochs"]):
        record, progress = run_epoch(epoch, step, train_images, train_count, steps_per_epoch, size, hp)
        accuracy = eval_accuracy()
        progress.update(steps_per_epoch, [("eval_accuracy", accuracy)], finalize=True)
        record = dict(record, eval_accuracy=accuracy)
        history.append(record)
        log.info("fine-tuning epoch %d: loss %.4f, eval accuracy %.4f, %.0f s (%.0f s per 1,000 images)",
                 epoch + 1, record["loss"], accuracy, record["train_seconds"], record["seconds_per_1000_images"])
        if accuracy > best_accuracy:
            # Kept as judged: the averages when on, else the weights themselves.
            best_accuracy, best_epoch = accuracy, epoch + 1
            best_values = [v.numpy() for v in (average.averages if average is not None else variables)]
    for variable, value in zip(variables, best_values):
        variable.assign(value)
    return {"variables": len(module_variables), "input_size": list(size), "initial_eval_accuracy": initial_accuracy,
            "best_eval_accuracy": best_accuracy, "best_epoch": best_epoch, "epochs": history}


def train_step(image_module, head, variables: list, optimizer: NesterovSGD, average: WeightAverage | None,
               num_classes: int, hp: dict[str, Any], class_weights: np.ndarray | None):
    """One optimisation step on a batch, as a tf.function: (images, labels) -> loss."""
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=hp["label_smoothing"])
    weights = tf.constant(class_weights if class_weights is not None else np.ones(num_classes), tf.float32)

    @tf.function(reduce_retracing=True)
    def step(images, labels):
        with tf.GradientTape() as tape:
            scores = head(image_module(images), training=True)
            loss = loss_fn(tf.one_hot(labels, num_classes), scores, sample_weight=tf.gather(weights, labels))
        optimizer.apply(tape.gradient(loss, variables))
        if average is not None:
            average.update(optimizer.step_count)
        return loss

    return step


def run_epoch(epoch: int, step, train_images: tf.data.Dataset, train_count: int, steps_per_epoch: int,
              size: tuple[int, int], hp: dict[str, Any]) -> tuple[dict[str, Any], keras.utils.Progbar]:
    """One pass over the shuffled, augmented training images: its loss and time, and its progress bar (finished by
    the caller with the eval accuracy)."""
    # One line per epoch on stdout, as the head's Keras fit prints (the runner's logging shows no INFO).
    print(f"Fine-tuning epoch {epoch + 1}/{hp['fine_tune_epochs']}", flush=True)
    progress = keras.utils.Progbar(steps_per_epoch, verbose=2, stateful_metrics=["eval_accuracy"])
    started = time.monotonic()
    shuffled = train_images.shuffle(train_count, seed=hp["seed"] + epoch)
    losses = []
    for images, labels in model_inputs(shuffled, size, hp["fine_tune_batch_size"], hp, seed=hp["seed"] + epoch):
        losses.append(float(step(images, labels)))
        progress.update(len(losses), [("loss", losses[-1])], finalize=False)
    seconds = time.monotonic() - started
    return {"epoch": epoch + 1, "loss": float(np.mean(losses)), "train_seconds": seconds,
            "seconds_per_1000_images": 1000 * seconds / train_count}, progress
