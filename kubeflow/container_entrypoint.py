"""Container entrypoint of every step of the compiled package on the open-source Kubeflow Pipelines v2 backend.

TFX's stock entrypoint (`tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor`) is written for Vertex AI
and fails under the open-source launcher (backend/src/v2/component/launcher_v2.go, driver/driver.go,
metadata/client.go). This module adapts the launcher's ExecutorInput, then runs TFX's own executor runner:

  - `executor-logs`: the driver adds this launcher-managed output (schema title `system.Artifact`) to every task when
    publish_logs is on (the default); it is not a TFX output, so it is removed (the launcher records it itself).
  - Input artifacts arrive with `type: {instanceSchema: ""}` (metadata.OutputArtifact.ToRuntimeArtifact leaves the
    schema empty); their types are restored from the component's inputs spec (`--json_serialized_inputs_spec_args`).
  - Object-store URIs are mapped to the pod-local paths the launcher syncs (component.LocalPathForURI: gs://B/K ->
    /gcs/B/K, minio:// -> /minio/, s3:// -> /s3/): it downloads every input artifact there before the step and
    uploads each output from there after it, so executors use plain files and the pipeline root may be any store the
    launcher speaks, KFP's default MinIO bucket included (TensorFlow cannot open minio:// or s3:// itself).
    The executor output reports the remote URIs again.
    A step whose Beam pipeline runs on a cluster (`--runner=DataflowRunner`, `PortableRunner`, ...) is the exception:
    the launcher's copies live in this pod only, so its workers open the artifacts where they are; they must be
    `gs://` (which TensorFlow and Beam open themselves) and stay unmapped. The launcher then finds no local output to
    upload, which it allows ("We allow components to not produce output files", uploadOutputArtifacts).
  - KFP's own schema titles (`system.Metrics`, `system.HTML`, ... : what the KFP UI renders) name no Python class,
    and TFX imports a title as a class path (kubeflow_v2_entrypoint_utils._retrieve_class_path): such artifacts get
    the project's class (image_retrain/artifact_types.py) as their type. The launcher records every output under the
    type of its own executor input, whatever the executor reports (launcher_v2.go mergeRuntimeArtifacts).
  - Metadata values that are null are dropped from the executor output: the launcher refuses them
    (metadata.StructValueToMLMDValue), TFX writes them for unset properties. So is the `tfx_version` TFX tags every
    output with, on system.Metrics outputs: the KFP UI shows every custom property of those as a metric.

IMAGE_RETRAIN_KFP_LOCAL_ROOT (default `/`) moves the local mount points; only an emulation of the launcher outside a
pod (tests/kfp_backend.py) sets it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import yaml

from pipelines.beam_args import runs_on_a_cluster
from serving.path_confinement import is_within

EXECUTOR_LOGS_OUTPUT = "executor-logs"
LOCAL_ROOT_ENV = "IMAGE_RETRAIN_KFP_LOCAL_ROOT"
# component.LocalPathForURI: the object-store schemes the launcher mirrors to local paths, and where.
LOCAL_MOUNTS = {"gs://": "gcs", "minio://": "minio", "s3://": "s3"}
# What a step's workers on a Beam cluster open directly (TensorFlow and Beam both have a gs:// filesystem).
CLUSTER_READABLE_SCHEMES = ("gs://",)
# outputs_utils.tag_output_artifacts_with_version's custom property.
TFX_VERSION_PROPERTY = "tfx_version"


def local_path_for_uri(uri: str, local_root: str = "/") -> str | None:
    """The launcher's local copy of an object-store `uri`, which must stay inside its mount: `gs:///etc` (an empty
    bucket) would be /etc itself, `gs://b/../../etc` above it (ValueError)."""
    for scheme, mount in LOCAL_MOUNTS.items():
        if uri.startswith(scheme):
            mount_path = os.path.join(local_root, mount)
            local = os.path.join(mount_path, uri[len(scheme):])
            if uri[len(scheme):].startswith("/") or not is_within(local, mount_path):
                raise ValueError(f"artifact URI {uri!r} does not name a bucket object: its local copy would lie "
                                 f"outside {mount_path}")
            return local
    return None


def adapt_executor_input(executor_input: dict, inputs_spec: dict | None, local_root: str = "/",
                         beam_on_a_cluster: bool = False, class_path_by_title: dict[str, str] | None = None
                         ) -> tuple[dict, dict[str, str]]:
    """The launcher's ExecutorInput (protojson dict) as TFX's runner reads it, and local path -> remote URI.
    `class_path_by_title`: the TFX artifact class of each schema title that names none (KFP's system.* titles)."""
    adapted = json.loads(json.dumps(executor_input))
    remote_by_local: dict[str, str] = {}

    def retype(artifact: dict) -> None:
        class_path = (class_path_by_title or {}).get(_schema_title(artifact.get("type", {})))
        if class_path:
            artifact["type"] = {"schemaTitle": class_path}

    def localize(artifact: dict) -> None:
        uri = artifact.get("uri", "")
        if beam_on_a_cluster:
            if local_path_for_uri(uri) is not None and not uri.startswith(CLUSTER_READABLE_SCHEMES):
                raise ValueError(f"artifact {uri} is out of reach of this step's Beam workers, which run on a "
                                 "cluster: the launcher copies artifacts into the step's pod only, and TensorFlow "
                                 "cannot open this scheme; compile with a gs:// --pipeline-root")
            return
        local = local_path_for_uri(uri, local_root)
        if local is not None:
            remote_by_local[local] = artifact["uri"]
            artifact["uri"] = local

    input_types = {name: spec["artifactType"] for name, spec in ((inputs_spec or {}).get("artifacts") or {}).items()}
    for name, artifact_list in (adapted.get("inputs", {}).get("artifacts") or {}).items():
        for artifact in artifact_list.get("artifacts", []):
            declared = input_types.get(name)
            if not _schema_title(artifact.get("type", {})):
                if declared is None:
                    raise ValueError(f"input artifact {name!r} has no type and the inputs spec does not declare it")
                artifact["type"] = declared
            retype(artifact)
            localize(artifact)
            # Object stores keep no empty folders, so an empty input artifact arrives as nothing at all.
            if artifact["uri"] in remote_by_local:
                os.makedirs(artifact["uri"], exist_ok=True)

    outputs = adapted.get("outputs", {}).get("artifacts") or {}
    outputs.pop(EXECUTOR_LOGS_OUTPUT, None)
    for artifact_list in outputs.values():
        for artifact in artifact_list.get("artifacts", []):
            retype(artifact)
            localize(artifact)
    return adapted, remote_by_local


def _schema_title(artifact_type: dict) -> str:
    if artifact_type.get("schemaTitle"):
        return artifact_type["schemaTitle"]
    schema = yaml.safe_load(artifact_type.get("instanceSchema") or "") or {}
    return schema.get("title", "") if isinstance(schema, dict) else ""


def outputs_of_type(executor_input: dict, title: str) -> set[str]:
    """The names of the launcher's outputs whose schema title is `title`."""
    outputs = executor_input.get("outputs", {}).get("artifacts") or {}
    return {name for name, artifact_list in outputs.items()
            if any(_schema_title(artifact.get("type", {})) == title for artifact in artifact_list.get("artifacts", []))}


def restore_remote_uris(executor_output: dict, remote_by_local: dict[str, str], metrics_outputs: set[str] = frozenset()
                        ) -> dict:
    """Reports remote URIs (the launcher merges them into its records) and drops null metadata values, and TFX's
    version tag from `metrics_outputs` (system.Metrics: the UI would list it as a metric)."""
    for name, artifact_list in (executor_output.get("artifacts") or {}).items():
        for artifact in artifact_list.get("artifacts", []):
            artifact["uri"] = remote_by_local.get(artifact.get("uri", ""), artifact.get("uri", ""))
            metadata = artifact.get("metadata")
            if metadata:
                artifact["metadata"] = {key: value for key, value in metadata.items() if value is not None
                                        and not (name in metrics_outputs and key == TFX_VERSION_PROPERTY)}
    return executor_output


def _parse_flags(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor_class_path", required=True)
    parser.add_argument("--json_serialized_invocation_args", required=True, help="the launcher's {{$}}")
    parser.add_argument("--json_serialized_inputs_spec_args", default="")
    return parser.parse_known_args(argv)  # the rest are Beam pipeline arguments, as for TFX's entrypoint


def main(argv: list[str] | None = None) -> int:
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor  # noqa: PLC0415 - kfp compile imports this module for its constants before TF loads

    from image_retrain import artifact_types  # noqa: PLC0415 - TFX's, as above

    args, beam_args = _parse_flags(sys.argv[1:] if argv is None else argv)
    inputs_spec = json.loads(args.json_serialized_inputs_spec_args) if args.json_serialized_inputs_spec_args else None
    launcher_input = json.loads(args.json_serialized_invocation_args)
    executor_input, remote_by_local = adapt_executor_input(
        launcher_input, inputs_spec, os.environ.get(LOCAL_ROOT_ENV, "/"),
        beam_on_a_cluster=runs_on_a_cluster(beam_args), class_path_by_title=artifact_types.CLASS_PATH_BY_KFP_TITLE)
    args.json_serialized_invocation_args = json.dumps(executor_input)
    kubeflow_v2_run_executor._run_executor(args, beam_args)

    output_file = executor_input["outputs"]["outputFile"]
    with open(output_file) as f:
        executor_output = json.load(f)
    with open(output_file, "w") as f:
        json.dump(restore_remote_uris(executor_output, remote_by_local,
                                      outputs_of_type(launcher_input, artifact_types.Metrics.TYPE_NAME)), f)
    return 0


if __name__ == "__main__":
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    # The pod's log: TFX's INFO lines (absl's logger propagates to the root) and the steps' own, on stderr.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
