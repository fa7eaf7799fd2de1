"""On-disk embedding cache keyed by (image sha256, module identity).

One small `.npy` file per image under `<cache_dir>/<module identity>/<sha[:2]>/<sha>.npy`, written through
tf.io.gfile so the cache can live on local disk, a PVC or object storage alike. Writes go to a temporary name and are
renamed, so a crashed or parallel run never leaves a half-written entry that a later run would trust.
"""
from __future__ import annotations

import io
import os
import uuid

import numpy as np


def _safe_component(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:96]


class EmbeddingCache:
    def __init__(self, cache_dir: str, module_identity: str):
        import tensorflow as tf

        self._gfile = tf.io.gfile
        self.root = os.path.join(cache_dir, _safe_component(module_identity))

    def _path(self, sha256: str) -> str:
        return os.path.join(self.root, sha256[:2], f"{sha256}.npy")

    def get(self, sha256: str) -> np.ndarray | None:
        path = self._path(sha256)
        try:
            with self._gfile.GFile(path, "rb") as f:
                return np.load(io.BytesIO(f.read()), allow_pickle=False)
        except Exception:  # missing, or unreadable/corrupt: recompute rather than fail the run
            return None

    def put(self, sha256: str, embedding: np.ndarray) -> None:
        path = self._path(sha256)
        self._gfile.makedirs(os.path.dirname(path))
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(embedding, dtype=np.float32), allow_pickle=False)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        with self._gfile.GFile(temporary, "wb") as f:
            f.write(buffer.getvalue())
        self._gfile.rename(temporary, path, overwrite=True)
