"""InputFingerprint executor: one string that changes whenever what ImageExampleGen would read changes.

It is the hash of the snapshot a local run compares with its last one (components/image_example_gen/snapshot.py:
ImageExampleGen's own listing, each file's label, split, size and modification time). Images added, removed, relabelled
or rewritten change it; a listing that did not change gives the same string.
"""
from __future__ import annotations

import logging
from typing import Any

from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.image_example_gen import snapshot
from image_retrain.contract import FINGERPRINT_KEY

log = logging.getLogger(__name__)

# Keys shared with component.py: the input, as ImageExampleGen takes it.
INPUT_BASE_KEY = "input_base"
MANIFEST_KEY = "manifest"
ALLOW_OUTSIDE_MANIFEST_KEY = "allow_paths_outside_manifest"


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        fingerprint = snapshot.fingerprint(snapshot.take(
            exec_properties.get(INPUT_BASE_KEY) or None, exec_properties.get(MANIFEST_KEY) or None,
            allow_paths_outside_manifest=bool(exec_properties.get(ALLOW_OUTSIDE_MANIFEST_KEY))))
        artifact_utils.get_single_instance(output_dict[FINGERPRINT_KEY]).write(fingerprint)
        log.info("input fingerprint: %s", fingerprint)
