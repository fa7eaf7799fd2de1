"""Trainer module: hyperparameters, the bytes-in export (loadable as TF Serving loads it), augmentation, fine-tuning."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from image_retrain.image_module import load_image_module
from pipelines import configs
from pipelines.models.augment import augment
from pipelines.models.fine_tune import fine_tune, fine_tuned_variables
from pipelines.models.head import balanced_class_weights, build_head
from pipelines.models.hparams import hyperparameters_from
from pipelines.models.image_size import with_input_size
from pipelines.models.saved_model_export import export_serving_model
from pipelines.models.training_data import decoded_images, embed_images, model_inputs
from pipelines.models.views import check_test_time_views, dihedral_views, mean_over_views

LABELS = ["circle", "square"]


def encoded(color, image_format="PNG", size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_module():
    return load_image_module("efficientnet_lite0")


@pytest.fixture
def examples_file(tmp_path):
    path = tmp_path / "Split-train" / "data.gz"
    path.parent.mkdir()
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for index in range(6):
            example = tf.train.Example(features=tf.train.Features(feature={
                "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[encoded((200, 30, 30) if index % 2 else (30, 30, 200), "JPEG" if index < 3 else "PNG")])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 2])),
            }))
            writer.write(example.SerializeToString())
    return [str(path.parent / "*")]


def test_hyperparameters_merge_over_defaults_and_reject_unknown_keys():
    merged = hyperparameters_from({"hyperparameters": {"epochs": "3", "dropout": 0.5}})
    assert merged["epochs"] == 3 and merged["dropout"] == 0.5
    assert merged["learning_rate"] == configs.HYPERPARAMETERS["learning_rate"]
    with pytest.raises(ValueError, match="unknown hyperparameters \\['epoch'\\]"):
        hyperparameters_from({"hyperparameters": {"epoch": 3}})


def test_export_loads_like_tf_serving_and_classifies_bytes(tmp_path, image_module):
    hp = dict(configs.HYPERPARAMETERS, hidden_units=8)
    head = build_head(image_module.feature_dim, len(LABELS), hp)
    export_dir = str(tmp_path / "export")
    export_serving_model(image_module, head, LABELS, export_dir)

    # TF Serving's C++ loader restores into a TF1 session and runs signatures by tensor name: so do we here.
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
        serving = meta_graph.signature_def["serving_default"]
        classify = meta_graph.signature_def["classify"]
        assert classify.method_name == "tensorflow/serving/classify"
        assert set(classify.inputs) == {"inputs"} and set(classify.outputs) == {"classes", "scores"}
        fetches = {key: serving.outputs[key].name for key in ("scores", "classes", "label")}
        images = [encoded((250, 0, 0), "JPEG"), encoded((0, 0, 250), "PNG", (300, 200)), encoded((0, 250, 0), "GIF")]
        outputs = session.run(fetches, {serving.inputs["image_bytes"].name: images})
    assert outputs["scores"].shape == (3, 2)
    np.testing.assert_allclose(outputs["scores"].sum(axis=1), 1.0, rtol=1e-5)
    assert [list(row) for row in outputs["classes"]] == [[b"circle", b"square"]] * 3
    assert all(label in (b"circle", b"square") for label in outputs["label"])
    assert (tmp_path / "export" / "assets" / "labels.txt").read_text().split() == LABELS


def _peak_rss_rise_bytes(run) -> int:
    """Peak RSS while `run()` runs minus RSS before (VmHWM is reset through /proc/self/clear_refs)."""
    def status_kb(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status_kb("VmRSS")
    run()
    return (status_kb("VmHWM") - before) * 1024


def test_export_refuses_decompression_bombs_from_the_header_in_a_tf1_session(tmp_path, image_module):
    from image_fixtures import jpeg_header_bomb, png_bomb

    head = build_head(image_module.feature_dim, len(LABELS), dict(configs.HYPERPARAMETERS))
    export_dir = str(tmp_path / "export")
    export_serving_model(image_module, head, LABELS, export_dir)
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as session:  # loaded as TF Serving loads it
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
        serving = meta_graph.signature_def["serving_default"]
        feed, fetch = serving.inputs["image_bytes"].name, serving.outputs["scores"].name
        session.run(fetch, {feed: [encoded((250, 0, 0), "JPEG")]})  # warm
        def refused(bomb, size):
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match=f"Image of {size} .* larger than the limit of 100000000 pixels"):
                session.run(fetch, {feed: [bomb]})

        for bomb, size in ((png_bomb(), "23000x23000"), (jpeg_header_bomb(), "13000x13000")):
            # Decoded, these would be 1.6 GB and 0.5 GB of RGB.
            assert _peak_rss_rise_bytes(lambda: refused(bomb, size)) < 256 * 1024 * 1024  # noqa: B023 - run at once
        assert session.run(fetch, {feed: [encoded((0, 0, 250), "PNG")]}).shape == (1, 2)
    # The limit is the trainer's `max_image_pixels` custom_config (default image_retrain/image_limits.py).
    small_limit_dir = str(tmp_path / "small_limit")
    export_serving_model(image_module, head, LABELS, small_limit_dir, max_image_pixels=1000)
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        serving = tf.compat.v1.saved_model.loader.load(session, ["serve"], small_limit_dir).signature_def[
            "serving_default"]
        feed, fetch = serving.inputs["image_bytes"].name, serving.outputs["scores"].name
        assert session.run(fetch, {feed: [encoded((250, 0, 0), "PNG", (25, 40))]}).shape == (1, 2)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"Image of 40x30 \(1200 pixels to decode\) is "
                                                                r"larger than the limit of 1000 pixels"):
            session.run(fetch, {feed: [encoded((250, 0, 0), "PNG", (40, 30))]})


def test_augmented_copies_are_new_embeddings(examples_file, image_module):
    hp = dict(configs.HYPERPARAMETERS, seed=1)
    embeddings, labels = embed_images(examples_file, image_module, hp, copies=2)
    assert embeddings.shape == (12, image_module.feature_dim) and list(labels) == [0, 1, 0, 1, 0, 1] * 2
    assert not np.allclose(embeddings[:6], embeddings[6:])  # every copy is drawn anew
    again, _ = embed_images(examples_file, image_module, hp, copies=2)
    np.testing.assert_allclose(again, embeddings, atol=1e-5)  # stateless: the same seed draws the same copies


def test_each_augmentation_switches_on_and_off():
    image = tf.constant(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10)
    seed = tf.constant([3, 4], tf.int64)
    off = dict(configs.HYPERPARAMETERS, augment_flip=False, augment_vertical_flip=False, augment_rotate90=False,
               augment_crop=1.0, augment_brightness=0.0, augment_contrast=0.0)
    plain = augment(image, (2, 3), seed, off).numpy()
    np.testing.assert_allclose(plain, image.numpy() / 255.0, atol=1e-6)   # all off: only the resize (here none)
    for name, value in (("augment_flip", True), ("augment_vertical_flip", True), ("augment_rotate90", True),
                        ("augment_crop", 0.5), ("augment_brightness", 0.3), ("augment_contrast", 0.5)):
        draws = [augment(image, (2, 3), tf.constant([s, 1], tf.int64), dict(off, **{name: value})).numpy()
                 for s in range(8)]
        assert any(not np.allclose(d, plain) for d in draws), name


def test_balanced_class_weights():
    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(weights, [4 / 6, 2.0, 1.0])  # class 2 is absent: weight 1


def test_image_size_resizes_the_builtin_module(image_module):
    resized = with_input_size(image_module, 160)
    assert resized.input_size == (160, 160) and image_module.input_size == (224, 224)
    assert resized(tf.zeros([1, 160, 160, 3])).shape == (1, image_module.feature_dim)
    assert with_input_size(image_module, 0) is image_module


def test_fine_tuning_updates_only_the_top_module_variables(examples_file, image_module):
    hp = dict(configs.HYPERPARAMETERS, fine_tune_variables=2, fine_tune_epochs=1, fine_tune_batch_size=3)
    head = build_head(image_module.feature_dim, len(LABELS), hp)
    module_variables = list(image_module.module.trainable_variables)
    before = [v.numpy().copy() for v in module_variables]
    summary = fine_tune(image_module, head, examples_file, examples_file, len(LABELS), hp,
                                   class_weights=np.array([1.0, 2.0], np.float32))
    assert summary["variables"] == 2 and len(summary["epochs"]) == 1
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, module_variables)]
    assert not any(changed[:-2])  # the stem and lower blocks stay frozen
    assert np.isfinite(summary["epochs"][0]["loss"]) and summary["epochs"][0]["seconds_per_1000_images"] > 0
    # Kept weights are those of the best epoch: moved if fine-tuning improved eval accuracy, restored otherwise.
    improved = summary["best_eval_accuracy"] > summary["initial_eval_accuracy"]
    assert changed[-2:] == [improved, improved]
    for variable, value in zip(module_variables, before):
        variable.assign(value)  # the module fixture is shared


def test_fine_tuning_with_weight_averaging_keeps_the_average_it_evaluated(examples_file, image_module):
    """With `fine_tune_ema_decay` the epoch is judged and kept by the moving average of the weights: the kept
    weights score the reported eval accuracy, and differ from the plain run's, which keeps the last step's."""
    hp = dict(configs.HYPERPARAMETERS, fine_tune_variables=2, fine_tune_epochs=2, fine_tune_batch_size=2,
              fine_tune_learning_rate=0.05)
    module_variables = list(image_module.module.trainable_variables)
    before = [v.numpy().copy() for v in module_variables[-2:]]
    kept = {}
    for decay in (0.0, 0.9):
        tf.keras.utils.set_random_seed(7)  # the same initial head for both runs
        head = build_head(image_module.feature_dim, len(LABELS), hp)
        summary = fine_tune(image_module, head, examples_file, examples_file, len(LABELS),
                                       dict(hp, fine_tune_ema_decay=decay))
        assert summary["best_epoch"] > 0  # separable colours: both runs improve on the untrained head
        kept[decay] = [v.numpy().copy() for v in module_variables[-2:]]
        images = model_inputs(decoded_images(examples_file), image_module.input_size, 8)
        correct = sum(int(np.sum(np.argmax(head(image_module(x)), 1) == y.numpy())) for x, y in images)
        assert correct / 6 == summary["best_eval_accuracy"]
        for variable, value in zip(module_variables[-2:], before):
            variable.assign(value)  # the module fixture is shared
    assert not all(np.array_equal(a, b) for a, b in zip(kept[0.0], kept[0.9]))


def test_dihedral_views_are_the_eight_symmetries_of_the_square_and_their_mean_is_per_image():
    images = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3)  # two images, no symmetry of their own
    symmetries = [np.rot90(image, turns) for image in images for turns in range(4)]
    symmetries += [np.fliplr(symmetry) for symmetry in symmetries]
    for count in (1, 2, 4, 8):
        views = dihedral_views(tf.constant(images), count).numpy()
        assert views.shape == (count * 2, 3, 3, 3)
        np.testing.assert_array_equal(views[:2], images)  # view after view: the originals first
        assert all(any(np.array_equal(view, symmetry) for symmetry in symmetries) for view in views)
        assert len({view.tobytes() for view in views}) == count * 2  # every view a different one
        scores = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # one row per image
        per_view = tf.tile(scores, [count, 1]) * tf.repeat(tf.range(1.0, count + 1), 2)[:, tf.newaxis]  # view k: k×
        np.testing.assert_allclose(mean_over_views(per_view, count).numpy(), scores * (count + 1) / 2)
    with pytest.raises(ValueError, match="must be one of"):
        check_test_time_views(3, (224, 224))
    with pytest.raises(ValueError, match="needs a square input"):
        check_test_time_views(8, (224, 160))


def test_fine_tuning_eval_judges_the_model_as_served_with_its_test_time_views(tmp_path, image_module):
    """Red left/blue right against its mirror image: one left-right view tells them apart, two views (the image
    and its mirror) average them into the same scores, so the served model is at chance and eval must say so."""
    path = tmp_path / "Split-train" / "data.gz"
    path.parent.mkdir()
    halves = np.zeros((32, 32, 3), np.uint8)
    halves[:, :16, 0], halves[:, 16:, 2] = 220, 220
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for index in range(8):
            buffer = io.BytesIO()
            Image.fromarray(halves[:, ::-1] if index % 2 else halves).save(buffer, format="PNG")
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buffer.getvalue()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[index % 2])),
            })).SerializeToString())
    files = [str(path.parent / "*")]
    hp = dict(configs.HYPERPARAMETERS, fine_tune_variables=2, fine_tune_epochs=1, fine_tune_batch_size=4,
              augment_crop=1.0, augment_brightness=0.0, test_time_views=2)
    head = build_head(image_module.feature_dim, len(LABELS), hp)
    module_variables = list(image_module.module.trainable_variables)
    before = [v.numpy().copy() for v in module_variables[-2:]]
    summary = fine_tune(image_module, head, files, files, len(LABELS), hp)
    assert summary["initial_eval_accuracy"] == 0.5 and summary["epochs"][0]["eval_accuracy"] == 0.5
    images = next(iter(model_inputs(decoded_images(files), image_module.input_size, 8)))[0]
    one_view = head(image_module(images)).numpy()
    assert np.abs(one_view[0] - one_view[1]).max() > 1e-4  # one view does tell them apart
    for variable, value in zip(module_variables[-2:], before):
        variable.assign(value)  # the module fixture is shared


def test_fine_tuned_variables_counts_from_the_top_and_minus_one_means_all(image_module):
    everything = list(image_module.module.trainable_variables)
    assert fine_tuned_variables(image_module, -1) == everything
    assert fine_tuned_variables(image_module, 4) == everything[-4:]
    assert fine_tuned_variables(image_module, 10_000) == everything


def test_tuner_executor_searches_with_tuner_fn_and_its_best_values_reach_run_fns_hyperparameters(tmp_path):
    """The stock TFX Tuner executor on a tiny embedded set (head-only trials on separable embeddings, seconds)."""
    import json

    from tfx.components.tuner.executor import Executor
    from tfx.proto import trainer_pb2
    from tfx.types import artifact_utils, standard_artifacts
    from tfx.utils import proto_utils

    random = np.random.RandomState(0)
    for split, count in (("train", 24), ("eval", 12)):
        (tmp_path / "examples" / f"Split-{split}").mkdir(parents=True)
        with tf.io.TFRecordWriter(str(tmp_path / "examples" / f"Split-{split}" / "data.gz"), options="GZIP") as w:
            for index in range(count):
                label = index % 2
                embedding = random.normal(size=1280).astype(np.float32) + 3.0 * label
                w.write(tf.train.Example(features=tf.train.Features(feature={
                    "embedding": tf.train.Feature(float_list=tf.train.FloatList(value=embedding)),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                })).SerializeToString())
    (tmp_path / "examples" / "labels.txt").write_text("\n".join(LABELS) + "\n")
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    outputs = {"best_hyperparameters": [standard_artifacts.HyperParameters()],
               "tuner_results": [standard_artifacts.TunerResults()]}
    for name, (artifact,) in outputs.items():
        artifact.uri = str(tmp_path / name)
        (tmp_path / name).mkdir()
    fixed = {"epochs": 3, "dropout": 0.3, "fine_tune_variables": 0}
    Executor(Executor.Context(tmp_dir=str(tmp_path / "tmp"), unique_id="1")).Do({"examples": [examples]}, outputs, {
        "tuner_fn": configs.TUNER_FN,
        "train_args": proto_utils.proto_to_json(trainer_pb2.TrainArgs(splits=["train"])),
        "eval_args": proto_utils.proto_to_json(trainer_pb2.EvalArgs(splits=["eval"])),
        "custom_config": json.dumps({"hyperparameters": fixed, "tuner_trials": 2}),
    })
    best = json.loads((tmp_path / "best_hyperparameters" / "best_hyperparameters.txt").read_text())
    trials = json.loads((tmp_path / "tuner_results" / "tuner_results.json").read_text())
    assert len(trials) == 2 and all(0.0 <= t["score"] <= 1.0 for t in trials)
    merged = hyperparameters_from({"hyperparameters": {"dropout": 0.3}}, best)
    assert merged["epochs"] == 3 and merged["dropout"] == 0.3   # explicit settings were held fixed
    searched = {name for name in configs.TUNER_SEARCH_SPACE if not name.startswith("fine_tune_")}
    assert {name: merged[name] for name in searched} == {name: trials[0][name] for name in searched}
    assert trials[0]["fine_tune_variables"] == 0  # fine-tuning off, so its settings are not searched:
    assert not any(name.startswith("fine_tune_") for name in set(trials[0]) - {"fine_tune_variables"})


def test_export_writes_warmup_records_with_the_in_process_answers_for_both_signatures(tmp_path, image_module):
    from tensorflow_serving.apis import prediction_log_pb2

    from image_retrain.warmup_records import read_warmup

    head = build_head(image_module.feature_dim, len(LABELS), dict(configs.HYPERPARAMETERS, hidden_units=8))
    export_dir = str(tmp_path / "export")
    images = [encoded((250, 0, 0), "JPEG"), encoded((0, 0, 250), "PNG", (300, 200)), encoded((0, 250, 0), "GIF")]
    export_serving_model(image_module, head, LABELS, export_dir, warmup_images=images)

    records = read_warmup(export_dir)
    assert [record.WhichOneof("log_type") for record in records] == ["predict_log", "classify_log"] * 2
    assert tf.io.gfile.exists(os.path.join(export_dir, "assets.extra", "tf_serving_warmup_requests"))
    batch_sizes = [len(r.predict_log.request.inputs["image_bytes"].string_val) if r.HasField("predict_log")
                   else len(r.classify_log.request.input.example_list.examples) for r in records]
    assert batch_sizes == [1, 1, 3, 3]
    # The recorded responses are the model's own answers, as TF Serving's loader computes them.
    loaded = tf.saved_model.load(export_dir)
    scores = loaded.signatures["serving_default"](image_bytes=tf.constant(images))["scores"].numpy()
    predicted = tf.make_ndarray(records[2].predict_log.response.outputs["scores"])
    np.testing.assert_allclose(predicted, scores, atol=1e-6)
    classified = [[c.score for c in item.classes] for item in records[3].classify_log.response.result.classifications]
    np.testing.assert_allclose(classified, scores, atol=1e-6)
    assert isinstance(records[0], prediction_log_pb2.PredictionLog)
