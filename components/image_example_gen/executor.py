"""ImageExampleGen executor: images (folder-per-class or CSV manifest) -> validated tf.Examples in stable splits.

Beam stages (validation and example building are DoFns, so they scale out on a distributed runner):

    list candidates (executor process) -> Reshuffle -> ValidateImage (read + decode with decode_rgb)
    -> group by sha256 (drop duplicate content; reject content filed under two labels)
    -> label vocabulary (sorted labels that kept >= 1 image) -> BuildExample (re-reads the file, checks sha256)
    -> split: manifest `split` column when given, else TFX's hash partition on the `path` feature

The hash partition is TFX's own (`_PartitionFn`: sha256 of the serialized `path` feature modulo the bucket
total), so a file's split depends only on its path: stable across runs, processes and machines, and unaffected
by other files being added or removed.
"""
from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple

import apache_beam as beam
import tensorflow as tf
from google.protobuf import struct_pb2
from tfx import types
from tfx.components.example_gen import base_example_gen_executor, utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.image_example_gen import sources
from components.image_example_gen import validation as v
from components.image_example_gen.sources import ImageCandidate
from image_retrain import contract, ingestion_files
from image_retrain.contract import IMAGE_KEY, LABEL_KEY, LABEL_NAME_KEY, PATH_KEY, SHA256_KEY
from image_retrain.ingestion_files import Reject

log = logging.getLogger(__name__)

# Keys of the google.protobuf.Struct packed into example_gen_pb2.CustomConfig by the component.
LAYOUT_KEY = "layout"
LAYOUT_FOLDERS = "folder_per_class"
LAYOUT_MANIFEST = "manifest"
MIN_SIDE_KEY = "min_image_side"
MAX_PIXELS_KEY = "max_image_pixels"
ALLOW_OUTSIDE_MANIFEST_KEY = "allow_paths_outside_manifest"

# ImageExampleGen's own exec properties, beside FileBasedExampleGen's (component.py: ImageExampleGenSpec).
MANIFEST_KEY = "manifest"                        # manifest layout: the CSV read
SPLIT_RATIOS_KEY = "split_ratios"                # "train,eval,test": the hash buckets of output_config's splits
LISTING_FINGERPRINT_KEY = "listing_fingerprint"  # InputFingerprint's answer: only read by an orchestrator's cache

# Injected into exec_properties by Do() so the Beam graph can write its reports into the output artifact.
_EXAMPLES_URI_KEY = "_image_examples_uri"
_METRICS_NAMESPACE = "image_example_gen"
_LOG_FIRST_REJECTS = 10


class ValidImage(NamedTuple):
    path: str
    label: str
    location: str
    split: str
    sha256: str


class IngestionSettings(NamedTuple):
    layout: str
    limits: v.ValidationLimits
    allow_paths_outside_manifest: bool = False

    @classmethod
    def from_exec_properties(cls, exec_properties: dict[str, Any]) -> "IngestionSettings":
        values: dict[str, Any] = {}
        raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
        if raw:
            custom_config = example_gen_pb2.CustomConfig()
            proto_utils.json_to_proto(raw, custom_config)
            struct = struct_pb2.Struct()
            if custom_config.custom_config.Unpack(struct):
                values = dict(struct.items())
        return cls(
            layout=values.get(LAYOUT_KEY, LAYOUT_FOLDERS),
            limits=v.ValidationLimits(
                min_side=int(values.get(MIN_SIDE_KEY, v.DEFAULT_MIN_SIDE)),
                max_pixels=int(values.get(MAX_PIXELS_KEY, v.DEFAULT_MAX_PIXELS)),
            ),
            allow_paths_outside_manifest=bool(values.get(ALLOW_OUTSIDE_MANIFEST_KEY, False)),
        )


def parse_split_ratios(text: str) -> tuple[int, ...]:
    """'8,1,1' -> (8, 1, 1): one positive integer weight per split of contract.SPLIT_NAMES."""
    try:
        ratios = tuple(int(part) for part in text.split(","))
    except ValueError:
        ratios = ()
    if len(ratios) != len(contract.SPLIT_NAMES) or min(ratios) < 1:
        raise ValueError(f"split_ratios must be {len(contract.SPLIT_NAMES)} positive integers for "
                         f"{contract.SPLIT_NAMES}, e.g. '8,1,1'; got {text!r}.")
    return ratios


def list_candidates(exec_properties: dict[str, Any], split_names: list[str]) -> sources.Listing:
    """Folder layout: the classes are the folders under input_base. Manifest layout: the manifest's rows (input_base
    and the input split's pattern, its folder and file name, only feed TFX's driver fingerprint)."""
    settings = IngestionSettings.from_exec_properties(exec_properties)
    if settings.layout == LAYOUT_MANIFEST:
        return sources.read_manifest(exec_properties[MANIFEST_KEY], split_names, settings.allow_paths_outside_manifest)
    return sources.list_folder_per_class(exec_properties[standard_component_specs.INPUT_BASE_KEY])


class ValidateImageFn(beam.DoFn):
    """Reads and decodes each candidate; usable ones go to the main output, the rest to 'rejected'."""

    def __init__(self, limits: v.ValidationLimits):
        self._limits = limits
        self._valid = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, "images_valid")
        self._rejected = beam.metrics.Metrics.counter(_METRICS_NAMESPACE, "images_rejected")

    def process(self, candidate: ImageCandidate):
        try:
            data = v.read_file_bytes(candidate.location, self._limits)
            v.check_image_bytes(data, self._limits)
        except v.ImageRejected as rejected:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput("rejected", Reject(candidate.path, candidate.label, str(rejected)))
            return
        self._valid.inc()
        yield ValidImage(candidate.path, candidate.label, candidate.location, candidate.split, v.sha256_hex(data))


def resolve_duplicates(sha_and_images: tuple[str, list[ValidImage]]):
    """Identical content must not sit in two classes (contradictory) nor twice in one (train/test leakage)."""
    _, group = sha_and_images
    images = sorted(group)
    if len(images) == 1:
        yield images[0]
        return
    label_names = sorted({image.label for image in images})
    if len(label_names) > 1:
        paths = sorted({image.path for image in images})
        quoted = " and ".join(repr(name) for name in label_names)
        detail = (f"the same file is listed under labels {quoted}" if len(paths) == 1
                  else f"identical image content under labels {quoted} ({', '.join(paths)})")
        for image in images:
            yield beam.pvalue.TaggedOutput("rejected", Reject(
                image.path, image.label, f"{v.DUPLICATE_CONFLICTING_LABELS}: {detail}"))
        return
    kept, *others = images
    yield kept
    for image in others:
        detail = "listed more than once" if image.path == kept.path else f"identical content to {kept.path!r}"
        yield beam.pvalue.TaggedOutput("rejected", Reject(image.path, image.label,
                                                          f"{v.DUPLICATE_SAME_LABEL}: {detail} (kept that one)"))


class BuildExampleFn(beam.DoFn):
    """Re-reads the file (so no image bytes travel through the shuffle) and builds the tf.Example."""

    def __init__(self, limits: v.ValidationLimits):
        self._limits = limits
        self._label_index: dict[str, int] = {}

    def process(self, image: ValidImage, vocabulary: list[str]):
        if len(self._label_index) != len(vocabulary):  # the side input is the same list for the whole run
            self._label_index = {label: index for index, label in enumerate(vocabulary)}
        try:
            data = v.read_file_bytes(image.location, self._limits)
        except v.ImageRejected as rejected:
            yield beam.pvalue.TaggedOutput("rejected", Reject(
                image.path, image.label, f"{v.CHANGED_DURING_INGESTION}: {rejected}"))
            return
        digest = v.sha256_hex(data)
        if digest != image.sha256:
            yield beam.pvalue.TaggedOutput("rejected", Reject(
                image.path, image.label, f"{v.CHANGED_DURING_INGESTION}: content changed after validation"))
            return
        example = tf.train.Example()
        feature = example.features.feature
        feature[IMAGE_KEY].bytes_list.value.append(data)
        feature[LABEL_KEY].int64_list.value.append(self._label_index[image.label])
        feature[LABEL_NAME_KEY].bytes_list.value.append(image.label.encode("utf-8"))
        feature[PATH_KEY].bytes_list.value.append(image.path.encode("utf-8"))
        feature[SHA256_KEY].bytes_list.value.append(digest.encode("ascii"))
        yield example, image.split


def class_rejects(files_per_label: tuple[str, int], vocabulary: list[str]):
    label, file_count = files_per_label
    if label in vocabulary:
        return
    if file_count == 0:
        yield Reject(label + "/", label, f"{v.EMPTY_CLASS}: class folder holds no files; label left out of the "
                                         f"vocabulary")
    else:
        yield Reject(label + "/", label, f"{v.CLASS_WITHOUT_USABLE_IMAGES}: all {file_count} file(s) were "
                                         f"rejected; label left out of the vocabulary")


class IngestionOutputs(NamedTuple):
    examples_with_split: beam.PCollection  # (tf.Example, explicit split name or '')
    rejects: beam.PCollection  # Reject
    vocabulary: beam.PCollection  # one element: sorted list of label names


def build_ingestion(pipeline: beam.Pipeline, exec_properties: dict[str, Any],
                    split_names: list[str]) -> IngestionOutputs:
    settings = IngestionSettings.from_exec_properties(exec_properties)
    listing = list_candidates(exec_properties, split_names)
    _fail_early_if_too_few_classes(listing)
    log.info("Image ingestion: %d candidate files in %d class(es) %s; %d hidden entries skipped.",
                 len(listing.candidates), len(listing.files_per_label), sorted(listing.files_per_label),
                 listing.hidden_skipped)

    validated = (
        pipeline
        | "CreateCandidates" >> beam.Create(listing.candidates)
        | "SpreadCandidates" >> beam.Reshuffle()
        | "ValidateImage" >> beam.ParDo(ValidateImageFn(settings.limits)).with_outputs("rejected", main="valid"))
    deduplicated = (
        validated.valid
        | "KeyBySha256" >> beam.Map(lambda image: (image.sha256, image))
        | "GroupBySha256" >> beam.GroupByKey()
        | "ResolveDuplicates" >> beam.FlatMap(resolve_duplicates).with_outputs("rejected", main="kept"))
    vocabulary = (
        deduplicated.kept
        | "LabelOf" >> beam.Map(lambda image: image.label)
        | "DistinctLabels" >> beam.Distinct()
        | "CollectLabels" >> beam.combiners.ToList()
        | "SortLabels" >> beam.Map(sorted))
    built = (
        deduplicated.kept
        | "BuildExample" >> beam.ParDo(BuildExampleFn(settings.limits), beam.pvalue.AsSingleton(vocabulary))
        .with_outputs("rejected", main="examples"))
    rejected_classes = (
        pipeline
        | "CreateClassCounts" >> beam.Create(sorted(listing.files_per_label.items()))
        | "RejectUnusableClasses" >> beam.FlatMap(class_rejects, beam.pvalue.AsSingleton(vocabulary)))
    listing_rejects = pipeline | "CreateListingRejects" >> beam.Create(listing.rejects)
    rejects = ((listing_rejects, validated.rejected, deduplicated.rejected, built.rejected, rejected_classes)
               | "AllRejects" >> beam.Flatten())
    return IngestionOutputs(built.examples, rejects, vocabulary)


def _fail_early_if_too_few_classes(listing: sources.Listing) -> None:
    nonempty = sorted(label for label, count in listing.files_per_label.items() if count)
    if len(nonempty) < 2:
        found = ", ".join(f"{label!r} ({count} files)" for label, count in sorted(listing.files_per_label.items()))
        raise ValueError(f"Image classification needs at least 2 classes with images; found "
                         f"{len(nonempty)}: {found or 'no class folders or labels at all'}.")


def _write_text(path: str, text: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def _write_labels(vocabulary: list[str], examples_uri: str) -> None:
    _write_text(f"{examples_uri}/{contract.LABELS_FILE}", "".join(label + "\n" for label in vocabulary))


def _write_rejects(rejects: list[Reject], examples_uri: str) -> None:
    _write_text(f"{examples_uri}/{contract.REJECTS_FILE}", ingestion_files.format_rejects_csv(rejects))


def _write_summary(_, examples_uri: str, split_names: list[str], vocabulary: list[str], rejects: list[Reject],
                   split_counts: dict[str, int]) -> None:
    split_counts = {name: split_counts[name] for name in split_names}
    by_code: dict[str, int] = {}
    for reject in rejects:
        by_code[reject.code] = by_code.get(reject.code, 0) + 1
    summary = {
        "label_vocabulary": vocabulary,
        "num_classes": len(vocabulary),
        "split_counts": split_counts,
        "num_examples": sum(split_counts.values()),
        "num_rejects": len(rejects),
        "rejects_by_code": dict(sorted(by_code.items())),
        "first_rejects": [list(r) for r in sorted(rejects)[:_LOG_FIRST_REJECTS]],
    }
    _write_text(f"{examples_uri}/{contract.INGESTION_SUMMARY_FILE}", json.dumps(summary, indent=2, ensure_ascii=False))


def _write_reports(pipeline: beam.Pipeline, examples_uri: str, outputs: IngestionOutputs,
                   split_names: list[str], split_counts: beam.PCollection) -> None:
    rejects_list = outputs.rejects | "CollectRejects" >> beam.combiners.ToList()
    _ = outputs.vocabulary | "WriteLabels" >> beam.Map(_write_labels, examples_uri)
    _ = rejects_list | "WriteRejects" >> beam.Map(_write_rejects, examples_uri)
    _ = (pipeline
         | "SummaryTrigger" >> beam.Create([None])
         | "WriteSummary" >> beam.Map(
             _write_summary, examples_uri, split_names,
             vocabulary=beam.pvalue.AsSingleton(outputs.vocabulary),
             rejects=beam.pvalue.AsSingleton(rejects_list),
             split_counts=beam.pvalue.AsDict(split_counts)))


def _partition(record: tuple[tf.train.Example, str], num_partitions: int, split_names: list[str],
               buckets: list[int], split_config: example_gen_pb2.SplitConfig) -> int:
    example, explicit_split = record
    if explicit_split:
        return split_names.index(explicit_split)
    return base_example_gen_executor._PartitionFn(  # pylint: disable=protected-access
        example, num_partitions, buckets, split_config)


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Custom executor of FileBasedExampleGen (works with KubeflowV2DagRunner, which runs the standard driver)."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        # Abstract in the base class, but only its GenerateExamplesByBeam calls it, and that is replaced below.
        raise NotImplementedError("ImageExampleGen builds its examples in GenerateExamplesByBeam")

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: dict[str, Any]
                               ) -> dict[str, beam.PCollection]:
        """Like the base class, plus honouring a manifest's `split` column and writing the reports."""
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        if not output_config.split_config.splits or len(input_config.splits) != 1:
            raise ValueError("ImageExampleGen needs one input split and hash-bucket output splits "
                             "(output_config.split_config), as ImageExampleGen(...) configures them.")
        split_names = utils.generate_output_split_names(input_config, output_config)
        buckets = []
        for split in output_config.split_config.splits:
            buckets.append((buckets[-1] if buckets else 0) + split.hash_buckets)

        outputs = build_ingestion(pipeline, exec_properties, split_names)
        partitions = outputs.examples_with_split | "SplitData" >> beam.Partition(
            _partition, len(buckets), split_names, buckets, output_config.split_config)
        result = {}
        counts = []
        for name, partition in zip(split_names, partitions):
            result[name] = partition | f"DropSplit[{name}]" >> beam.Map(lambda pair: pair[0])
            counts.append(result[name]
                          | f"Count[{name}]" >> beam.combiners.Count.Globally()
                          | f"Key[{name}]" >> beam.Map(lambda n, split=name: (split, n)))
        split_counts = tuple(counts) | "SplitCounts" >> beam.Flatten()
        _write_reports(pipeline, exec_properties[_EXAMPLES_URI_KEY], outputs, split_names, split_counts)
        return result

    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(output_dict[standard_component_specs.EXAMPLES_KEY])
        exec_properties = dict(exec_properties)
        exec_properties[_EXAMPLES_URI_KEY] = examples.uri
        # The run's split ratios (a Kubeflow run parameter) into the output_config everything downstream reads.
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        for split, ratio in zip(output_config.split_config.splits,
                                parse_split_ratios(exec_properties[SPLIT_RATIOS_KEY]), strict=True):
            split.hash_buckets = ratio
        exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY] = proto_utils.proto_to_json(output_config)
        super().Do(input_dict, output_dict, exec_properties)

        summary = ingestion_files.read_ingestion_summary(examples.uri)
        vocabulary = summary["label_vocabulary"]
        examples.set_string_custom_property(contract.LABEL_VOCABULARY_PROPERTY,
                                            json.dumps(vocabulary, ensure_ascii=False))
        examples.set_int_custom_property(contract.NUM_CLASSES_PROPERTY, len(vocabulary))
        examples.set_int_custom_property(contract.NUM_REJECTS_PROPERTY, summary["num_rejects"])
        for split_name, count in summary["split_counts"].items():
            examples.set_int_custom_property(contract.NUM_EXAMPLES_PROPERTY_PREFIX + split_name, count)
        _log_summary(examples.uri, summary)
        if len(vocabulary) < 2:
            raise ValueError(
                f"Image classification needs at least 2 classes with usable images; after validation "
                f"{len(vocabulary)} remain ({vocabulary}). {summary['num_rejects']} input(s) were rejected "
                f"{summary['rejects_by_code']}; see {examples.uri}/{contract.REJECTS_FILE}.")


def _log_summary(examples_uri: str, summary: dict) -> None:
    log.info("Image ingestion: %d examples %s, %d classes %s.", summary["num_examples"],
                 summary["split_counts"], summary["num_classes"], summary["label_vocabulary"])
    if summary["num_rejects"]:
        log.warning("Image ingestion rejected %d input(s) %s; full list in %s/%s. First ones:\n%s",
                        summary["num_rejects"], summary["rejects_by_code"], examples_uri, contract.REJECTS_FILE,
                        "\n".join(f"  {path} [{label}]: {reason}" for path, label, reason in summary["first_rejects"]))
