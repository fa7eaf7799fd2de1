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
import datetime
import json
import os
import sys

from components.image_example_gen import snapshot
from image_retrain import contract
from image_retrain.paths import absolute, is_uri, join
from pipelines import console
from pipelines import options as pipeline_options
from pipelines.options import PipelineOptions
from pipelines.run_lock import DEFAULT_LOCK_FILE, exclusive_lock


@dataclasses.dataclass
class RunOptions(PipelineOptions):
    output_dir: str = "output"
    pipeline_root: str | None = None  # default OUTPUT_DIR/tfx_pipeline_output; may be a gs:// URI
    # After a push, also export the pushed version for apps (pipelines/mobile_export.py) into OUTPUT_DIR/mobile.
    mobile_formats: tuple[str, ...] = ()
    force: bool = False  # run even when neither the images nor the settings changed since the last run

    @property
    def snapshot_path(self) -> str:
        """The data the last run trained on, and its settings (components/image_example_gen/snapshot.py)."""
        return self.path("tfx_metadata", self.pipeline_name, "data_snapshot.json")

    def settings_key(self) -> str:
        """Every setting that decides what a run does, as one string (a run's outcome depends on them and the data)."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("force", "mobile_formats")}
        return json.dumps(settings, sort_keys=True, default=str)

    def path(self, *parts: str) -> str:
        return os.path.abspath(os.path.join(self.output_dir, *parts))

    @property
    def metadata_path(self) -> str:
        return self.path("tfx_metadata", self.pipeline_name, "metadata.db")

    @property
    def serving_model_dir(self) -> str:
        return join(absolute(self.serving_dir or self.path("serving")), self.model_name)

    @property
    def pipeline_root_uri(self) -> str:
        return join(absolute(self.pipeline_root or self.path("tfx_pipeline_output")), self.pipeline_name)

    @property
    def default_embedding_cache_dir(self) -> str:
        return self.path("embedding_cache")

    @property
    def report_dir(self) -> str:
        return self.path("reports")

    def metadata_connection_config(self):
        from tfx.orchestration import metadata

        os.makedirs(os.path.dirname(self.metadata_path), exist_ok=True)
        return metadata.sqlite_metadata_connection_config(self.metadata_path)


@dataclasses.dataclass
class RunResult:
    blessed: bool
    pushed: bool
    pushed_version: str | None
    pushed_path: str | None
    accuracy: float | None
    baseline_accuracy: float | None
    served_as_trained: bool  # the load-and-query check before the push (ServingValidator's InfraBlessing)
    serving_check: str | None  # why it failed, when it did
    report_path: str | None
    embeddings_computed: int
    embeddings_cached: int
    rejects: int
    serving_model_dir: str
    run_id: str  # the pipeline_run context in ML Metadata
    mobile_exports: list[str] = dataclasses.field(default_factory=list)
    data_changes: str | None = None  # since the last run; None: the first run
    training: str | None = None  # continued which model, or trained from the image module, and why
    nothing_changed: bool = False  # so nothing ran: same images, same settings as the last run
    step_seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # wall time per step, in run order

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def unchanged(cls, options: RunOptions) -> RunResult:
        return cls(blessed=False, pushed=False, pushed_version=None, pushed_path=None, accuracy=None,
                   baseline_accuracy=None, served_as_trained=False, serving_check=None, report_path=None,
                   embeddings_computed=0, embeddings_cached=0, rejects=0, serving_model_dir=options.serving_model_dir,
                   run_id="", data_changes="no change", nothing_changed=True)


# The components whose outputs make up a run's result (their ids in the pipeline, see pipelines/pipeline.py).
INGEST_NODE, EMBED_NODE, REPORT_NODE, PUSH_NODE = "ImageExampleGen", "ImageEmbedder", "ModelReport", "AtomicPusher"
VALIDATE_NODE, TRAIN_NODE = "ServingValidator", "Trainer"


def run_outputs(metadata_path: str, pipeline_name: str, run_id: str | None = None
                ) -> tuple[str, dict[tuple[str, str], list]]:
    """(run id, {(component id, output key): [tfx Artifact]}) of one pipeline run, from ML Metadata: the executions in
    the run's `pipeline_run` context (the newest run when `run_id` is None) and their output events."""
    from tfx import v1 as tfx
    from tfx.dsl.compiler import compiler_utils
    from tfx.dsl.compiler import constants as compiler_constants
    from tfx.orchestration import metadata as tfx_metadata
    from tfx.orchestration.portable.mlmd import execution_lib

    import image_retrain.artifact_types  # noqa: F401 - so outputs of the custom types decode as their classes

    with tfx_metadata.Metadata(tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)) as handle:
        if run_id is None:  # the metadata store is the pipeline's own (build_pipeline): its newest run
            runs = handle.store.get_contexts_by_type(compiler_constants.PIPELINE_RUN_CONTEXT_TYPE_NAME)
            run_id = max(runs, key=lambda run: run.id).name if runs else None
        run = handle.store.get_context_by_type_and_name(compiler_constants.PIPELINE_RUN_CONTEXT_TYPE_NAME, run_id) \
            if run_id else None
        if run is None:
            raise ValueError(f"no pipeline run {run_id or ''} of {pipeline_name!r} in {metadata_path}")
        outputs = {}
        for node_id in (INGEST_NODE, EMBED_NODE, TRAIN_NODE, REPORT_NODE, VALIDATE_NODE, PUSH_NODE):
            node = handle.store.get_context_by_type_and_name(
                compiler_constants.NODE_CONTEXT_TYPE_NAME, compiler_utils.node_context_name(pipeline_name, node_id))
            if node is None:
                continue
            in_run = {execution.id for execution in handle.store.get_executions_by_context(run.id)}
            for execution in handle.store.get_executions_by_context(node.id):
                if execution.id not in in_run:
                    continue
                for key, artifacts in execution_lib.get_output_artifacts(handle, execution.id).items():
                    outputs[(node_id, key)] = artifacts
        return run.name, outputs


def collect_result(options: RunOptions, metadata_path: str, run_id: str | None = None) -> RunResult:
    """What one run (the newest when `run_id` is None) produced, from its artifacts' properties in ML Metadata."""
    from tfx.types import standard_component_specs

    from pipelines.step_times import step_seconds

    run_id, outputs = run_outputs(metadata_path, options.pipeline_name, run_id)

    def output(node_id: str, key: str):
        artifacts = outputs.get((node_id, key))
        return artifacts[0] if artifacts else None

    def int_property(artifact, name: str) -> int:
        return artifact.get_int_custom_property(name) if artifact is not None else 0

    def float_property(artifact, name: str) -> float | None:
        return artifact.get_float_custom_property(name) \
            if artifact is not None and artifact.has_custom_property(name) else None

    pushed = output(PUSH_NODE, standard_component_specs.PUSHED_MODEL_KEY)
    report = output(REPORT_NODE, contract.REPORT_KEY)
    scalars = output(REPORT_NODE, contract.METRICS_KEY)
    embedded = output(EMBED_NODE, contract.EMBEDDED_EXAMPLES_KEY)
    ingested = output(INGEST_NODE, standard_component_specs.EXAMPLES_KEY)
    validated = output(VALIDATE_NODE, standard_component_specs.BLESSING_KEY)
    model_run = output(TRAIN_NODE, standard_component_specs.MODEL_RUN_KEY)
    was_pushed = bool(int_property(pushed, contract.PUSHED_PROPERTY))
    return RunResult(
        blessed=bool(int_property(scalars, contract.BLESSED_PROPERTY)),
        pushed=was_pushed,
        pushed_version=pushed.get_string_custom_property(contract.PUSHED_VERSION_PROPERTY)
        if was_pushed else None,
        pushed_path=pushed.get_string_custom_property(contract.PUSHED_DESTINATION_PROPERTY)
        if was_pushed else None,
        accuracy=float_property(scalars, contract.ACCURACY_PROPERTY),
        baseline_accuracy=float_property(scalars, contract.BASELINE_ACCURACY_PROPERTY),
        served_as_trained=bool(int_property(validated, contract.INFRA_BLESSED_PROPERTY)),
        serving_check=(validated.get_string_custom_property(contract.INFRA_REASON_PROPERTY) or None)
        if validated is not None else None,
        report_path=os.path.join(report.uri, contract.REPORT_HTML_FILE) if report is not None else None,
        embeddings_computed=int_property(embedded, contract.EMBEDDINGS_COMPUTED_PROPERTY),
        embeddings_cached=int_property(embedded, contract.EMBEDDINGS_CACHED_PROPERTY),
        rejects=int_property(ingested, contract.NUM_REJECTS_PROPERTY),
        training=how_trained(model_run.uri) if model_run is not None else None,
        serving_model_dir=options.serving_model_dir,
        run_id=run_id,
        step_seconds=step_seconds(metadata_path, run_id),
    )


def how_trained(model_run_uri: str) -> str | None:
    """The Trainer's own account (training_summary.json, pipelines/models/trainer.py run_fn)."""
    import tensorflow as tf

    path = os.path.join(model_run_uri, contract.TRAINING_SUMMARY_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        summary = json.load(f)
    start, warm = summary.get("start", {}), summary.get("warm_start")
    if warm:
        return (f"continued {start.get('warm_start_from')} on {warm['new_images']} new and "
                f"{warm['replayed_images']} replayed images ({start.get('why')})")
    return f"from the image module: {start.get('why')}" if start else None


def run_pipeline(options: RunOptions) -> RunResult:
    """One run; it stops after listing the images, before TFX starts, when they and the settings are the last
    run's (unless `options.force`)."""
    options.validate()
    files = snapshot.take(absolute(options.data_dir) if options.data_dir else None,
                          absolute(options.manifest) if options.manifest else None,
                          allow_paths_outside_manifest=options.allow_paths_outside_manifest)
    previous = snapshot.load(options.snapshot_path)
    change = snapshot.changes(previous[1], files) if previous else None
    if change is not None and change.count == 0 and previous[0] == options.settings_key() and not options.force:
        return RunResult.unchanged(options)
    result = collect_result(options, options.metadata_path, run_tfx_pipeline(options))
    result.data_changes = change.describe() if change is not None else None
    snapshot.save(options.snapshot_path, files, options.settings_key())
    if result.pushed and options.mobile_formats:
        result.mobile_exports = export_for_apps(result.pushed_path, options)
    return result


def run_tfx_pipeline(options: RunOptions) -> str:
    """create_pipeline(options) on TFX's LocalDagRunner; returns the run's id."""
    from tfx import v1 as tfx
    from tfx.dsl.compiler import compiler
    from tfx.dsl.compiler import constants as compiler_constants
    from tfx.orchestration.portable import runtime_parameter_utils

    from pipelines.pipeline import create_pipeline

    # LocalDagRunner names a run by the time it starts; the same name, chosen here, finds this run's outputs.
    run_id = datetime.datetime.now().isoformat()
    pipeline_ir = compiler.Compiler().compile(create_pipeline(options))
    runtime_parameter_utils.substitute_runtime_parameter(
        pipeline_ir, {compiler_constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    tfx.orchestration.LocalDagRunner().run_with_ir(pipeline_ir)
    return run_id


def export_for_apps(version_dir: str, options: RunOptions) -> list[str]:
    """The pipeline's optional last step: the pushed version as OUTPUT_DIR/mobile/<model>-<version>.<format>."""
    from pipelines.mobile_export import EXTENSIONS, ExportedClassifier, export_coreml, export_tflite

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
    pipeline_options.add_arguments(parser, RunOptions)
    parser.add_argument("--output-dir", default="output", help="Pipeline artifacts, metadata, cache and reports; "
                                                               "also the default serving dir and embedding cache.")
    parser.add_argument("--pipeline-root", help="Where every component's artifacts go (a path or a gs:// URI; "
                                                "default OUTPUT_DIR/tfx_pipeline_output). ML Metadata stays in "
                                                "OUTPUT_DIR: its SQLite file must be local.")
    parser.add_argument("--mobile-export", action="append", dest="mobile_formats", choices=["tflite", "coreml"],
                        default=None, help="After a push, also write the model for apps to OUTPUT_DIR/mobile "
                                           "(repeatable; see `image-retrain export`).")
    parser.add_argument("--force", action="store_true", help="Run even when neither the images nor the settings "
                                                             "changed since the last run (which otherwise stops "
                                                             "after listing them).")
    parser.add_argument("--lock-file", help="Lock that keeps runs on one output folder from overlapping, shared with "
                                            f"`image-retrain schedule` (default: OUTPUT_DIR/{DEFAULT_LOCK_FILE}).")
    parser.add_argument("--json", action="store_true", help="Print the result as JSON.")
    parser.add_argument("--verbose", action="store_true", help="Also show TensorFlow/TFX/Beam warnings and start-up "
                                                               "lines and Keras' per-epoch lines (hidden by default).")


def options_from_args(args: argparse.Namespace) -> RunOptions:
    return RunOptions(**pipeline_options.from_args(args), output_dir=args.output_dir, pipeline_root=args.pipeline_root,
                      mobile_formats=tuple(getattr(args, "mobile_formats", None) or ()),
                      force=getattr(args, "force", False))


def format_result(result: RunResult) -> str:
    if result.nothing_changed:
        return ("nothing to do: the images and the settings are those of the last run (nothing trained or pushed; "
                "--force runs anyway)")

    def pct(value):
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        f"test accuracy:      {pct(result.accuracy)} (baseline {pct(result.baseline_accuracy)})",
        f"blessed:            {result.blessed}",
        f"served as trained:  {result.served_as_trained}" + (f" ({result.serving_check})" if result.serving_check
                                                               else ""),
        f"pushed:             {result.pushed_path or 'no (not blessed)'}",
        f"data:               {result.data_changes or 'first run'}" + (" since the last run" if result.data_changes
                                                                         else ""),
        f"training:           {result.training or 'n/a'}",
        f"embeddings:         {result.embeddings_computed} computed, {result.embeddings_cached} from cache",
        f"rejected images:    {result.rejects}",
        f"report:             {result.report_path}",
        f"model base path:    {result.serving_model_dir}",
        # Steps under half a second (the resolvers, SchemaGen, the pusher's copy) left out.
        "step times:         " + (", ".join(f"{node_id} {seconds:.0f} s" for node_id, seconds
                                            in result.step_seconds.items() if seconds >= 0.5) or "n/a"),
    ]
    lines += [f"for apps:           {path}" for path in result.mobile_exports]
    return "\n".join(lines)


def check_inputs(options: RunOptions) -> None:
    """Fails in a second, before TFX starts, on inputs that cannot work."""
    if options.data_dir and not is_uri(options.data_dir) and not os.path.isdir(options.data_dir):
        raise ValueError(f"--data-dir {options.data_dir!r} is not a directory (expected DIR/<label>/<images>)")
    if options.manifest and not is_uri(options.manifest) and not os.path.isfile(options.manifest):
        raise ValueError(f"--manifest {options.manifest!r} is not a file (expected a CSV with path,label columns)")
    if options.manifest:
        from components.image_example_gen.sources import check_manifest_header

        check_manifest_header(options.manifest)
    options.validate()


def main(args: argparse.Namespace) -> int:
    console.configure(args.verbose)
    try:
        options = options_from_args(args)
        check_inputs(options)
    except ValueError as error:
        print(f"image-retrain run: {error}", file=sys.stderr)
        return 2
    if not args.verbose:
        console.quiet_keras()
    lock_path = args.lock_file or options.path(DEFAULT_LOCK_FILE)
    with exclusive_lock(lock_path) as acquired:
        if not acquired:  # two runs would push into, and record in, the same folders at once
            print(f"image-retrain run: another run (a scheduled one?) holds {lock_path}; start this one once it "
                  "has finished", file=sys.stderr)
            return 1
        try:
            result = run_pipeline(options)
        except ValueError as error:  # bad data found by a component (e.g. fewer than two usable classes)
            print(f"image-retrain run: the pipeline stopped: {error}", file=sys.stderr)
            return 1
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_result(result))
    return 0
