"""InputFingerprint executor: one string that changes whenever what ImageExampleGen would read changes.

It lists the input with ImageExampleGen's own listing (components/image_example_gen/sources.py: the same files, the
same listing-time rejects) and hashes each file's reported path, label, split, location, size and modification time.
Images added, removed, relabelled or rewritten change it; a listing that did not change gives the same string.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.image_example_gen import sources
from image_retrain.contract import FINGERPRINT_KEY, SPLIT_NAMES

log = logging.getLogger(__name__)

# Keys shared with component.py: the input, as ImageExampleGen takes it.
INPUT_BASE_KEY = "input_base"
MANIFEST_KEY = "manifest"


def listing_fingerprint(input_base: str | None, manifest: str | None) -> str:
    listing = sources.read_manifest(manifest, list(SPLIT_NAMES)) if manifest \
        else sources.list_folder_per_class(input_base)
    files = []
    for candidate in sorted(listing.candidates):
        try:
            stat = tf.io.gfile.stat(candidate.location)
            size, modified = stat.length, stat.mtime_nsec
        except tf.errors.NotFoundError:  # a manifest row naming no file: ingestion rejects it
            size = modified = None
        files.append([*candidate, size, modified])
    listed = json.dumps({"files": files, "rejects": sorted(map(list, listing.rejects))}, sort_keys=True)
    return f"{len(files)} files sha256:{hashlib.sha256(listed.encode()).hexdigest()}"


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        fingerprint = listing_fingerprint(exec_properties.get(INPUT_BASE_KEY) or None,
                                          exec_properties.get(MANIFEST_KEY) or None)
        artifact_utils.get_single_instance(output_dict[FINGERPRINT_KEY]).write(fingerprint)
        log.info("input fingerprint: %s", fingerprint)
