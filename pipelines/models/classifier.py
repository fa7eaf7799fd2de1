"""Trainer module (`run_fn`, referenced by dotted path): a Keras head on cached image embeddings, exported with the
image module in front so the served model takes raw image bytes.

The head is pure Keras 3 (dropout + dense softmax, optional hidden layer); the pretrained module is never wrapped in
a Keras layer (hub.KerasLayer breaks under Keras 3) but called from the exported tf.Module's tf.functions.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import numpy as np
import tensorflow as tf

from components.contract import EMBEDDING_KEY, IMAGE_KEY, LABEL_KEY, LABELS_FILE, TRAINING_SUMMARY_FILE
from components.image_decoding import decode_rgb, preprocess_batch, to_model_input
from components.image_example_gen.labels import read_label_vocabulary
from components.image_limits import MAX_IMAGE_PIXELS
from components.image_module import load_image_module
from components.saved_model_signatures import set_method_names
from pipelines import configs
from serving.litert import LITERT_STEPS, TFLITE_FILE, inputs_step, outputs_step

logger = logging.getLogger(__name__)

SERVING_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
CLASSIFY_SIGNATURE = "classify"
# model.tflite holds the network: float32 RGB pixels in [0, 1] -> softmax scores.
NETWORK_INPUT, NETWORK_OUTPUT = "images", "scores"
LITERT_DESCRIPTION = "image_retrain.json"  # model.tflite metadata: what the input and output tensors mean


def hyperparameters_from(custom_config: dict[str, Any] | None, tuned: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults from configs, overridden by the Tuner's best values (`tuned`: a KerasTuner HyperParameters config, as
    the Trainer receives it), overridden by the pipeline's custom_config['hyperparameters']; unknown keys are
    errors. Explicit settings win: the Tuner holds them fixed anyway."""
    overrides = dict(tuned_values(tuned))
    overrides.update((custom_config or {}).get("hyperparameters") or {})
    unknown = sorted(set(overrides) - set(configs.HYPERPARAMETERS))
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown}; known: {sorted(configs.HYPERPARAMETERS)}")
    merged = dict(configs.HYPERPARAMETERS)
    for key, value in overrides.items():
        merged[key] = type(configs.HYPERPARAMETERS[key])(value)
    return merged


def tuned_values(tuned: dict[str, Any] | None) -> dict[str, Any]:
    if not tuned:
        return {}
    import keras_tuner

    return keras_tuner.HyperParameters.from_config(tuned).values


def read_vocabulary(examples_uri: str) -> list[str]:
    labels = read_label_vocabulary(examples_uri)
    if len(labels) < 2:
        raise ValueError(f"need at least two classes to train, found {labels} in {examples_uri}")
    return labels


def _examples_uri(file_patterns: list[str]) -> str:
    # Trainer file patterns are <examples uri>/Split-<name>/*; the vocabulary sits at the artifact's root.
    return os.path.dirname(os.path.dirname(file_patterns[0]))


def _files(file_patterns: list[str]) -> list[str]:
    files = [f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)]
    if not files:
        raise ValueError(f"no example files match {file_patterns}")
    return files


def embedding_dim(file_patterns: list[str]) -> int:
    """The embedding length the ImageEmbedder wrote, read from the first example."""
    for record in tf.data.TFRecordDataset(_files(file_patterns)[:1], compression_type="GZIP").take(1):
        return len(tf.train.Example.FromString(record.numpy()).features.feature[EMBEDDING_KEY].float_list.value)
    raise ValueError(f"no examples in {file_patterns}")


def load_embeddings(file_patterns: list[str], feature_dim: int) -> tuple[np.ndarray, np.ndarray]:
    spec = {EMBEDDING_KEY: tf.io.FixedLenFeature([feature_dim], tf.float32),
            LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    dataset = tf.data.TFRecordDataset(_files(file_patterns), compression_type="GZIP").batch(1024).map(
        lambda records: tf.io.parse_example(records, spec))
    embeddings, labels = [], []
    for batch in dataset:
        embeddings.append(batch[EMBEDDING_KEY].numpy())
        labels.append(batch[LABEL_KEY].numpy())
    if not embeddings:
        raise ValueError(f"no examples in {file_patterns}")
    return np.concatenate(embeddings), np.concatenate(labels)


def augment(image, size: tuple[int, int], seed, hp: dict[str, Any]):
    """uint8 [H, W, 3] -> float32 [h, w, 3] in [0, 1], randomly cropped (`augment_crop`: smallest kept fraction of
    each side; 1 = off), flipped (`augment_flip` left-right, `augment_vertical_flip`), rotated by a multiple of 90°
    (`augment_rotate90`), brightened (`augment_brightness`: max delta) and contrasted (`augment_contrast`: max
    relative change). Stateless: the same `seed` (int [2]) gives the same image, so runs repeat exactly."""
    crop_seed, size_seed, lr_seed, ud_seed, rotate_seed, brightness_seed, contrast_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 7))
    image = tf.image.convert_image_dtype(image, tf.float32)
    if hp["augment_crop"] < 1.0:
        fraction = tf.random.stateless_uniform([], size_seed, hp["augment_crop"], 1.0)
        crop = tf.cast(tf.cast(tf.shape(image)[:2], tf.float32) * fraction, tf.int32)
        image = tf.image.stateless_random_crop(image, [crop[0], crop[1], 3], seed=crop_seed)
    if hp["augment_flip"]:
        image = tf.image.stateless_random_flip_left_right(image, seed=lr_seed)
    if hp["augment_vertical_flip"]:
        image = tf.image.stateless_random_flip_up_down(image, seed=ud_seed)
    if hp["augment_rotate90"]:
        image = tf.image.rot90(image, tf.random.stateless_uniform([], rotate_seed, 0, 4, dtype=tf.int32))
    if hp["augment_brightness"] > 0:
        image = tf.image.stateless_random_brightness(image, hp["augment_brightness"], seed=brightness_seed)
    if hp["augment_contrast"] > 0:
        image = tf.image.stateless_random_contrast(image, 1 - hp["augment_contrast"], 1 + hp["augment_contrast"],
                                                   seed=contrast_seed)
    return tf.image.resize(tf.clip_by_value(image, 0.0, 1.0), size, antialias=True)


def dihedral_views(images, count: int):
    """[B, h, w, 3] -> [count * B, h, w, 3], view after view: the images; 2: and mirrored left-right; 4: and both
    upside down (so also turned 180°); 8: and the transposes of those four (the 90° turns and diagonal mirrors)."""
    views = [images]
    if count >= 2:
        views.append(tf.image.flip_left_right(images))
    if count >= 4:
        views += [tf.image.flip_up_down(view) for view in views]
    if count >= 8:
        views += [tf.transpose(view, [0, 2, 1, 3]) for view in views]
    return tf.concat(views, axis=0)


def check_test_time_views(count: int, input_size: tuple[int, int]) -> int:
    if count not in configs.TEST_TIME_VIEWS:
        raise ValueError(f"test_time_views must be one of {configs.TEST_TIME_VIEWS}, not {count}")
    if count == 8 and input_size[0] != input_size[1]:
        raise ValueError(f"test_time_views=8 transposes images: it needs a square input, not {input_size}")
    return count


def mean_over_views(scores, count: int):
    """[count * B, C] scores of dihedral_views -> [B, C]: each image's scores averaged over its views."""
    return tf.reduce_mean(tf.reshape(scores, [count, -1, tf.shape(scores)[-1]]), axis=0)


def image_dataset(file_patterns: list[str]) -> tf.data.Dataset:
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string), LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    return tf.data.TFRecordDataset(_files(file_patterns), compression_type="GZIP").map(
        lambda record: tf.io.parse_single_example(record, spec))


def decoded_images(file_patterns: list[str]) -> tf.data.Dataset:
    """(uint8 [H, W, 3], label) per example, decoded once and kept in memory: every epoch reuses them."""
    return image_dataset(file_patterns).map(lambda e: (decode_rgb(e[IMAGE_KEY]), e[LABEL_KEY]),
                                            num_parallel_calls=tf.data.AUTOTUNE).cache()


def model_inputs(images: tf.data.Dataset, size: tuple[int, int], batch_size: int, hp: dict[str, Any] | None = None,
                 seed: int = 0) -> tf.data.Dataset:
    """Batches of (float32 [B, h, w, 3], labels): augmented with `hp` when given (a fresh draw per `seed`), else
    the plain resize the exported model applies."""
    if hp is None:
        batches = images.map(lambda image, label: (to_model_input(image, size), label),
                             num_parallel_calls=tf.data.AUTOTUNE)
    else:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        batches = tf.data.Dataset.zip(images, seeds).map(
            lambda pair, pair_seed: (augment(pair[0], size, pair_seed, hp), pair[1]),
            num_parallel_calls=tf.data.AUTOTUNE)
    return batches.batch(batch_size).prefetch(2)


def embed_images(file_patterns: list[str], image_module, hp: dict[str, Any] | None = None,
                 copies: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings computed now at the module's current input size: of the images as served (hp None), or of
    `copies` augmented draws of every image (never cached: each copy is new)."""
    images = decoded_images(file_patterns)
    embeddings, labels = [], []
    for copy in range(copies if hp is not None else 1):
        for batch, batch_labels in model_inputs(images, image_module.input_size, 32, hp,
                                                seed=(hp or {}).get("seed", 0) * 1000 + copy):
            embeddings.append(image_module(batch).numpy())
            labels.append(batch_labels.numpy())
    return np.concatenate(embeddings), np.concatenate(labels)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (k * count) per class (scikit-learn's "balanced"), 1 for classes absent from `labels`."""
    from sklearn.utils.class_weight import compute_class_weight

    weights = np.ones(num_classes, np.float32)
    present = np.unique(labels)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def fine_tuned_variables(image_module, count: int) -> list:
    """The module's top `count` trainable variables (all of them for count < 0), in forward order."""
    module_variables = list(image_module.module.trainable_variables)
    kept = len(module_variables) if count < 0 else min(count, len(module_variables))
    return module_variables[len(module_variables) - kept:]


def fine_tune(image_module, head, train_files: list[str], eval_files: list[str], num_classes: int,
              hp: dict[str, Any], class_weights: np.ndarray | None = None) -> dict[str, Any]:
    """Trains the module's top `fine_tune_variables` variables (-1: all) with the head, end to end on augmented
    images, after the head has been trained on frozen embeddings (run_fn), keeping the weights of the epoch with the
    best eval accuracy.

    Discriminative learning rates: the head gets `fine_tune_learning_rate`, each module layer below it that rate
    times `fine_tune_layer_decay` per layer (generic pretrained features low down move least). The rate warms up
    linearly over `fine_tune_warmup_epochs`, then follows a cosine decay to zero.

    Weight averaging (`fine_tune_ema_decay` > 0): each epoch is evaluated, and kept, with an exponential moving
    average of the trained variables; on a few thousand images the average is steadier than the last step's weights,
    so the best-epoch choice depends less on eval noise.

    Batch normalisation: statistics stay frozen. The builtin EfficientNet-Lite0 folds every BatchNorm into its
    convolution, and other modules are called in inference mode, so their moving averages are used, never updated:
    batch statistics of 16-32 images are too noisy to replace those learnt on ImageNet and would shift the features
    the head was just trained on.
    """
    import time

    import keras

    module_variables = fine_tuned_variables(image_module, hp["fine_tune_variables"])
    head_variables = list(head.trainable_variables)
    variables = module_variables + head_variables
    # A kernel and its bias make a layer; layer 1 is the one right below the head.
    layers_below_head = [(len(module_variables) - 1 - i) // 2 + 1 for i in range(len(module_variables))]
    scales = [hp["fine_tune_layer_decay"] ** depth for depth in layers_below_head] + [1.0] * len(head_variables)
    size, batch_size = image_module.input_size, hp["fine_tune_batch_size"]
    weights = tf.constant(class_weights if class_weights is not None else np.ones(num_classes), tf.float32)

    train_images, eval_images = decoded_images(train_files), decoded_images(eval_files)
    train_count = int(train_images.reduce(0, lambda count, _: count + 1))
    steps_per_epoch = -(-train_count // batch_size)
    total_steps = max(1, steps_per_epoch * hp["fine_tune_epochs"])
    warmup_steps = min(total_steps - 1, int(hp["fine_tune_warmup_epochs"] * steps_per_epoch))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=total_steps - warmup_steps, warmup_target=hp["fine_tune_learning_rate"],
        warmup_steps=warmup_steps)
    # Nesterov momentum written out: Keras 3 optimizers take only Keras variables, and the module's are restored
    # tf.Variables. A per-variable rate scale on SGD is exactly a per-variable learning rate.
    velocities = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in variables]
    step_count = tf.Variable(0, dtype=tf.int64, trainable=False)
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=hp["label_smoothing"])
    # Written out for the same reason: tf.train.ExponentialMovingAverage rejects Keras 3 variables (the head's).
    averages = [tf.Variable(v.numpy(), trainable=False) for v in variables] if hp["fine_tune_ema_decay"] > 0 else None

    @tf.function(reduce_retracing=True)
    def step(images, labels):
        with tf.GradientTape() as tape:
            scores = head(image_module(images), training=True)
            loss = loss_fn(tf.one_hot(labels, num_classes), scores, sample_weight=tf.gather(weights, labels))
        rate = tf.cast(schedule(step_count), tf.float32)
        for gradient, variable, velocity, scale in zip(tape.gradient(loss, variables), variables, velocities,
                                                       scales):
            velocity.assign(0.9 * velocity + gradient)
            variable.assign_sub(rate * scale * (gradient + 0.9 * velocity))
        step_count.assign_add(1)
        if averages is not None:
            # The decay ramps up over the first steps (as num_updates does in TF's class): the start point fades.
            steps = tf.cast(step_count, tf.float32)
            decay = tf.minimum(hp["fine_tune_ema_decay"], (1.0 + steps) / (10.0 + steps))
            for average, variable in zip(averages, variables):
                average.assign(decay * average + (1.0 - decay) * variable)
        return loss

    views = hp["test_time_views"]

    @tf.function(reduce_retracing=True)
    def predict(images):  # as served: averaged over the test-time views
        return tf.argmax(mean_over_views(head(image_module(dihedral_views(images, views)), training=False), views),
                         axis=1)

    def eval_accuracy() -> float:
        trained_values = None
        if averages is not None:  # judge the average; the trained weights go back afterwards
            trained_values = [v.numpy() for v in variables]
            for variable, average in zip(variables, averages):
                variable.assign(average)
        correct = total = 0
        for images, labels in model_inputs(eval_images, size, max(1, 64 // views)):
            correct += int(tf.reduce_sum(tf.cast(predict(images) == labels, tf.int32)))
            total += int(tf.size(labels))
        if trained_values is not None:
            for variable, value in zip(variables, trained_values):
                variable.assign(value)
        return correct / max(total, 1)

    initial_accuracy = eval_accuracy()
    best_accuracy, best_epoch, best_values, history = initial_accuracy, 0, [v.numpy() for v in variables], []
    logger.info("fine-tuning %d module variables at %dx%d on %d images, %d steps of %d; eval accuracy before: %.4f",
                len(module_variables), size[0], size[1], train_count, total_steps, batch_size, initial_accuracy)
    for epoch in range(hp["fine_tune_epochs"]):
        # One line per epoch on stdout, as the head's Keras fit prints (the runner's logging shows no INFO).
        print(f"Fine-tuning epoch {epoch + 1}/{hp['fine_tune_epochs']}", flush=True)
        progress = keras.utils.Progbar(steps_per_epoch, verbose=2, stateful_metrics=["eval_accuracy"])
        started = time.monotonic()
        shuffled = train_images.shuffle(train_count, seed=hp["seed"] + epoch)
        losses = []
        for images, labels in model_inputs(shuffled, size, batch_size, hp, seed=hp["seed"] + epoch):
            losses.append(float(step(images, labels)))
            progress.update(len(losses), [("loss", losses[-1])], finalize=False)
        seconds = time.monotonic() - started
        accuracy = eval_accuracy()
        progress.update(len(losses), [("eval_accuracy", accuracy)], finalize=True)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "eval_accuracy": accuracy,
                        "train_seconds": seconds, "seconds_per_1000_images": 1000 * seconds / train_count})
        logger.info("fine-tuning epoch %d: loss %.4f, eval accuracy %.4f, %.0f s (%.0f s per 1,000 images)",
                    epoch + 1, np.mean(losses), accuracy, seconds, 1000 * seconds / train_count)
        if accuracy > best_accuracy:
            # Kept as judged: the averages when on, else the weights themselves.
            best_accuracy, best_epoch, best_values = accuracy, epoch + 1, [v.numpy() for v in averages or variables]
    for variable, value in zip(variables, best_values):
        variable.assign(value)
    return {"variables": len(module_variables), "input_size": list(size), "initial_eval_accuracy": initial_accuracy,
            "best_eval_accuracy": best_accuracy, "best_epoch": best_epoch, "epochs": history}


def build_head(feature_dim: int, num_classes: int, hp: dict[str, Any]):
    import keras

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


class DenseStack(tf.Module):
    """The trained head's dense layers as plain tf.Variables (dropout is inactive at inference).

    Keras 3 variables captured in a tf.function do not restore under TF1-style SavedModel loaders — the path TF
    Serving's C++ loader takes ("Resource localhost/scores/bias does not exist") — so the exported graph carries
    ordinary variables with the trained values instead.
    """

    def __init__(self, head):
        import keras

        super().__init__(name="head")
        self.kernels, self.biases, self._activations = [], [], []
        for layer in head.layers:
            if isinstance(layer, keras.layers.Dense):
                self.kernels.append(tf.Variable(layer.kernel.numpy(), trainable=False, name=f"{layer.name}_kernel"))
                self.biases.append(tf.Variable(layer.bias.numpy(), trainable=False, name=f"{layer.name}_bias"))
                self._activations.append(layer.get_config()["activation"])

    def __call__(self, embeddings):
        x = embeddings
        for kernel, bias, activation in zip(self.kernels, self.biases, self._activations):
            x = tf.matmul(x, kernel) + bias
            x = {"relu": tf.nn.relu, "softmax": tf.nn.softmax, "linear": tf.identity}[activation](x)
        return x


IMAGE_BYTES_SPEC = tf.TensorSpec([None], tf.string, name="image_bytes")
EXAMPLES_SPEC = tf.TensorSpec([None], tf.string, name="inputs")


class ImageClassifier(tf.Module):
    """Raw image bytes -> labels and scores: decode + resize + pretrained module + trained head.

    Each signature is `outputs(network(inputs(...)))`, and those three parts are saved too: `network` (pixels ->
    scores) is what `model.tflite` holds, and `litert` carries each signature's TF input and output steps, so a
    server honouring --prefer_tflite_model serves the same signatures with the network on LiteRT. Test-time views
    live in the steps (inputs: each image's views; outputs: their mean), so `network` sees one view per row.
    """

    def __init__(self, image_module, head, labels: list[str], labels_path: str, max_image_pixels: int,
                 test_time_views: int = 1):
        super().__init__(name="image_classifier")
        self.image_module = image_module.module      # tracked, so the module's variables are saved
        self._embed = image_module
        self.head = DenseStack(head)
        self.vocabulary = tf.saved_model.Asset(labels_path)   # ships as assets/labels.txt
        self._labels = tf.constant(labels)
        self.input_size = tuple(image_module.input_size)
        self._max_image_pixels = max_image_pixels
        height, width = self.input_size
        self.test_time_views = check_test_time_views(test_time_views, self.input_size)
        self.network = tf.function(
            lambda images: {NETWORK_OUTPUT: self.head(self._embed(images))},
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name=NETWORK_INPUT)])
        self.litert = LiteRTSteps({
            SERVING_SIGNATURE: (self._images_from_bytes, self._serve_outputs, IMAGE_BYTES_SPEC),
            CLASSIFY_SIGNATURE: (self._images_from_examples, self._classify_outputs, EXAMPLES_SPEC),
        })

    def _images_from_bytes(self, image_bytes):
        # Images whose headers claim more than max_image_pixels are refused before decoding (INVALID_ARGUMENT).
        images = preprocess_batch(image_bytes, self.input_size, self._max_image_pixels)
        return {NETWORK_INPUT: dihedral_views(images, self.test_time_views)}

    def _images_from_examples(self, inputs):
        features = tf.io.parse_example(inputs, {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        return self._images_from_bytes(features[IMAGE_KEY])

    def _classes(self, scores):
        return tf.tile(self._labels[tf.newaxis, :], [tf.shape(scores)[0], 1])

    def _scores(self, network_outputs):
        return mean_over_views(network_outputs[NETWORK_OUTPUT], self.test_time_views)

    def _serve_outputs(self, network_outputs):
        scores = self._scores(network_outputs)
        return {"scores": scores, "classes": self._classes(scores),
                "label": tf.gather(self._labels, tf.argmax(scores, axis=1))}

    def _classify_outputs(self, network_outputs):
        scores = self._scores(network_outputs)
        return {"classes": self._classes(scores), "scores": scores}

    @tf.function(input_signature=[IMAGE_BYTES_SPEC])
    def serve(self, image_bytes):
        return self._serve_outputs(self.network(**self._images_from_bytes(image_bytes)))

    @tf.function(input_signature=[EXAMPLES_SPEC])
    def classify(self, serialized_examples):
        return self._classify_outputs(self.network(**self._images_from_examples(serialized_examples)))


class LiteRTSteps(tf.Module):
    """Per signature, the TF steps around the network: `<signature>_inputs` (the signature's input -> the network's
    inputs) and `<signature>_outputs` (the network's outputs -> the signature's outputs)."""

    def __init__(self, steps: dict):
        super().__init__(name=LITERT_STEPS)
        for signature, (inputs, outputs, input_spec) in steps.items():
            setattr(self, inputs_step(signature), tf.function(inputs, input_signature=[input_spec]))
            network_outputs = {NETWORK_OUTPUT: tf.TensorSpec([None, None], tf.float32, name=NETWORK_OUTPUT)}
            setattr(self, outputs_step(signature), tf.function(outputs, input_signature=[network_outputs]))


def export_litert_model(classifier: ImageClassifier, labels: list[str], export_dir: str) -> str | None:
    """Writes `model.tflite` (the network: float32 RGB [B, h, w, 3] in [0, 1] -> softmax scores, labels embedded
    as metadata) into `export_dir` when the conversion matches TF on a probe batch; else logs why and writes
    nothing (a server then serves the SavedModel)."""
    from components import litert

    try:
        model = litert.convert(classifier.network.get_concrete_function(), classifier)
    except Exception as error:  # noqa: BLE001 - the converter raises many types; any of them means "no tflite"
        logger.warning("no %s: the network does not convert to LiteRT: %s", TFLITE_FILE, error)
        return None
    difference = litert.max_difference(model, lambda images: classifier.network(tf.constant(images)), NETWORK_INPUT,
                                       litert.probe_images(classifier.input_size))
    if difference > litert.TOLERANCE:
        logger.warning("no %s: LiteRT scores differ from TensorFlow by %.2e on the probe batch (tolerance %.0e)",
                       TFLITE_FILE, difference, litert.TOLERANCE)
        return None
    path = os.path.join(export_dir, TFLITE_FILE)
    litert.write_atomically(path, litert.with_metadata(model, litert_metadata(labels, classifier.input_size)))
    logger.info("wrote %s (max |difference| to TensorFlow on the probe batch: %.2e)", path, difference)
    return path


def litert_metadata(labels: list[str], input_size: tuple[int, int]) -> dict[str, bytes]:
    return {
        LABELS_FILE: ("\n".join(labels) + "\n").encode(),
        LITERT_DESCRIPTION: json.dumps({
            "input": {"name": NETWORK_INPUT, "shape": [-1, input_size[0], input_size[1], 3], "dtype": "float32",
                      "color_space": "RGB", "range": [0.0, 1.0],
                      "resize": "bilinear with antialiasing from the decoded image"},
            "output": {"name": NETWORK_OUTPUT, "kind": "softmax scores, one per label in labels.txt order"},
        }, indent=2).encode(),
    }


def export_serving_model(image_module, head, labels: list[str], export_dir: str,
                         max_image_pixels: int = MAX_IMAGE_PIXELS, test_time_views: int = 1) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        labels_path = os.path.join(scratch, LABELS_FILE)
        with open(labels_path, "w") as f:
            f.write("\n".join(labels) + "\n")
        classifier = ImageClassifier(image_module, head, labels, labels_path, max_image_pixels, test_time_views)
        tf.saved_model.save(classifier, export_dir, signatures={
            SERVING_SIGNATURE: classifier.serve.get_concrete_function(),
            CLASSIFY_SIGNATURE: classifier.classify.get_concrete_function(),
        })
        # TF Serving's --prefer_tflite_model convention: model.tflite beside the SavedModel in the version folder.
        export_litert_model(classifier, labels, export_dir)
    # TF Serving's Classify API only accepts signatures marked as classification signatures.
    set_method_names(export_dir, {CLASSIFY_SIGNATURE: tf.saved_model.CLASSIFY_METHOD_NAME})


def with_input_size(image_module, image_size: int):
    """The module at `image_size` x `image_size` pixels (0: its own size); a clear error if it takes only its own."""
    if image_size <= 0 or (image_size, image_size) == tuple(image_module.input_size):
        return image_module
    try:
        image_module(tf.zeros([1, image_size, image_size, 3]))
    except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
        raise ValueError(f"image module {image_module.handle!r} takes only {image_module.input_size} images, not "
                         f"image_size={image_size}: {error}") from error
    return dataclasses.replace(image_module, input_size=(image_size, image_size))


def train(hp: dict[str, Any], module_handle: str, train_files: list[str], eval_files: list[str],
          log_dir: str | None = None, export: bool = True) -> dict[str, Any]:
    """The training both the Trainer and every Tuner trial (export=False) run: the head on embeddings (early stopping
    on the eval split), then, if fine_tune_variables != 0, module and head on images. Returns the module (None when
    neither exported nor needed), the head and a summary."""
    import keras

    keras.utils.set_random_seed(hp["seed"])
    num_classes = len(read_vocabulary(_examples_uri(train_files)))
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
    logger.info("training head on %d examples (%d classes), early stopping on %d eval examples",
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


def run_fn(fn_args) -> None:
    """TFX Trainer entry point."""
    hp = hyperparameters_from(fn_args.custom_config, getattr(fn_args, "hyperparameters", None))
    module_handle = (fn_args.custom_config or {}).get("module_handle", configs.MODULE_HANDLE)
    trained = train(hp, module_handle, fn_args.train_files, fn_args.eval_files, fn_args.model_run_dir)
    labels = read_vocabulary(_examples_uri(fn_args.train_files))
    export_serving_model(trained["image_module"], trained["head"], labels, fn_args.serving_model_dir,
                         int((fn_args.custom_config or {}).get("max_image_pixels", MAX_IMAGE_PIXELS)),
                         hp["test_time_views"])
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, TRAINING_SUMMARY_FILE), "w") as f:
        json.dump(dict(trained["summary"], labels=labels), f, indent=2)


def search_space(fixed: dict[str, Any]):
    """KerasTuner HyperParameters: configs.TUNER_SEARCH_SPACE's choices, the fine-tuning ones only when fine-tuning
    is on; settings given explicitly (`fixed`, the pipeline's hyperparameters) are held at their value."""
    import keras_tuner

    hp = hyperparameters_from({"hyperparameters": fixed})
    space = keras_tuner.HyperParameters()
    for name, choices in configs.TUNER_SEARCH_SPACE.items():
        if name in fixed or (name.startswith("fine_tune_") and hp["fine_tune_variables"] == 0):
            continue
        space.Choice(name, choices)
    for name, value in fixed.items():
        space.Fixed(name, hp[name])
    return space


def tuner_fn(fn_args):
    """TFX Tuner entry point: a KerasTuner random search whose every trial is the Trainer's own `train`, scored by
    its eval-split accuracy (the head's, or the best fine-tuning epoch's). Budget: custom_config['tuner_trials']."""
    import keras_tuner
    from tfx.v1.components import TunerFnResult

    custom_config = fn_args.custom_config or {}
    fixed = dict(custom_config.get("hyperparameters") or {})
    module_handle = custom_config.get("module_handle", configs.MODULE_HANDLE)

    class TrainerTrials(keras_tuner.RandomSearch):
        def run_trial(self, trial, *args, **kwargs):
            hp = hyperparameters_from({"hyperparameters": trial.hyperparameters.values})
            trained = train(hp, module_handle, fn_args.train_files, fn_args.eval_files, export=False)
            return {"val_accuracy": trained["summary"]["eval_accuracy"]}

    tuner = TrainerTrials(
        hyperparameters=search_space(fixed), objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=int(custom_config.get("tuner_trials", configs.TUNER_TRIALS)), seed=configs.HYPERPARAMETERS["seed"],
        directory=fn_args.working_dir, project_name="search", overwrite=True)
    return TunerFnResult(tuner=tuner, fit_kwargs={})
