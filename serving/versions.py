"""Which versions a model base path holds, by TF Serving's rule (serving.model_format); the one scanner the server
(serving.manager), the pusher, the baseline, `image-retrain export`, the benchmarks and the tests use.

Paths go through tf.io.gfile, so local directories and object stores (gs://) are read alike, as TF Serving reads them.
"""
from __future__ import annotations

import logging
import os

import tensorflow as tf

from serving.model_format import SAVED_MODEL_FILE, SAVED_MODEL_FILES, parse_version

log = logging.getLogger(__name__)


def version_directories(base_path: str) -> dict[int, str] | None:
    """{version: path} of the version directories under `base_path`, complete or not; None when it does not exist."""
    try:
        names = tf.io.gfile.listdir(base_path)
    except tf.errors.NotFoundError:
        return None
    versions: dict[int, str] = {}
    for name in names:
        version = parse_version(name)
        if version is None:
            continue
        path = os.path.join(base_path, name.rstrip("/"))
        if not tf.io.gfile.isdir(path):
            continue
        if version in versions:
            log.warning("Two version directories parse to %d under %s; using %s", version, base_path, path)
        versions[version] = path
    return versions


def is_complete(version_path: str) -> bool:
    """Whether the version directory holds its SavedModel file (what a loader needs, and what is written last)."""
    return any(tf.io.gfile.exists(os.path.join(version_path, name)) for name in SAVED_MODEL_FILES)


def newest_complete_version(base_path: str) -> tuple[int, str] | None:
    """(version, path) of the version TF Serving's default `latest` policy ends up serving: the newest complete one
    (a newer incomplete version fails to load, and the older one keeps serving). None if there is none."""
    for version, path in sorted((version_directories(base_path) or {}).items(), reverse=True):
        if is_complete(path):
            return version, path
        log.warning("Skipping version %d: %s holds no %s", version, path, SAVED_MODEL_FILE)
    return None


def version_folder(model_dir: str) -> str:
    """A version folder as given, or the newest complete version of a model base path."""
    if is_complete(model_dir):
        return model_dir
    newest = newest_complete_version(model_dir)
    if newest is None:
        raise ValueError(f"{model_dir} is neither a SavedModel folder nor a model base path with a complete numeric "
                         "version")
    return newest[1]
