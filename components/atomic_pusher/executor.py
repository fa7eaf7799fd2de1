"""Pusher executor that publishes a version atomically under a TF Serving model base path.

The stock Pusher copies files straight into `<base>/<version>/`, so a server polling the base path can see (and fail
to load) a half-copied version. Here the model is copied to a hidden sibling directory, which TF Serving ignores
because its name is not a number, then renamed into place in one step.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Any

from absl import logging
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from serving import versions


def next_version(base_directory: str, now: float | None = None) -> int:
    """Unix-timestamp version, strictly greater than every existing version (two pushes in one second)."""
    existing = versions.version_directories(base_directory) or {}
    return max([int(now if now is not None else time.time())] + [v + 1 for v in existing])


def publish_atomically(model_path: str, base_directory: str) -> tuple[str, str]:
    """Copies `model_path` to `<base_directory>/<version>` via a hidden staging directory; returns (path, version)."""
    fileio.makedirs(base_directory)
    version = str(next_version(base_directory))
    staging = os.path.join(base_directory, f".staging-{version}-{uuid.uuid4().hex[:8]}")
    final = os.path.join(base_directory, version)
    try:
        io_utils.copy_dir(model_path, staging)
        fileio.rename(staging, final)
    finally:
        if fileio.exists(staging):
            fileio.rmtree(staging)
    return final, version


class Executor(tfx_pusher_executor.Executor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            print("[push] model not blessed: nothing pushed", flush=True)
            return
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError(f"push destination {destination.WhichOneof('destination')} is not supported")
        model_path = self.GetModelPath(input_dict)
        serving_path, version = publish_atomically(model_path, destination.filesystem.base_directory)
        logging.info("Model version %s published at %s", version, serving_path)
        print(f"[push] model version {version} published at {serving_path}", flush=True)
        io_utils.copy_dir(model_path, model_push.uri)  # archived copy, as the stock Pusher keeps
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)
