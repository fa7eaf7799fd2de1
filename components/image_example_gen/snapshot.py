"""What the data source holds now, file by file (label, size, modification time), and what changed since a run.

A retraining run that would find nothing new can stop before TFX starts, and a schedule can wait until enough is
new. The listing is ImageExampleGen's own (sources.py), so a snapshot sees exactly the files a run would ingest, with
the labels it would give them (a relabel in a manifest, or a file moved to another class folder, is a change); each
file is stat'ed, never read. Object stores report a length and a modification time through tf.io.gfile.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from components.image_example_gen import sources
from image_retrain.contract import SPLIT_NAMES
from image_retrain.paths import is_uri


@dataclasses.dataclass(frozen=True)
class FileState:
    label: str
    split: str  # a manifest's split column; '' = by the stable hash of the path
    size: int
    mtime_ns: int


@dataclasses.dataclass(frozen=True)
class Changes:
    new: tuple[str, ...]
    changed: tuple[str, ...]     # same location, other bytes (size or modification time)
    relabelled: tuple[str, ...]  # another label, or another split named by the manifest
    deleted: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.new) + len(self.changed) + len(self.relabelled) + len(self.deleted)

    def describe(self) -> str:
        parts = [f"{len(files)} {what}" for what, files in (("new", self.new), ("changed", self.changed),
                                                            ("relabelled", self.relabelled),
                                                            ("deleted", self.deleted)) if files]
        return ", ".join(parts) or "no change"


def take(data_dir: str | None = None, manifest: str | None = None, *,
         allow_paths_outside_manifest: bool = False) -> dict[str, FileState]:
    """{location: FileState} of every image file the data source lists (rejected entries left out)."""
    listing = sources.list_folder_per_class(data_dir) if data_dir else sources.read_manifest(
        manifest, list(SPLIT_NAMES), allow_paths_outside_manifest)
    return {candidate.location: FileState(candidate.label, candidate.split, *_stat(candidate.location))
            for candidate in listing.candidates}


def fingerprint(files: dict[str, FileState]) -> str:
    """One string that changes whenever a snapshot does (Kubeflow's cache key for ingestion: components/
    input_fingerprint)."""
    listed = json.dumps(sorted((location, *dataclasses.astuple(state)) for location, state in files.items()))
    return f"{len(files)} files sha256:{hashlib.sha256(listed.encode()).hexdigest()}"


def _stat(location: str) -> tuple[int, int]:
    if is_uri(location):
        import tensorflow as tf  # noqa: PLC0415 - object stores only: a local snapshot takes milliseconds, no TF

        info = tf.io.gfile.stat(location)
        return info.length, info.mtime_nsec
    try:
        info = os.stat(location)
    except OSError:  # listed, then gone or unreadable: a state of its own, so it shows as a change
        return -1, -1
    return info.st_size, info.st_mtime_ns


def changes(before: dict[str, FileState], after: dict[str, FileState]) -> Changes:
    common = before.keys() & after.keys()
    return Changes(
        new=tuple(sorted(after.keys() - before.keys())),
        changed=tuple(sorted(path for path in common if (before[path].size, before[path].mtime_ns)
                             != (after[path].size, after[path].mtime_ns))),
        relabelled=tuple(sorted(path for path in common if (before[path].label, before[path].split)
                                != (after[path].label, after[path].split))),
        deleted=tuple(sorted(before.keys() - after.keys())))


def save(path: str, snapshot: dict[str, FileState], settings: str) -> None:
    """The snapshot a run trained on, with its `settings` (what else decides the run's outcome). Written through a
    temporary file and a rename: a crash leaves the previous one, never half of one."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump({"settings": settings,
                   "files": {location: dataclasses.astuple(state) for location, state in sorted(snapshot.items())}}, f)
    os.replace(temporary, path)


def load(path: str) -> tuple[str, dict[str, FileState]] | None:
    """(settings, snapshot) saved by `save`, or None."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    return saved["settings"], {location: FileState(*state) for location, state in saved["files"].items()}
