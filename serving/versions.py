"""Which versions a model base path holds, by TF Serving's rule; shared by the server (serving.manager) and the
pipeline's pusher and baseline (components/atomic_pusher, components/served_model_baseline).

A version is a child directory whose name is a non-negative integer that fits int64 (FileSystemStoragePathSource
parses it into an int64: '00000123' is version 123). Anything else, like the pusher's hidden staging directory,
temporary folders or files, is not a version. A version is complete once it holds saved_model.pb (or .pbtxt): that
is the file TF Serving loads, and writers put it there last.

Paths go through tf.io.gfile, so local directories and object stores (gs://, s3://) are read alike, as TF Serving
reads them.
"""
from __future__ import annotations

import logging
import os

import tensorflow as tf

log = logging.getLogger(__name__)

SAVED_MODEL_FILE = "saved_model.pb"
SAVED_MODEL_FILES = (SAVED_MODEL_FILE, "saved_model.pbtxt")
_INT64_MAX = 2**63 - 1


def parse_version(name: str) -> int | None:
    """A child name ('123', '00000123', or 'gs://' listings' '123/') -> its version; None if it is not one."""
    name = name.rstrip("/")
    if not (name.isascii() and name.isdigit()):
        return None
    version = int(name)
    return version if version <= _INT64_MAX else None


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
