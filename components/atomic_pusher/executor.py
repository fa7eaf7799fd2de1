"""Pusher executor that publishes a version under a TF Serving model base path so that no server loads it half-copied.

TFX's Pusher (since TFX 1.6, tensorflow/tfx#4466) copies the model straight into `<base>/<unix time>/` with
saved_model.pb last, since TF Serving only loads a version once that file is there. What this executor adds:
- on a local filesystem the version is copied to a hidden sibling directory (not a number, so TF Serving ignores it)
  and renamed into place. A POSIX rename is atomic, so a polling server never sees the version incomplete (copied in
  place, the folder shows up first and the server may log failed load attempts until saved_model.pb arrives).
  Staging folders a push left behind when it died are removed once nothing was written in them for an hour.
  Object stores have no atomic rename (on gs:// a rename is a copy and a delete per object, in no guaranteed order),
  so there the version is copied in place with saved_model.pb last, as TFX's Pusher does;
- the version number is strictly greater than every existing one (TFX's Pusher skips a second push in one second);
- a staged rollout (custom_config `rollout: canary`): the new version goes out under the `canary` label of the model
  config file beside the versions, stable traffic stays where it was (`stage`, image_retrain/rollout.py);
- it also gates on the InfraBlessing of the load-and-query check, as TFX's Pusher does (CheckBlessing).
"""
from __future__ import annotations

import logging
import os
import re
import time
import uuid
from typing import Any

from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, json_utils, proto_utils

from image_retrain import rollout, step_results
from image_retrain.paths import is_uri
from serving import versions

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
# No push writes nothing into its staging folder for this long: one that did was killed (a pod, a full disk).
STALE_STAGING_SECONDS = 3600

# custom_config keys (the pipeline's rollout options), and the rollouts.
ROLLOUT_KEY, MODEL_NAME_KEY, SERVING_URLS_KEY = "rollout", "model_name", "serving_urls"
DIRECT, CANARY = "direct", "canary"
ROLLOUTS = (DIRECT, CANARY)


def next_version(base_directory: str, now: float | None = None) -> int:
    """Unix-timestamp version, strictly greater than every existing version (two pushes in one second)."""
    existing = versions.version_directories(base_directory) or {}
    return max([int(now if now is not None else time.time())] + [v + 1 for v in existing])


def renames_atomically(path: str) -> bool:
    """POSIX file systems rename atomically; object stores copy and delete object by object."""
    return not is_uri(path) or path.startswith("file://")


def sweep_stale_staging(base_directory: str, now: float | None = None) -> list[str]:
    """Removes the staging folders under `base_directory` in which nothing was written for STALE_STAGING_SECONDS
    (the newest modification anywhere inside counts, so a copy still running is kept); returns their paths."""
    now = time.time() if now is None else now
    swept = []
    for name in fileio.listdir(base_directory):
        path = os.path.join(base_directory, name.rstrip("/"))
        if not name.startswith(STAGING_PREFIX):
            continue
        newest = max(fileio.stat(os.path.join(folder, entry)).mtime_nsec / 1e9
                     for folder, dirs, files in fileio.walk(path) for entry in [".", *dirs, *files])
        if now - newest > STALE_STAGING_SECONDS:
            fileio.rmtree(path)
            swept.append(path)
            log.info("Removed %s, left by a push that did not finish", path)
    return swept


def publish(model_path: str, base_directory: str, atomic_rename: bool | None = None) -> tuple[str, str]:
    """Copies `model_path` to `<base_directory>/<version>`: through a renamed staging directory where renames are
    atomic (`atomic_rename`, default: local paths), else in place with saved_model.pb last. Returns (path, version)."""
    fileio.makedirs(base_directory)
    version = str(next_version(base_directory))
    final = os.path.join(base_directory, version)
    if not (renames_atomically(base_directory) if atomic_rename is None else atomic_rename):
        saved_model = os.path.join(model_path.rstrip("/"), versions.SAVED_MODEL_FILE)
        io_utils.copy_dir(model_path, final, deny_regex_patterns=[f"^{re.escape(saved_model)}$"])
        if fileio.exists(saved_model):
            io_utils.copy_file(saved_model, os.path.join(final, versions.SAVED_MODEL_FILE))
        return final, version
    sweep_stale_staging(base_directory)
    staging = os.path.join(base_directory, f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    try:
        io_utils.copy_dir(model_path, staging)
        fileio.rename(staging, final)
    finally:
        if fileio.exists(staging):
            fileio.rmtree(staging)
    return final, version


def stage(base_directory: str, version: int, mode: str, model_name: str | None, server_urls: list[str]) -> str | None:
    """Moves the rollout's labels for the published `version` (image_retrain/rollout.py): `canary` puts it out as the
    canary; `direct` gives it every label, and without a rollout config leaves the plain base path as it is (TF
    Serving's `latest` policy serves it). Returns what it did, or None when there was nothing to do."""
    if mode not in ROLLOUTS:
        raise ValueError(f"{ROLLOUT_KEY} must be one of {ROLLOUTS}, got {mode!r}")
    current = rollout.read(base_directory)
    if mode == CANARY:
        served = max((v for v, path in (versions.version_directories(base_directory) or {}).items()
                      if v != version and versions.is_complete(path)), default=None)
        steps = rollout.plan_canary(current, version, model_name=model_name, base_path=base_directory, served=served)
    else:
        steps = rollout.plan_direct(current, version)
    if not steps:
        return None
    try:
        return rollout.apply(steps, rollout.servers_waiter(server_urls) if server_urls else None).describe()
    except (rollout.Pending, TimeoutError) as waiting:  # the version is published; the labels stay where they were
        return str(waiting)


class Executor(tfx_pusher_executor.Executor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            step_results.report("push", "model not blessed: nothing pushed")
            return
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError(f"push destination {destination.WhichOneof('destination')} is not supported")
        model_path = self.GetModelPath(input_dict)
        base_directory = destination.filesystem.base_directory
        serving_path, version = publish(model_path, base_directory)
        step_results.report("push", f"model version {version} published at {serving_path}")
        io_utils.copy_dir(model_path, model_push.uri)  # archived copy, as the stock Pusher keeps
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)
        settings = json_utils.loads(exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "null") or {}
        staged = stage(base_directory, int(version), settings.get(ROLLOUT_KEY, DIRECT), settings.get(MODEL_NAME_KEY),
                       settings.get(SERVING_URLS_KEY) or [])
        if staged:
            step_results.report("rollout", staged)
