"""Which pushed version a batch prediction runs: the one TF Serving would answer with for the same request.

Under a model base path (SERVING_DIR/MODEL) the versions are TF Serving's numeric folders (serving/versions.py). With
no choice given, the newest complete one, as TF Serving's default `latest` policy serves; `--version N` that folder;
`--label stable|canary` the version the staged rollout's config file (serving.model_format.ROLLOUT_CONFIG_FILE, read by
image_retrain/rollout.py) names under that label, as a client addressing the label gets. The model name is the base
path's folder name, as the pipeline pushes it (`--serving-dir`/`--model-name`).
"""
from __future__ import annotations

import dataclasses
import os

from image_retrain import rollout
from serving import versions
from serving.model_format import ROLLOUT_CONFIG_FILE, SAVED_MODEL_FILE


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: str


def resolve(model_dir: str, version: int | None = None, label: str | None = None) -> ModelVersion:
    """The chosen version of the model at `model_dir`; a ValueError saying what is missing when there is none."""
    if version is not None and label is not None:
        raise ValueError("give --version or --label, not both")
    base = model_dir.rstrip("/")
    folders = versions.version_directories(base)
    if folders is None:
        raise ValueError(f"no model directory {base}: give --model-dir SERVING_DIR/MODEL, the model's base path")
    name = os.path.basename(base)
    if label is not None:
        version = _labelled_version(base, label)
    if version is None:
        newest = versions.newest_complete_version(base)
        if newest is None:
            if versions.is_complete(base):
                raise ValueError(f"{base} is a version folder: give --model-dir its parent (the model's base path), "
                                 "and --version to choose it")
            raise ValueError(f"{base} holds no complete version (a numeric folder with {SAVED_MODEL_FILE}): has the "
                             "pipeline pushed a model there?")
        return ModelVersion(name, *newest)
    path = folders.get(version)
    if path is None or not versions.is_complete(path):
        complete = sorted(v for v, p in folders.items() if versions.is_complete(p))
        chosen = f"version {version}" + (f" (label {label!r})" if label is not None else "")
        raise ValueError(f"{chosen} is not a complete version under {base}; complete versions: "
                         f"{', '.join(map(str, complete)) or 'none'}")
    return ModelVersion(name, version, path)


def _labelled_version(base: str, label: str) -> int:
    current = rollout.read(base)
    if current is None:
        raise ValueError(f"unknown label {label!r}: {base} has no version labels (no staged rollout in its "
                         f"{ROLLOUT_CONFIG_FILE}); leave --label out to use the newest version")
    labels = {name: version for name, version in ((rollout.STABLE, current.stable), (rollout.CANARY, current.canary))
              if version is not None}
    if label not in labels:
        known = ", ".join(f"{name} (version {version})" for name, version in labels.items()) or "none yet"
        raise ValueError(f"unknown label {label!r} under {base}; its labels: {known}")
    return labels[label]
