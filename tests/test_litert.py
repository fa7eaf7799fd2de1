"""LiteRT: the image module's checked conversion (embedding stage), model.tflite in the classifier export served with
--prefer_tflite_model, and the mobile exports (TFLite, Core ML).

Fast tests use a tiny image module built here; the e2e ones use the builtin EfficientNet-Lite0 with its own ImageNet
classifier as the trained head, so the shipped photos have known labels (a cat is a cat on every path).
"""
from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from ai_edge_litert import schema_py_generated as schema  # noqa: E402

from image_retrain import litert_conversion as litert  # noqa: E402
from image_retrain.image_module import load_image_module  # noqa: E402
from image_retrain.image_module.litert_engine import LiteRTImageModule, litert_module_path  # noqa: E402
from pipelines import configs  # noqa: E402
from pipelines.models.head import build_head  # noqa: E402
from pipelines.models.saved_model_export import export_serving_model  # noqa: E402


def read_metadata(model: bytes) -> dict[str, bytes]:
    """The flatbuffer's `metadata` table, read with the schema LiteRT itself ships (the inverse of with_metadata)."""
    root = schema.Model.GetRootAs(model, 0)
    entries = {}
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        entries[entry.Name().decode()] = root.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return entries

CAT_CLASSES = set(range(281, 286))  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
PHOTOS = ("chelsea", "coffee", "rocket")


def jpeg(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    skimage_data = pytest.importorskip("skimage.data")
    return {name: jpeg(getattr(skimage_data, name)()) for name in PHOTOS}


class TinyModule(tf.Module):
    """A real (small) image feature module: conv + ReLU + global mean, 32x32 RGB in [0, 1] -> 8 features."""

    def __init__(self, extra_op=None):
        super().__init__()
        self.kernel = tf.Variable(np.random.RandomState(0).normal(size=(3, 3, 3, 8)).astype(np.float32))
        self._extra_op = extra_op

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
    def __call__(self, images):
        features = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(images, self.kernel, 1, "SAME")), axis=[1, 2])
        return self._extra_op(features) if self._extra_op else features


def tiny_module_dir(root, extra_op=None) -> str:
    path = os.path.join(root, "tiny_module")
    tf.saved_model.save(TinyModule(extra_op), path)
    return path


def export_classifier(image_module, head, labels, export_dir) -> str:
    export_serving_model(image_module, head, labels, export_dir)
    return export_dir


# ------------------------------------------------------------------------------------------ embedding engine
def test_builtin_module_converts_and_matches_tf_on_photos(photos):
    from image_retrain.image_decoding import preprocess_batch

    module = load_image_module("efficientnet_lite0")
    model_path = litert_module_path("efficientnet_lite0", module)
    assert model_path and model_path.startswith(os.path.normpath(module.path) + ".litert" + os.sep)
    with open(model_path.replace(".tflite", ".check.json"), encoding="utf-8") as f:
        verdict = json.load(f)
    assert verdict["passed"] and verdict["max_abs_difference"] <= litert.TOLERANCE
    images = preprocess_batch(tf.constant(list(photos.values())), module.input_size)
    difference = np.abs(LiteRTImageModule(model_path)(images.numpy()) - module(images).numpy()).max()
    assert difference <= litert.TOLERANCE


def test_unconvertible_module_falls_back_to_tf_with_the_reason(tmp_path, caplog):
    path = tiny_module_dir(tmp_path, extra_op=lambda x: tf.linalg.svd(x[:, :4, tf.newaxis] * x[:, tf.newaxis, :4],
                                                                       compute_uv=False))
    with caplog.at_level(logging.WARNING):
        assert litert_module_path(path) is None
    assert "LiteRT conversion failed, embedding with TensorFlow" in caplog.text


def test_probe_difference_above_tolerance_falls_back_and_is_recorded(tmp_path, caplog, monkeypatch):
    path = tiny_module_dir(tmp_path)
    monkeypatch.setattr(litert, "TOLERANCE", -1.0)  # any difference, even 0, is now too large
    with caplog.at_level(logging.WARNING):
        assert litert_module_path(path) is None
    assert "differs from TensorFlow by" in caplog.text and "embedding with TensorFlow" in caplog.text
    (check,) = [f for f in os.listdir(path + ".litert") if f.endswith(".check.json")]
    with open(os.path.join(path + ".litert", check), encoding="utf-8") as f:
        assert json.load(f)["passed"] is False
    monkeypatch.undo()
    assert litert_module_path(path) is not None  # a changed tolerance verdict is re-probed, not trusted blindly


def test_embedding_stage_on_litert_equals_tf(photos, tmp_path):
    from components.image_embedder.executor import EmbedImages
    from image_retrain.contract import EMBEDDING_KEY, IMAGE_KEY, PATH_KEY

    def example(name, data):
        return tf.train.Example(features=tf.train.Features(feature={
            IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
            PATH_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
        })).SerializeToString()

    # Cache misses as the stage groups them: (sha256, [(split, serialized example)]).
    batch = [(name, [("train", example(name, data))]) for name, data in photos.items()]
    embeddings = {}
    for engine, model_path in (("tf", None), ("litert", litert_module_path("efficientnet_lite0"))):
        stage = EmbedImages("efficientnet_lite0", show_progress=False, litert_model_path=model_path)
        stage.setup()
        embeddings[engine] = np.array([tf.train.Example.FromString(output[1]).features.feature[EMBEDDING_KEY]
                                       .float_list.value for output in stage.process(batch)
                                       if isinstance(output, tuple)])
    assert embeddings["tf"].shape == (len(PHOTOS), 1280)
    assert np.abs(embeddings["tf"] - embeddings["litert"]).max() <= litert.TOLERANCE


# -------------------------------------------------------------------------------- export and served LiteRT
@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("tiny")
    module = load_image_module(tiny_module_dir(str(root)))
    head = build_head(module.feature_dim, 3, dict(configs.HYPERPARAMETERS))
    return export_classifier(module, head, ["red", "green", "blue"], str(root / "classifier" / "1"))


def test_export_writes_model_tflite_with_labels_beside_the_saved_model(tiny_classifier):
    assert {"assets", "model.tflite", "saved_model.pb", "variables"} <= set(os.listdir(tiny_classifier))
    with open(os.path.join(tiny_classifier, "model.tflite"), "rb") as f:
        metadata = read_metadata(f.read())
    assert metadata["labels.txt"] == b"red\ngreen\nblue\n"
    assert json.loads(metadata["image_retrain.json"])["input"]["shape"] == [-1, 32, 32, 3]
    interpreter = litert.interpreter(os.path.join(tiny_classifier, "model.tflite"))
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["images"], "outputs": ["scores"]}}


def test_fine_tuned_module_weights_are_what_model_tflite_holds(tmp_path, photos):
    """Fine-tuning changes the module's variables in place before the export; the LiteRT file must carry them."""
    module = load_image_module(tiny_module_dir(str(tmp_path)))
    head = build_head(module.feature_dim, 2, dict(configs.HYPERPARAMETERS))
    images = litert.probe_images(module.input_size)
    before = head(module(tf.constant(images))).numpy()
    kernel = module.module.kernel
    kernel.assign(kernel * -0.5)  # what fine_tune's variable updates do
    export_dir = export_classifier(module, head, ["a", "b"], str(tmp_path / "1"))
    scores = litert.SignatureFunction(model_path=os.path.join(export_dir, "model.tflite"))(images=images)["scores"]
    loaded = tf.saved_model.load(export_dir)  # held: a restored function needs its object alive
    served = loaded.network(tf.constant(images))["scores"].numpy()
    assert np.abs(scores - served).max() <= litert.TOLERANCE
    assert np.abs(scores - before).max() > 1e-3


@pytest.fixture
def make_server():
    """make_server(model_dir, **ServerOptions) -> a started server on free loopback ports; stopped after the test."""
    import portpicker

    from serving.server import ModelServer, ServerOptions

    servers = []

    def factory(model_dir, **options):
        server = ModelServer(ServerOptions(
            port=portpicker.pick_unused_port(), rest_api_port=portpicker.pick_unused_port(), bind_address="127.0.0.1",
            model_name="classifier", model_base_path=os.path.dirname(model_dir), **options))
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop(grace_seconds=2)


def predict_both(make_server, model_dir, images, **options) -> dict[bool, dict]:
    """The same images through real gRPC and REST clients of a SavedModel server (False) and a
    --prefer_tflite_model server (True): Predict outputs, Classify results, REST metadata."""
    from serving.client import RestClient
    from serving.grpc_client import GrpcClient

    results = {}
    for prefer in (False, True):
        server = make_server(model_dir, prefer_tflite_model=prefer, **options)
        client = GrpcClient(f"127.0.0.1:{server.grpc_port}")
        try:
            response = client.predict("classifier", {"image_bytes": np.array(images, dtype=object)})
            results[prefer] = {
                "scores": tf.make_ndarray(response.outputs["scores"]),
                "label": [v.decode() for v in tf.make_ndarray(response.outputs["label"])],
                "classify": client.classify_images("classifier", images),
                "metadata": RestClient(f"http://127.0.0.1:{server.rest_port}").metadata("classifier"),
            }
        finally:
            client.close()
    return results


def assert_same_results(results: dict[bool, dict]) -> None:
    saved_model, lite = results[False], results[True]
    assert lite["label"] == saved_model["label"]
    assert np.abs(lite["scores"] - saved_model["scores"]).max() <= litert.TOLERANCE
    for tf_classes, lite_classes in zip(saved_model["classify"], lite["classify"]):
        assert [label for label, _ in lite_classes] == [label for label, _ in tf_classes]
        assert np.abs(np.array([s for _, s in tf_classes]) - np.array([s for _, s in lite_classes])).max() <= 1e-4
    assert lite["metadata"] == saved_model["metadata"]  # same signatures, inputs and outputs


def test_prefer_tflite_model_serves_the_same_signatures_and_scores(make_server, tiny_classifier, photos):
    from serving.litert_version import LiteRTVersion

    results = predict_both(make_server, tiny_classifier, list(photos.values()), enable_batching=True)
    assert_same_results(results)
    loaded = make_server(tiny_classifier, prefer_tflite_model=True).manager.resolve("classifier")
    loaded.release()
    assert isinstance(loaded, LiteRTVersion)


def test_test_time_views_serve_the_mean_over_the_eight_symmetries_on_tf_and_on_litert(make_server, tmp_path):
    """test_time_views=8: every rotation and mirror image of a picture is served the same scores, the mean of the
    network's own scores over the eight; --prefer_tflite_model (views in the TF steps around the one-view
    model.tflite) serves the same."""
    from PIL import Image

    module = load_image_module(tiny_module_dir(str(tmp_path)))
    head = build_head(module.feature_dim, 3, dict(configs.HYPERPARAMETERS))
    export_dir = str(tmp_path / "classifier" / "1")
    export_serving_model(module, head, ["red", "green", "blue"], export_dir, test_time_views=8)
    ramps = np.linspace(0, 255, 32)
    picture = np.stack(np.broadcast_arrays(ramps[np.newaxis, :], ramps[:, np.newaxis] ** 2 / 255, 0 * ramps), -1)
    picture[:8, :8] = [255, 255, 255]  # a bright corner: no symmetry of its own
    symmetries = [np.rot90(picture, turns) for turns in range(4)]
    symmetries = [symmetry.astype(np.uint8) for symmetry in symmetries + [np.fliplr(s) for s in symmetries]]
    pngs = []
    for symmetry in symmetries:
        buffer = io.BytesIO()
        Image.fromarray(symmetry).save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    results = predict_both(make_server, export_dir, pngs)
    assert_same_results(results)
    served = results[False]["scores"]
    assert np.abs(served - served[0]).max() <= 1e-5
    loaded = tf.saved_model.load(export_dir)  # held: a restored function needs its object alive
    one_view = loaded.network(tf.constant(np.stack(symmetries) / 255.0, tf.float32))["scores"].numpy()
    assert np.abs(one_view - one_view[0]).max() > 1e-4  # the network alone tells them apart
    np.testing.assert_allclose(served[0], one_view.mean(axis=0), atol=1e-5)


def test_prefer_tflite_model_serves_a_plain_tflite_with_its_own_signatures(make_server, tmp_path):
    """TF Serving's testPredictOnTfLite case: y = 0.5 x + 2 as model.tflite (upstream's half_plus_two tflite, rebuilt),
    alone in its version folder, and beside a SavedModel without TF steps; no model.tflite: the SavedModel."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "serving"))
    from model_fixtures import write_half_plus_two

    from serving.grpc_client import GrpcClient
    from serving.litert_version import LiteRTVersion
    from serving.saved_model_version import SavedModelVersion

    half_plus_two = tf.Module()
    half_plus_two.function = tf.function(lambda x: {"y": 0.5 * x + 2},
                                         input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    model = litert.convert(half_plus_two.function.get_concrete_function(), half_plus_two)
    tflite_only = tmp_path / "tflite_only" / "123"
    tflite_only.mkdir(parents=True)
    (tflite_only / "model.tflite").write_bytes(model)
    beside_saved_model = write_half_plus_two(str(tmp_path / "half" / "1"))
    for version_dir, kind in ((beside_saved_model, SavedModelVersion), (str(tflite_only), LiteRTVersion),
                              (beside_saved_model, LiteRTVersion)):
        server = make_server(version_dir, prefer_tflite_model=True)
        loaded = server.manager.resolve("classifier")
        loaded.release()
        assert type(loaded) is kind
        if kind is SavedModelVersion:
            (Path(version_dir) / "model.tflite").write_bytes(model)  # the next round serves it
            continue
        assert sorted(loaded.signatures) == ["serving_default"]
        client = GrpcClient(f"127.0.0.1:{server.grpc_port}")
        try:
            response = client.predict("classifier", {"x": np.array([2.0, 4.0], np.float32)})
            assert tf.make_ndarray(response.outputs["y"]).tolist() == [3.0, 4.0]
            with pytest.raises(Exception, match="x") as error:
                client.predict("classifier", {"z": np.array([2.0], np.float32)})
            assert "INVALID_ARGUMENT" in str(getattr(error.value, "code", error.value))
        finally:
            client.close()


# ------------------------------------------------------------------ the real module on the shipped photos (e2e)
@pytest.fixture(scope="module")
def imagenet_classifier(tmp_path_factory) -> str:
    """EfficientNet-Lite0 + a head holding its own ImageNet classifier weights, exported like a trained model."""
    from image_retrain.image_module.convert import IMAGENET_LABELS

    module = load_image_module("efficientnet_lite0")
    with open(os.path.join(module.path, IMAGENET_LABELS), encoding="utf-8") as f:
        labels = [line.rstrip("\n") for line in f]
    head = build_head(module.feature_dim, len(labels), {**configs.HYPERPARAMETERS, "hidden_units": 0})
    head.get_layer("scores").set_weights([module.module.classifier_kernel.numpy(),
                                          module.module.classifier_bias.numpy()])
    return export_classifier(module, head, labels, str(tmp_path_factory.mktemp("imagenet") / "classifier" / "1"))


@pytest.mark.e2e
def test_served_imagenet_classifier_litert_equals_saved_model_on_photos(make_server, imagenet_classifier, photos):
    results = predict_both(make_server, imagenet_classifier, [photos[name] for name in PHOTOS], enable_batching=True)
    assert_same_results(results)
    assert int(np.argmax(results[True]["scores"][0])) in CAT_CLASSES


@pytest.mark.e2e
def test_mobile_tflite_export_classifies_photos_like_the_saved_model(imagenet_classifier, photos, tmp_path):
    from image_retrain.image_decoding import preprocess_batch
    from pipelines import cli

    out = str(tmp_path / "classifier.tflite")
    assert cli.main(["export", "--format", "tflite", imagenet_classifier, out]) == 0
    with open(out, "rb") as f:
        model = f.read()
    labels = read_metadata(model)["labels.txt"].decode().splitlines()
    runner = litert.SignatureFunction(model=model)
    loaded = tf.saved_model.load(imagenet_classifier)  # held: its signatures need the object alive
    saved_model = loaded.signatures["serving_default"]
    for name in PHOTOS:  # one image per call, as an app would
        image = preprocess_batch(tf.constant([photos[name]]), (224, 224)).numpy()
        scores = runner(images=image)["scores"][0]
        served = saved_model(image_bytes=tf.constant([photos[name]]))
        assert labels[int(np.argmax(scores))] == served["label"].numpy()[0].decode()
        assert np.abs(scores - served["scores"].numpy()[0]).max() <= litert.TOLERANCE
    assert int(np.argmax(runner(images=preprocess_batch(tf.constant([photos["chelsea"]]), (224, 224)).numpy())
                         ["scores"][0])) in CAT_CLASSES


def coreml_class_labels(spec) -> list[str]:
    """The class labels an ML Program classifier carries: the string tensor bound to its `classify` op's classes."""
    main = spec.mlProgram.functions["main"]
    (classify,) = [op for op in main.block_specializations[main.opset].operations if op.type == "classify"]
    (classes,) = classify.inputs["classes"].arguments
    return [value for item in classes.value.immediateValue.list.values
            for value in item.immediateValue.tensor.strings.values]


@pytest.mark.e2e
def test_coreml_export_is_a_classifier_over_the_labels(imagenet_classifier, tmp_path):
    ct = pytest.importorskip("coremltools")
    from pipelines import cli

    out = str(tmp_path / "classifier.mlpackage")
    assert cli.main(["export", "--format", "coreml", imagenet_classifier, out]) == 0
    spec = ct.models.MLModel(out, skip_model_load=True).get_spec()
    (image_input,) = spec.description.input
    assert image_input.name == "images" and image_input.type.imageType.width == 224
    assert image_input.type.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    assert [o.name for o in spec.description.output] == ["classLabel", "classLabel_probs"]
    with open(os.path.join(imagenet_classifier, "assets", "labels.txt"), encoding="utf-8") as f:
        assert coreml_class_labels(spec) == f.read().splitlines()


def test_litert_runs_stop_at_the_deadline(tiny_classifier, photos):
    """A LiteRT invocation cannot be cancelled, so the served version checks the request's remaining time between
    its steps and images (issue 25 item 9): a request whose deadline passes during the run stops there with
    DEADLINE_EXCEEDED instead of running every image for a client that is gone."""
    import grpc

    from serving.errors import ServingError
    from serving.litert_version import LiteRTVersion

    version = LiteRTVersion("classifier", 1, tiny_classifier)
    try:
        images = np.array(list(photos.values()) * 16, dtype=object)
        assert version.run("serving_default", {"image_bytes": images}, ["label"])["label"].shape == (len(images),)
        with pytest.raises(ServingError) as error:
            version.run("serving_default", {"image_bytes": images}, ["label"], timeout_ms=1)
        assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        version.unload()
