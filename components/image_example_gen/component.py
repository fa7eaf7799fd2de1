"""ImageExampleGen: a FileBasedExampleGen with our executor, so LocalDagRunner and KubeflowV2DagRunner (which
runs the standard FileBasedExampleGen driver and allows no custom driver) both run it unchanged."""
from __future__ import annotations

import os
from collections.abc import Sequence

from google.protobuf import struct_pb2
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from components.image_example_gen import executor
from components.image_example_gen.sources import check_manifest_header
from components.image_example_gen.validation import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE
from image_retrain.contract import DEFAULT_SPLIT_RATIOS, PATH_KEY, SPLIT_NAMES
from image_retrain.paths import absolute, is_uri

_GLOB_CHARACTERS = set("*?[]{}")


class ImageExampleGen(FileBasedExampleGen):
    """Labelled images -> `Examples` with splits train/eval/test and features
    image_raw, label (index into the sorted vocabulary), label_name, path, sha256.

    Exactly one of:
      input_base: folder-per-class tree `<input_base>/<label>/<files>` (searched recursively inside each class
        folder; hidden entries starting with '.' are skipped).
      manifest: CSV with header `path,label[,split]`; relative paths are resolved against the manifest's folder,
        `split` cells (train/eval/test) are honoured, empty cells fall back to the hash split.

    split_ratios: positive integer weights of (train, eval, test); a file's split is a stable hash of its path.
    min_image_side / max_image_pixels: images with a side below / more pixels than these are rejected.
    allow_paths_outside_manifest: read manifest rows whose paths lead out of the manifest's folder (rejected
      otherwise).

    Besides the splits, the artifact holds contract.INGESTION_FILES: labels.txt, rejects.csv, ingestion_summary.json.
    Note on caching: the driver fingerprints the top-level entries (folder layout: the class folders' mtime and
    size; manifest layout: the manifest file), so adding or removing files invalidates the cache, but an image
    overwritten in place under the same name is not noticed.
    """

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, input_base: str | os.PathLike | None = None, manifest: str | os.PathLike | None = None,
                 split_ratios: Sequence[int] = DEFAULT_SPLIT_RATIOS, min_image_side: int = DEFAULT_MIN_SIDE,
                 max_image_pixels: int = DEFAULT_MAX_PIXELS, allow_paths_outside_manifest: bool = False):
        if (input_base is None) == (manifest is None):
            raise ValueError("ImageExampleGen needs exactly one of input_base (a folder-per-class image tree) or "
                             f"manifest (a CSV with path,label columns); got input_base={input_base!r}, "
                             f"manifest={manifest!r}.")
        input_base = os.fspath(input_base) if input_base is not None else None
        manifest = os.fspath(manifest) if manifest is not None else None
        split_ratios = tuple(split_ratios)
        if len(split_ratios) != len(SPLIT_NAMES) or not all(
                isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in split_ratios):
            raise ValueError(f"split_ratios must be {len(SPLIT_NAMES)} positive integers for {SPLIT_NAMES}, "
                             f"e.g. {DEFAULT_SPLIT_RATIOS}; got {split_ratios!r}.")
        if min_image_side < 1 or max_image_pixels < 1:
            raise ValueError("min_image_side and max_image_pixels must be positive.")
        if max_image_pixels > DEFAULT_MAX_PIXELS:
            raise ValueError(f"max_image_pixels={max_image_pixels} is above the {DEFAULT_MAX_PIXELS} pixels the served "
                             "model decodes (image_retrain/image_limits.py MAX_IMAGE_PIXELS); such images could be "
                             "trained on but never served.")

        if manifest is not None:
            manifest = absolute(manifest)
            check_manifest_header(manifest)  # at pipeline construction, before anything runs
            base, pattern = manifest.rsplit("/", 1) if is_uri(manifest) else os.path.split(manifest)
            if _GLOB_CHARACTERS & set(pattern):
                raise ValueError(f"Manifest file name {pattern!r} contains glob characters {sorted(_GLOB_CHARACTERS)}"
                                 f"; rename it (TFX matches the input pattern as a glob).")
            layout = executor.LAYOUT_MANIFEST
        else:
            base, pattern = absolute(input_base), "*"
            layout = executor.LAYOUT_FOLDERS

        settings = struct_pb2.Struct()
        settings.update({executor.LAYOUT_KEY: layout, executor.MIN_SIDE_KEY: min_image_side,
                         executor.MAX_PIXELS_KEY: max_image_pixels,
                         executor.ALLOW_OUTSIDE_MANIFEST_KEY: allow_paths_outside_manifest})
        custom_config = example_gen_pb2.CustomConfig()
        custom_config.custom_config.Pack(settings)
        output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=ratio)
                    for name, ratio in zip(SPLIT_NAMES, split_ratios)],
            partition_feature_name=PATH_KEY))
        super().__init__(
            input_base=base,
            input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="images", pattern=pattern)]),
            output_config=output_config,
            custom_config=custom_config)
