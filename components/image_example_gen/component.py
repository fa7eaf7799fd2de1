"""ImageExampleGen: a FileBasedExampleGen with our executor, so LocalDagRunner and KubeflowV2DagRunner (which
runs the standard FileBasedExampleGen driver and allows no custom driver) both run it unchanged."""
from __future__ import annotations

import os
from collections.abc import Sequence

from google.protobuf import struct_pb2
from tfx import types
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.dsl.placeholder import placeholder
from tfx.orchestration.data_types import RuntimeParameter
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts
from tfx.types.component_spec import ExecutionParameter
from tfx.types.standard_component_specs import FileBasedExampleGenSpec

from components.image_example_gen import executor
from components.image_example_gen.sources import check_manifest_header
from components.image_example_gen.validation import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE
from image_retrain.contract import DEFAULT_SPLIT_RATIOS, PATH_KEY, SPLIT_NAMES
from image_retrain.paths import absolute, is_uri

_GLOB_CHARACTERS = set("*?[]{}")


class ImageExampleGenSpec(FileBasedExampleGenSpec):
    """FileBasedExampleGen's spec plus the values a Kubeflow run may set whole (a TFX RuntimeParameter replaces a
    whole exec property, never a field inside a proto) and the listing fingerprint a cache key must see."""
    PARAMETERS = {
        **FileBasedExampleGenSpec.PARAMETERS,
        executor.MANIFEST_KEY: ExecutionParameter(type=str, optional=True),
        executor.SPLIT_RATIOS_KEY: ExecutionParameter(type=str),
        executor.LISTING_FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
    }


class ImageExampleGen(FileBasedExampleGen):
    """Labelled images -> `Examples` with splits train/eval/test and features
    image_raw, label (index into the sorted vocabulary), label_name, path, sha256.

    Exactly one of:
      input_base: folder-per-class tree `<input_base>/<label>/<files>` (searched recursively inside each class
        folder; hidden entries starting with '.' are skipped).
      manifest: CSV with header `path,label[,split]`; relative paths are resolved against the manifest's folder,
        `split` cells (train/eval/test) are honoured, empty cells fall back to the hash split.

    split_ratios: positive integer weights of (train, eval, test), or the same as text 'train,eval,test'; a file's
      split is a stable hash of its path.
    min_image_side / max_image_pixels: images with a side below / more pixels than these are rejected.
    listing_fingerprint: InputFingerprint's answer for the same input, so that an orchestrator caching on exec
      properties (Kubeflow Pipelines) runs the ingestion again when the images change; the executor ignores it.

    input_base, manifest and split_ratios may be RuntimeParameters (str; split ratios as 'train,eval,test'), set per
    Kubeflow run; their defaults are checked and configure what TFX's driver sees.
    allow_paths_outside_manifest: read manifest rows whose paths lead out of the manifest's folder (rejected
      otherwise).

    Besides the splits, the artifact holds contract.INGESTION_FILES: labels.txt, rejects.csv, ingestion_summary.json.
    Note on caching: the driver fingerprints the top-level entries (folder layout: the class folders' mtime and
    size; manifest layout: the manifest file), so adding or removing files invalidates the cache, but an image
    overwritten in place under the same name is not noticed.
    """

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    SPEC_CLASS = ImageExampleGenSpec

    def __init__(self, input_base: str | os.PathLike | RuntimeParameter | None = None,
                 manifest: str | os.PathLike | RuntimeParameter | None = None,
                 split_ratios: Sequence[int] | str | RuntimeParameter = DEFAULT_SPLIT_RATIOS,
                 min_image_side: int = DEFAULT_MIN_SIDE, max_image_pixels: int = DEFAULT_MAX_PIXELS,
                 listing_fingerprint: placeholder.Placeholder | str | None = None,
                 allow_paths_outside_manifest: bool = False):
        if (input_base is None) == (manifest is None):
            raise ValueError("ImageExampleGen needs exactly one of input_base (a folder-per-class image tree) or "
                             f"manifest (a CSV with path,label columns); got input_base={input_base!r}, "
                             f"manifest={manifest!r}.")
        input_base = _path_or_parameter(input_base)
        manifest = _path_or_parameter(manifest)
        if isinstance(split_ratios, (str, RuntimeParameter)):
            ratios = executor.parse_split_ratios(getattr(split_ratios, "default", split_ratios))
        else:
            ratios = tuple(split_ratios)
            if len(ratios) != len(SPLIT_NAMES) or not all(
                    isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in ratios):
                raise ValueError(f"split_ratios must be {len(SPLIT_NAMES)} positive integers for {SPLIT_NAMES}, "
                                 f"e.g. {DEFAULT_SPLIT_RATIOS}; got {ratios!r}.")
            split_ratios = ",".join(map(str, ratios))
        if min_image_side < 1 or max_image_pixels < 1:
            raise ValueError("min_image_side and max_image_pixels must be positive.")
        if max_image_pixels > DEFAULT_MAX_PIXELS:
            raise ValueError(f"max_image_pixels={max_image_pixels} is above the {DEFAULT_MAX_PIXELS} pixels the served "
                             "model decodes (image_retrain/image_limits.py MAX_IMAGE_PIXELS); such images could be "
                             "trained on but never served.")

        if manifest is not None:
            if isinstance(manifest, RuntimeParameter):
                path = manifest.default  # a run's own manifest is checked when the executor reads it
            else:
                manifest = path = absolute(manifest)
                check_manifest_header(manifest)  # at pipeline construction, before anything runs
            base, pattern = path.rsplit("/", 1) if is_uri(path) else os.path.split(path)
            if _GLOB_CHARACTERS & set(pattern):
                raise ValueError(f"Manifest file name {pattern!r} contains glob characters {sorted(_GLOB_CHARACTERS)}"
                                 f"; rename it (TFX matches the input pattern as a glob).")
            layout = executor.LAYOUT_MANIFEST
        else:
            base, pattern = input_base if isinstance(input_base, RuntimeParameter) else absolute(input_base), "*"
            layout = executor.LAYOUT_FOLDERS

        settings = struct_pb2.Struct()
        settings.update({executor.LAYOUT_KEY: layout, executor.MIN_SIDE_KEY: min_image_side,
                         executor.MAX_PIXELS_KEY: max_image_pixels,
                         executor.ALLOW_OUTSIDE_MANIFEST_KEY: allow_paths_outside_manifest})
        custom_config = example_gen_pb2.CustomConfig()
        custom_config.custom_config.Pack(settings)
        # Hash buckets of the default ratios; the executor sets those of the run's split_ratios.
        output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=ratio)
                    for name, ratio in zip(SPLIT_NAMES, ratios)],
            partition_feature_name=PATH_KEY))
        # FileBasedExampleGen.__init__ only builds its own spec; this is that spec with ImageExampleGenSpec's extras.
        base_beam_component.BaseBeamComponent.__init__(self, spec=ImageExampleGenSpec(
            input_base=base,
            input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="images", pattern=pattern)]),
            output_config=output_config,
            custom_config=custom_config,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            manifest=manifest,
            split_ratios=split_ratios,
            listing_fingerprint=listing_fingerprint,
            examples=types.Channel(type=standard_artifacts.Examples)))


def _path_or_parameter(value):
    return value if value is None or isinstance(value, RuntimeParameter) else os.fspath(value)
