"""Paths the pipeline is given: local paths or object-store URIs (gs://), told apart once (no TensorFlow import)."""
from __future__ import annotations

import os


def is_uri(path: str) -> bool:
    """An object-store (or any scheme://) URI rather than a local path."""
    return "://" in path


def absolute(path: str) -> str:
    """A local path made absolute (steps may run in another working directory); a URI as given."""
    return path if is_uri(path) else os.path.abspath(path)


def join(base: str | os.PathLike, *parts: str) -> str:
    """`base/part/...` with '/' whatever the base (os.path.join would keep a URI's scheme but not its meaning)."""
    return "/".join([os.fspath(base).rstrip("/"), *parts])
