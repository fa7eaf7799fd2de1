"""The images a batch prediction reads: ingestion's own listing rules (components/image_example_gen/sources.py).

A folder-per-class tree (`<data-dir>/<label>/**/<file>`, the folder names are the given labels) or a CSV manifest
with a `path` column and, optionally, `label` (a training manifest works as it is; its `split` column is ignored).
What ingestion would refuse at listing time (a file outside any class folder, a link out of the data folder, a
manifest row leading out of the manifest's folder, ...) is a reject here too, with the same '<code>: <detail>'
reason. No TensorFlow import: a bad input path fails before any Beam or TensorFlow start-up.
"""
from __future__ import annotations

from components.image_example_gen import sources
from image_retrain.contract import SPLIT_NAMES


def list_images(data_dir: str | None = None, manifest: str | None = None,
                allow_paths_outside_manifest: bool = False) -> sources.Listing:
    """Exactly one of `data_dir` and `manifest`; a candidate's `label` is '' where the input gives none."""
    if (data_dir is None) == (manifest is None):
        raise ValueError("give exactly one of --data-dir and --manifest")
    if data_dir is not None:
        return sources.list_folder_per_class(data_dir)
    return sources.read_manifest(manifest, list(SPLIT_NAMES), allow_paths_outside_manifest, label_required=False)
