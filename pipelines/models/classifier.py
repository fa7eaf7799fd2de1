"""Trainer module (`run_fn`, referenced by dotted path): a Keras head on cached image embeddings, exported with the
image module in front so the served model takes raw image bytes.

The head is pure Keras 3 (dropout + dense softmax, optional hidden layer); the pretrained module is never wrapped in
a Keras layer (hub.KerasLayer breaks under Keras 3) but called from the exported tf.Module's tf.functions.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import tensorflow as tf

from components.contract import EMBEDDING_KEY, IMAGE_KEY, LABEL_KEY, LABELS_FILE, TRAINING_SUMMARY_FILE
from components.image_decoding import decode_rgb, preprocess_batch
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


def hyperparameters_from(custom_config: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults from configs, overridden by the pipeline's custom_config['hyperparameters']; unknown keys are errors."""
    overrides = dict((custom_config or {}).get("hyperparameters") or {})
    unknown = sorted(set(overrides) - set(configs.HYPERPARAMETERS))
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown}; known: {sorted(configs.HYPERPARAMETERS)}")
    merged = dict(configs.HYPERPARAMETERS)
    for key, value in overrides.items():
        merged[key] = type(configs.HYPERPARAMETERS[key])(value)
    return merged


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


def augment(image_bytes, size: tuple[int, int], generator: tf.random.Generator, flip: bool):
    """Random crop (80-100% of each side), optional left-right flip and brightness jitter, then the usual resize."""
    image = tf.image.convert_image_dtype(decode_rgb(image_bytes), tf.float32)
    crop = tf.cast(tf.cast(tf.shape(image)[:2], tf.float32) * generator.uniform([], 0.8, 1.0), tf.int32)
    image = tf.image.stateless_random_crop(image, [crop[0], crop[1], 3], seed=generator.make_seeds(1)[:, 0])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=generator.make_seeds(1)[:, 0])
    image = tf.image.stateless_random_brightness(image, 0.2, seed=generator.make_seeds(1)[:, 0])
    return tf.image.resize(tf.clip_by_value(image, 0.0, 1.0), size, antialias=True)


def image_dataset(file_patterns: list[str]) -> tf.data.Dataset:
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string), LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}
    return tf.data.TFRecordDataset(_files(file_patterns), compression_type="GZIP").map(
        lambda record: tf.io.parse_single_example(record, spec))


def augmented_embeddings(file_patterns: list[str], image_module, copies: int, flip: bool,
                         seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`copies` randomly flipped/cropped/brightened versions of every training image, embedded now (never cached:
    each copy is new)."""
    generator = tf.random.Generator.from_seed(seed)
    embeddings, labels = [], []
    for _ in range(copies):
        for batch in image_dataset(file_patterns).batch(32):
            images = tf.stack([augment(b, image_module.input_size, generator, flip)
                               for b in tf.unstack(batch[IMAGE_KEY])])
            embeddings.append(image_module(images).numpy())
            labels.append(batch[LABEL_KEY].numpy())
    return np.concatenate(embeddings), np.concatenate(labels)


def fine_tune(image_module, head, train_files: list[str], eval_files: list[str], num_classes: int,
              hp: dict[str, Any]) -> dict[str, Any]:
    """Trains the module's top `fine_tune_variables` variables together with the head, end to end on images
    (SGD with momentum, small learning rate), keeping the weights of the epoch with the best eval accuracy."""
    import keras

    module_variables = list(image_module.module.trainable_variables)
    count = min(hp["fine_tune_variables"], len(module_variables))
    variables = module_variables[-count:] + list(head.trainable_variables)
    velocities = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in variables]
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=hp["label_smoothing"])
    learning_rate, size = hp["fine_tune_learning_rate"], image_module.input_size
    generator = tf.random.Generator.from_seed(hp["seed"])

    def training_images(image_bytes):
        if hp["augment_copies"] > 0:
            return tf.stack([augment(b, size, generator, hp["augment_flip"]) for b in tf.unstack(image_bytes)])
        return preprocess_batch(image_bytes, size)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(tf.one_hot(labels, num_classes), head(image_module(images), training=True))
        for gradient, variable, velocity in zip(tape.gradient(loss, variables), variables, velocities):
            velocity.assign(0.9 * velocity + gradient)
            variable.assign_sub(learning_rate * velocity)
        return loss

    @tf.function
    def predict(image_bytes):
        return tf.argmax(head(image_module(preprocess_batch(image_bytes, size)), training=False), axis=1)

    def eval_accuracy() -> float:
        correct = total = 0
        for batch in image_dataset(eval_files).batch(64):
            correct += int(tf.reduce_sum(tf.cast(predict(batch[IMAGE_KEY]) == batch[LABEL_KEY], tf.int32)))
            total += int(tf.size(batch[LABEL_KEY]))
        return correct / max(total, 1)

    initial_accuracy = eval_accuracy()
    best_accuracy, best_values, history = initial_accuracy, [v.numpy() for v in variables], []
    for epoch in range(hp["fine_tune_epochs"]):
        losses = [float(step(training_images(batch[IMAGE_KEY]), batch[LABEL_KEY]))
                  for batch in image_dataset(train_files).shuffle(2048, seed=hp["seed"] + epoch)
                  .batch(hp["batch_size"])]
        accuracy = eval_accuracy()
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "eval_accuracy": accuracy})
        logger.info("fine-tuning epoch %d: loss %.4f, eval accuracy %.4f", epoch + 1, np.mean(losses), accuracy)
        if accuracy > best_accuracy:
            best_accuracy, best_values = accuracy, [v.numpy() for v in variables]
    for variable, value in zip(variables, best_values):
        variable.assign(value)
    return {"variables": count, "initial_eval_accuracy": initial_accuracy, "best_eval_accuracy": best_accuracy,
            "epochs": history}


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
    server honouring --prefer_tflite_model serves the same signatures with the network on LiteRT.
    """

    def __init__(self, image_module, head, labels: list[str], labels_path: str, max_image_pixels: int):
        super().__init__(name="image_classifier")
        self.image_module = image_module.module      # tracked, so the module's variables are saved
        self._embed = image_module
        self.head = DenseStack(head)
        self.vocabulary = tf.saved_model.Asset(labels_path)   # ships as assets/labels.txt
        self._labels = tf.constant(labels)
        self.input_size = tuple(image_module.input_size)
        self._max_image_pixels = max_image_pixels
        height, width = self.input_size
        self.network = tf.function(
            lambda images: {NETWORK_OUTPUT: self.head(self._embed(images))},
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name=NETWORK_INPUT)])
        self.litert = LiteRTSteps({
            SERVING_SIGNATURE: (self._images_from_bytes, self._serve_outputs, IMAGE_BYTES_SPEC),
            CLASSIFY_SIGNATURE: (self._images_from_examples, self._classify_outputs, EXAMPLES_SPEC),
        })

    def _images_from_bytes(self, image_bytes):
        # Images whose headers claim more than max_image_pixels are refused before decoding (INVALID_ARGUMENT).
        return {NETWORK_INPUT: preprocess_batch(image_bytes, self.input_size, self._max_image_pixels)}

    def _images_from_examples(self, inputs):
        features = tf.io.parse_example(inputs, {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        return self._images_from_bytes(features[IMAGE_KEY])

    def _classes(self, scores):
        return tf.tile(self._labels[tf.newaxis, :], [tf.shape(scores)[0], 1])

    def _serve_outputs(self, network_outputs):
        scores = network_outputs[NETWORK_OUTPUT]
        return {"scores": scores, "classes": self._classes(scores),
                "label": tf.gather(self._labels, tf.argmax(scores, axis=1))}

    def _classify_outputs(self, network_outputs):
        scores = network_outputs[NETWORK_OUTPUT]
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
                         max_image_pixels: int = MAX_IMAGE_PIXELS) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        labels_path = os.path.join(scratch, LABELS_FILE)
        with open(labels_path, "w") as f:
            f.write("\n".join(labels) + "\n")
        classifier = ImageClassifier(image_module, head, labels, labels_path, max_image_pixels)
        tf.saved_model.save(classifier, export_dir, signatures={
            SERVING_SIGNATURE: classifier.serve.get_concrete_function(),
            CLASSIFY_SIGNATURE: classifier.classify.get_concrete_function(),
        })
        # TF Serving's --prefer_tflite_model convention: model.tflite beside the SavedModel in the version folder.
        export_litert_model(classifier, labels, export_dir)
    # TF Serving's Classify API only accepts signatures marked as classification signatures.
    set_method_names(export_dir, {CLASSIFY_SIGNATURE: tf.saved_model.CLASSIFY_METHOD_NAME})


def run_fn(fn_args) -> None:
    """TFX Trainer entry point."""
    import keras

    hp = hyperparameters_from(fn_args.custom_config)
    module_handle = (fn_args.custom_config or {}).get("module_handle", configs.MODULE_HANDLE)
    keras.utils.set_random_seed(hp["seed"])
    image_module = load_image_module(module_handle)
    labels = read_vocabulary(_examples_uri(fn_args.train_files))
    num_classes = len(labels)

    x_train, y_train = load_embeddings(fn_args.train_files, image_module.feature_dim)
    x_eval, y_eval = load_embeddings(fn_args.eval_files, image_module.feature_dim)
    if hp["augment_copies"] > 0:
        x_aug, y_aug = augmented_embeddings(fn_args.train_files, image_module, hp["augment_copies"],
                                            hp["augment_flip"], hp["seed"])
        x_train, y_train = np.concatenate([x_train, x_aug]), np.concatenate([y_train, y_aug])
    logger.info("training head on %d examples (%d classes), early stopping on %d eval examples",
                len(y_train), num_classes, len(y_eval))

    head = build_head(image_module.feature_dim, num_classes, hp)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=hp["early_stopping_patience"],
                                      restore_best_weights=True),
        keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch"),
    ]
    history = head.fit(
        x_train, keras.utils.to_categorical(y_train, num_classes),
        validation_data=(x_eval, keras.utils.to_categorical(y_eval, num_classes)),
        epochs=hp["epochs"], batch_size=hp["batch_size"], shuffle=True, callbacks=callbacks, verbose=2,
    )
    fine_tuning = None
    if hp["fine_tune_variables"] > 0:
        fine_tuning = fine_tune(image_module, head, fn_args.train_files, fn_args.eval_files, num_classes, hp)
    export_serving_model(image_module, head, labels, fn_args.serving_model_dir,
                         int((fn_args.custom_config or {}).get("max_image_pixels", MAX_IMAGE_PIXELS)))
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, TRAINING_SUMMARY_FILE), "w") as f:
        json.dump({"hyperparameters": hp, "module_handle": module_handle, "labels": labels,
                   "epochs_run": len(history.history["loss"]), "fine_tuning": fine_tuning,
                   "final": {k: float(v[-1]) for k, v in history.history.items()}}, f, indent=2)
