"""The one rule for "this path lies inside that folder", for local paths and object-store URIs alike.

A local path is compared as os.path.realpath makes it (absolute, `..` and symbolic links resolved, so a link inside
the folder that points out of it is outside); a URI (`gs://bucket/key`) by its scheme and its path with `.`, `..` and
repeated slashes collapsed (posixpath.normpath), so `gs://bucket/models/../../etc` is not in `gs://bucket/models`;
`file://` URIs are local paths. Inside means equal to the folder or below it, segment by segment (`/models-old` is
not inside `/models`).

Used wherever a path from outside decides what is read or written: the model server's reload RPC (model base paths,
request-log prefixes; serving/model_control.py), a CSV manifest's image paths (components/image_example_gen) and the
Kubeflow entrypoint's local copies of artifacts (kubeflow/container_entrypoint.py).
"""
from __future__ import annotations

import os
import posixpath

_FILE_SCHEME = "file://"


def normalized(path: str) -> str:
    if path.startswith(_FILE_SCHEME):
        path = path[len(_FILE_SCHEME):]
    scheme, separator, rest = path.partition("://")
    if not separator:
        return os.path.realpath(path)
    return f"{scheme}://{posixpath.normpath(rest) if rest else ''}"


def is_within(path: str, folder: str) -> bool:
    path, folder = normalized(path), normalized(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def folder_holding(path: str, folders) -> str | None:
    """The first of `folders` that `path` lies within, or None."""
    return next((folder for folder in folders if is_within(path, folder)), None)
