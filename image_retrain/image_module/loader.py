"""The one image-module loader that training and serving share.

A handle is one of:
  * a builtin name (`efficientnet_lite0`): the converted SavedModel under `default_models_dir()`, converted on
    first use when the [convert] extra is installed;
  * a local SavedModel directory (or `file://` URL to one);
  * a SavedModel directory on object storage (`gs://...`), loaded from there by TensorFlow's own filesystem;
  * a TF Hub / Kaggle model URL (`https://...`): resolved by `tensorflow_hub.resolve`, which serves it from the TF Hub
    cache (`$TFHUB_CACHE_DIR`, `<cache>/<sha1 of the handle>`) and downloads it there when it is missing;
  * the name of an entry in `$TFHUB_CACHE_DIR` (a sha1 directory name).

Loading is `tf.saved_model.load` on the resolved directory, which is what `hub.load` does; `hub.KerasLayer` does not
work with Keras 3. tensorflow-hub is 0.16.1 although TFX 1.21 pins <0.16: see requirements-overrides.txt.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import tempfile
import urllib.parse
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

from image_retrain.contract import DEFAULT_MODULE_HANDLE
from image_retrain.image_module.builtin import BUILTIN_MODULES, builtin_module_dir
from image_retrain.image_module.errors import ImageModuleError
from image_retrain.paths import is_uri

log = logging.getLogger(__name__)

TFHUB_CACHE_DIR_ENV = "TFHUB_CACHE_DIR"
# tensorflow_hub's default when TFHUB_CACHE_DIR is unset.
_DEFAULT_TFHUB_CACHE = os.path.join(tempfile.gettempdir(), "tfhub_modules")
# When a module's serving input has no static height/width, TF Hub image modules default to 224x224.
_DEFAULT_INPUT_SIZE = (224, 224)


@dataclass
class ImageModule:
    """A loaded image feature-vector module: `module(images)` maps float32 [B, h, w, 3] in [0, 1] to
    float32 [B, feature_dim]. Works eagerly and inside `tf.function`.

    To export it inside another SavedModel, track `image_module.module` (the TF object) as an attribute of your
    `tf.Module`, not this Python wrapper: only trackable attributes (and their variables) are saved.
    """

    handle: str
    path: str
    identity: str
    input_size: tuple[int, int]
    feature_dim: int
    module: Any = field(repr=False)
    _call: Callable = field(repr=False, compare=False, default=None)

    def __post_init__(self):
        if self._call is None:
            self._call = _make_call(self.module, self.handle)

    def __call__(self, images):
        return self._call(images)


def tfhub_cache_dir() -> str:
    return os.environ.get(TFHUB_CACHE_DIR_ENV) or _DEFAULT_TFHUB_CACHE


def _gfile():
    import tensorflow as tf  # noqa: PLC0415 - only for object-store paths: local ones answer CLI checks without loading TensorFlow

    return tf.io.gfile


def _is_file(path: str) -> bool:
    return _gfile().exists(path) and not _gfile().isdir(path) if is_uri(path) else os.path.isfile(path)


def _open_binary(path: str):
    return _gfile().GFile(path, "rb") if is_uri(path) else open(path, "rb")


def module_identity(path: str) -> str:
    """sha256 over the graph and the variables index of a SavedModel. The index stores a checksum of every tensor,
    so the same files give the same identity and different weights a different one, without hashing the data."""
    digest = hashlib.sha256()
    found = False
    for relative in ("saved_model.pb", "saved_model.pbtxt", os.path.join("variables", "variables.index")):
        file_path = os.path.join(path, relative)
        if _is_file(file_path):
            found = True
            digest.update(relative.replace(os.sep, "/").encode() + b"\0")
            with _open_binary(file_path) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
    if not found:
        raise ImageModuleError(f"{path} is not a SavedModel directory (no saved_model.pb)")
    return digest.hexdigest()


def _is_saved_model_dir(path: str) -> bool:
    return _is_file(os.path.join(path, "saved_model.pb")) or _is_file(os.path.join(path, "saved_model.pbtxt"))


def _is_url(handle: str) -> bool:
    return urllib.parse.urlparse(handle).scheme in ("http", "https")


def _resolve_builtin(name: str) -> str:
    from image_retrain.image_module.convert import convert_builtin, is_complete_conversion  # noqa: PLC0415 - converting imports torch (the [convert] extra)

    path = builtin_module_dir(name)
    if is_complete_conversion(path):
        return path
    log.info("builtin image module %s is not converted yet at %s; converting now", name, path)
    try:
        return convert_builtin(name)
    except ImageModuleError as e:
        raise ImageModuleError(f"builtin image module {name!r} is missing at {path} and cannot be converted "
                               f"here: {e}") from e


def _resolve_hub_url(handle: str) -> str:
    import tensorflow as tf  # noqa: PLC0415 - loading a module needs TF; resolving handles for CLI checks does not

    with warnings.catch_warnings():  # hub's own import of pkg_resources warns; a user can do nothing about it
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import tensorflow_hub as hub  # noqa: PLC0415 - only for URL handles; it loads TF

    try:
        path = hub.resolve(handle)
    except (OSError, ValueError, tarfile.TarError, tf.errors.OpError) as e:  # urllib's errors are OSErrors
        raise ImageModuleError(
            f"cannot resolve image module {handle!r} offline: it is not in the TF Hub cache "
            f"({TFHUB_CACHE_DIR_ENV}={tfhub_cache_dir()}) and downloading it failed: {e}. "
            f"Put the unpacked SavedModel in that cache, set {TFHUB_CACHE_DIR_ENV} to a cache that has it, "
            f"pass a local SavedModel directory, or use the builtin {DEFAULT_MODULE_HANDLE!r}.") from e
    if not _is_saved_model_dir(path):
        raise ImageModuleError(f"image module {handle!r} resolved to {path}, which holds no saved_model.pb")
    return path


def resolve_handle(handle: str) -> str:
    """Handle -> SavedModel directory (converting or downloading if needed), or a clear ImageModuleError."""
    if not handle or not isinstance(handle, str):
        raise ImageModuleError(f"image module handle must be a non-empty string, got {handle!r}")
    if handle in BUILTIN_MODULES:
        return _resolve_builtin(handle)
    if _is_url(handle):
        return _resolve_hub_url(handle)
    path = handle[len("file://"):] if handle.startswith("file://") else handle
    if is_uri(path):
        if not _is_saved_model_dir(path):
            raise ImageModuleError(f"image module {path} holds no saved_model.pb (or it cannot be read)")
        return path.rstrip("/")
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        if not _is_saved_model_dir(path):
            raise ImageModuleError(f"image module directory {path} holds no saved_model.pb")
        return os.path.abspath(path)
    cache_entry = os.path.join(tfhub_cache_dir(), handle)
    if os.sep not in handle and _is_saved_model_dir(cache_entry):
        return cache_entry
    raise ImageModuleError(
        f"cannot resolve image module handle {handle!r}: not a builtin ({', '.join(sorted(BUILTIN_MODULES))}), "
        f"not an existing SavedModel directory, not an http(s) model URL, and not an entry in "
        f"{TFHUB_CACHE_DIR_ENV}={tfhub_cache_dir()}")


def _image_spec_and_output(module, handle: str):
    """Finds the image input spec and the feature output spec, preferring the serving_default signature (what
    TF Serving and TF Hub document) and falling back to the module's own __call__."""
    import tensorflow as tf  # noqa: PLC0415 - loading a module needs TF; resolving handles for CLI checks does not

    signatures = getattr(module, "signatures", None) or {}
    candidates = []
    if "serving_default" in signatures:
        candidates.append(signatures["serving_default"])
    call = getattr(module, "__call__", None)
    for concrete in getattr(call, "concrete_functions", None) or []:
        candidates.append(concrete)
    for concrete in candidates:
        args, kwargs = concrete.structured_input_signature
        specs = [s for s in tf.nest.flatten((args, kwargs))
                 if isinstance(s, tf.TensorSpec) and s.dtype == tf.float32 and s.shape.rank == 4]
        if len(specs) != 1:
            continue
        outputs = concrete.structured_outputs
        if isinstance(outputs, dict) and len(outputs) > 1:
            preferred = [k for k in ("feature_vector", "default", "output_0") if k in outputs]
            outputs = outputs[preferred[0]] if preferred else None
        flat_outputs = tf.nest.flatten(outputs) if outputs is not None else []
        output_spec = flat_outputs[0] if len(flat_outputs) == 1 else None
        return specs[0], output_spec
    raise ImageModuleError(f"image module {handle!r} has neither a serving_default signature nor a __call__ that "
                           f"takes one float32 [batch, height, width, 3] image tensor")


def _make_call(module, handle: str) -> Callable:
    """module(images) for TF2 modules (TF Hub's reusable-SavedModel API); else the serving_default signature."""
    if callable(module) and getattr(module, "__call__", None) is not None \
            and getattr(module.__call__, "concrete_functions", None):
        return module.__call__
    signatures = getattr(module, "signatures", None) or {}
    if "serving_default" not in signatures:
        raise ImageModuleError(f"image module {handle!r} is not callable and has no serving_default signature")
    signature = signatures["serving_default"]
    (input_name,) = signature.structured_input_signature[1].keys()
    outputs = signature.structured_outputs
    preferred = [k for k in ("feature_vector", "default", "output_0") if k in outputs]
    output_name = preferred[0] if preferred else next(iter(outputs))

    def call_signature(images):
        return signature(**{input_name: images})[output_name]

    return call_signature


def load_image_module(handle: str = DEFAULT_MODULE_HANDLE) -> ImageModule:
    """Resolves `handle` (see module docstring) and loads it with tf.saved_model.load.

    Input size and feature dimension are read from the module's signature; when the module leaves them dynamic,
    input size defaults to 224x224 and the feature dimension is measured by one call on a black image.
    """
    import tensorflow as tf  # noqa: PLC0415 - loading a module needs TF; resolving handles for CLI checks does not

    path = resolve_handle(handle)
    try:
        module = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001 - TF raises many types; the handle and path make the message useful
        raise ImageModuleError(f"cannot load image module {handle!r} from {path}: {e}") from e
    input_spec, output_spec = _image_spec_and_output(module, handle)
    height, width = input_spec.shape[1], input_spec.shape[2]
    input_size = (int(height), int(width)) if height is not None and width is not None else _DEFAULT_INPUT_SIZE
    call = _make_call(module, handle)
    feature_dim = output_spec.shape[-1] if output_spec is not None and output_spec.shape.rank == 2 else None
    if feature_dim is None:
        probe = call(tf.zeros([1, input_size[0], input_size[1], 3], tf.float32))
        if probe.shape.rank != 2:
            raise ImageModuleError(f"image module {handle!r} returns shape {probe.shape}, not [batch, features]")
        feature_dim = probe.shape[-1]
    return ImageModule(handle=handle, path=path, identity=module_identity(path), input_size=input_size,
                       feature_dim=int(feature_dim), module=module, _call=call)
