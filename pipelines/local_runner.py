"""Run the pipeline locally: LocalDagRunner, Beam DirectRunner, SQLite ML Metadata under the output folder.

Output layout (`--output-dir`, default ./output):
  tfx_pipeline_output/<pipeline>/   every component's artifacts
  tfx_metadata/<pipeline>/metadata.db
  embedding_cache/                  reused across runs: unchanged images are never embedded twice
  reports/                          one report folder per run (HTML, Markdown, confusion matrix PNG)
  serving/<model-name>/<version>/   blessed models (the TF Serving model base path), unless --serving-dir is given
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from pipelines import configs
from pipelines import options as pipeline_options
from pipelines.options import PipelineOptions

DEFAULT_BASELINE = "latest_blessed"


@dataclasses.dataclass
class RunOptions(PipelineOptions):
    output_dir: str = "output"
    # After a push, also export the pushed version for apps (pipelines/export.py) into OUTPUT_DIR/mobile.
    mobile_formats: tuple[str, ...] = ()

    def path(self, *parts: str) -> str:
        return os.path.abspath(os.path.join(self.output_dir, *parts))

    @property
    def serving_model_dir(self) -> str:
        return os.path.join(os.path.abspath(self.serving_dir or self.path("serving")), self.model_name)


@dataclasses.dataclass
class RunResult:
    blessed: bool
    pushed: bool
    pushed_version: str | None
    pushed_path: str | None
    accuracy: float | None
    baseline_accuracy: float | None
    report_path: str | None
    embeddings_computed: int
    embeddings_cached: int
    rejects: int
    serving_model_dir: str
    mobile_exports: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_pipeline(options: RunOptions):
    from tfx import v1 as tfx

    from pipelines.pipeline import create_pipeline

    pipeline_name = options.pipeline_name
    metadata_path = options.path("tfx_metadata", pipeline_name, "metadata.db")
    os.makedirs(os.path.dirname(metadata_path), exist_ok=True)
    return create_pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=options.path("tfx_pipeline_output", pipeline_name),
        serving_model_dir=options.serving_model_dir,
        data_root=os.path.abspath(options.data_dir) if options.data_dir else None,
        manifest_path=os.path.abspath(options.manifest) if options.manifest else None,
        module_handle=options.module,
        embedding_cache_dir=os.path.abspath(options.embedding_cache_dir or options.path("embedding_cache")),
        hyperparameters=options.hyperparameters,
        tune=options.tune,
        tune_trials=options.tune_trials,
        eval_accuracy_threshold=options.accuracy_threshold,
        baseline=options.baseline or DEFAULT_BASELINE,
        split_ratios=options.split_ratios,
        report_dir=options.path("reports"),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path),
        beam_pipeline_args=configs.LOCAL_BEAM_ARGS if options.beam_args is None else options.beam_args,
        embed_beam_pipeline_args=options.embed_beam_args,
    ), metadata_path


def _latest(store, type_name: str):
    artifacts = store.get_artifacts_by_type(type_name)
    return max(artifacts, key=lambda a: a.id) if artifacts else None


def _property(artifact, name: str, default=None):
    if artifact is None or name not in artifact.custom_properties:
        return default
    value = artifact.custom_properties[name]
    return value.int_value if value.HasField("int_value") else (
        value.double_value if value.HasField("double_value") else value.string_value)


def collect_result(options: RunOptions, metadata_path: str) -> RunResult:
    """Reads what this run produced from ML Metadata (the newest artifact of each type)."""
    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx

    from components.model_report.component import ModelReportArtifact

    store = metadata_store.MetadataStore(tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))
    pushed = _latest(store, "PushedModel")
    report = _latest(store, ModelReportArtifact.TYPE_NAME)
    embedded = max((a for a in store.get_artifacts_by_type("Examples") if "embeddings_computed" in a.custom_properties),
                   key=lambda a: a.id, default=None)
    ingested = max((a for a in store.get_artifacts_by_type("Examples")
                    if "embeddings_computed" not in a.custom_properties), key=lambda a: a.id, default=None)
    summary = {}
    if report is not None and os.path.exists(os.path.join(report.uri, "metrics.json")):
        with open(os.path.join(report.uri, "metrics.json")) as f:
            summary = json.load(f)
    was_pushed = bool(_property(pushed, "pushed", 0))
    return RunResult(
        blessed=bool(summary.get("blessed", False)),
        pushed=was_pushed,
        pushed_version=_property(pushed, "pushed_version") if was_pushed else None,
        pushed_path=_property(pushed, "pushed_destination") if was_pushed else None,
        accuracy=summary.get("accuracy"),
        baseline_accuracy=summary.get("baseline_accuracy"),
        report_path=os.path.join(report.uri, "report.html") if report is not None else None,
        embeddings_computed=int(_property(embedded, "embeddings_computed", 0)),
        embeddings_cached=int(_property(embedded, "embeddings_cached", 0)),
        rejects=int(_property(ingested, "num_rejects", 0)),
        serving_model_dir=options.serving_model_dir,
    )


def run_pipeline(options: RunOptions) -> RunResult:
    from tfx import v1 as tfx

    options.validate()
    pipeline, metadata_path = build_pipeline(options)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    result = collect_result(options, metadata_path)
    if result.pushed and options.mobile_formats:
        result.mobile_exports = export_for_apps(result.pushed_path, options)
    return result


def export_for_apps(version_dir: str, options: RunOptions) -> list[str]:
    """The pipeline's optional last step: the pushed version as OUTPUT_DIR/mobile/<model>-<version>.<format>."""
    from pipelines.export import EXTENSIONS, ExportedClassifier, export_coreml, export_tflite

    classifier = ExportedClassifier(version_dir)
    os.makedirs(options.path("mobile"), exist_ok=True)
    paths = []
    for file_format in options.mobile_formats:
        path = options.path("mobile", f"{options.model_name}-{os.path.basename(version_dir)}"
                                      f"{EXTENSIONS[file_format]}")
        (export_tflite if file_format == "tflite" else export_coreml)(classifier, path)
        print(f"[export] {file_format}: {path}", flush=True)
        paths.append(path)
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pipeline_options.add_arguments(parser, baseline_default=DEFAULT_BASELINE, beam_default=configs.LOCAL_BEAM_ARGS)
    parser.add_argument("--output-dir", default="output", help="Pipeline artifacts, metadata, cache and reports; "
                                                               "also the default serving dir and embedding cache.")
    parser.add_argument("--mobile-export", action="append", dest="mobile_formats", choices=["tflite", "coreml"],
                        default=None, help="After a push, also write the model for apps to OUTPUT_DIR/mobile "
                                           "(repeatable; see `image-retrain export`).")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")


def options_from_args(args: argparse.Namespace) -> RunOptions:
    return RunOptions(**pipeline_options.from_args(args), output_dir=args.output_dir,
                      mobile_formats=tuple(getattr(args, "mobile_formats", None) or ()))


def format_result(result: RunResult) -> str:
    def pct(value):
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        f"test accuracy:      {pct(result.accuracy)} (baseline {pct(result.baseline_accuracy)})",
        f"blessed:            {result.blessed}",
        f"pushed:             {result.pushed_path or 'no (not blessed)'}",
        f"embeddings:         {result.embeddings_computed} computed, {result.embeddings_cached} from cache",
        f"rejected images:    {result.rejects}",
        f"report:             {result.report_path}",
        f"model base path:    {result.serving_model_dir}",
    ]
    lines += [f"for apps:           {path}" for path in result.mobile_exports]
    return "\n".join(lines)


def check_inputs(options: RunOptions) -> None:
    """Fails in a second, before TFX starts, on inputs that cannot work."""
    if options.data_dir and "://" not in options.data_dir and not os.path.isdir(options.data_dir):
        raise ValueError(f"--data-dir {options.data_dir!r} is not a directory (expected DIR/<label>/<images>)")
    if options.manifest and "://" not in options.manifest and not os.path.isfile(options.manifest):
        raise ValueError(f"--manifest {options.manifest!r} is not a file (expected a CSV with path,label columns)")
    if options.manifest:
        from components.image_example_gen.sources import check_manifest_header

        check_manifest_header(options.manifest)
    options.validate()


def main(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
        check_inputs(options)
    except ValueError as error:
        print(f"image-retrain run: {error}", file=sys.stderr)
        return 2
    try:
        result = run_pipeline(options)
    except ValueError as error:  # bad data found by a component (e.g. fewer than two usable classes)
        print(f"image-retrain run: the pipeline stopped: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_result(result))
    return 0
