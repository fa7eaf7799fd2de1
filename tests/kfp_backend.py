"""What the open-source Kubeflow Pipelines v2 backend does with a compiled package, task by task, on one machine.

Ported from kubeflow/pipelines (backend, 2.x master, read at commit 7b70c7b):
  - backend/src/apiserver/template/v2_template.go (NewV2SpecTemplate) and template.go (isPipelineSpec): the upload
    checks: strict protojson parse, schemaVersion exactly 2.1.0, non-empty pipelineInfo.name and root, at most one
    PipelineSpec and one kubernetes PlatformSpec document.
  - backend/src/v2/driver/resolve.go (resolveInputs, resolveInputParameter): parameters only from
    `runtimeValue.constant` (the schema-2.0 `constantValue` is "not implemented"), the `{{$.pipeline_job_*}}`
    placeholders, then validation/conversion by inputDefinitions' `parameterType` (the deprecated `type` is not
    read, so an unset parameterType refuses every value); artifacts from the producer's recorded outputs.
  - backend/src/v2/driver/driver.go (provisionOutputs): output URIs `<root>/<pipeline>/<run id>/<task>/<uuid>/<key>`,
    the launcher-managed `executor-logs` output (system.Artifact, publish_logs on), the executor output file under the
    task root's local path.
  - backend/src/v2/metadata/client.go + converter.go: artifacts recorded with metadata as custom properties
    (StructValueToMLMDValue: string, number -> double, bool -> int, list/struct wrapped, null refused), plus
    display_name and store_session_info; read back for downstream tasks by toRuntimeArtifact with the MLMD id as
    name and `type: {instanceSchema: ""}` (GetOutputArtifactsByExecutionId leaves the schema empty).
  - backend/src/v2/component/launcher_v2.go: default parameter values, `{{$}}` replaced by the ExecutorInput as
    protojson (camelCase), every input artifact downloaded to its local path (LocalPathForURI) and every output
    uploaded from it (objectstore.UploadBlob: files only), the command run with its logs in executor-logs, a
    non-zero exit fails the task, the executor output file read strictly (missing -> empty), merged into every
    declared output and recorded; an empty schema title is fatal (metadata.SchemaToArtifactType).
  - backend/src/v2/driver/k8s.go: `pvcMount` entries of the kubernetes PlatformSpec become the pod's volume mounts.

Simplified here: no Argo, pods or MLMD server. A task is a subprocess with the project's interpreter in place of the
image's `python`; a pod's file system is a fresh folder per task (`IMAGE_RETRAIN_KFP_LOCAL_ROOT`, removed after the
task), so nothing passes between tasks but the object store; the object store is a folder (`minio://B/K` ->
`<store>/B/K`); a PersistentVolumeClaim is a host folder mounted at its own path in every "pod"; ML Metadata is a
dict; tasks run one at a time in dependency order; no retries, caching by KFP or pipeline-level input parameters.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import uuid

import yaml
from google.protobuf import json_format, struct_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

SCHEMA_VERSION = "2.1.0"
EXECUTOR_LOGS = "executor-logs"
OBJECT_STORE = re.compile(r"^(gs://|s3://|minio://|mem://)([^/]+)/?(.*)$")
LOCAL_MOUNTS = {"gs://": "gcs", "minio://": "minio", "s3://": "s3"}
PARAMETER_TYPE = pipeline_spec_pb2.ParameterType


class BackendError(Exception):
    """What the backend would answer or log when it refuses a package or fails a task."""


def upload(package_text: str):
    """NewV2SpecTemplate: (PipelineSpec, PlatformSpec or None), or BackendError with the API server's message."""
    spec = platform = None
    for value in yaml.safe_load_all(package_text):
        if value is None:
            continue
        if _is_pipeline_spec(value):
            if spec is not None:
                raise BackendError("Invalid input error: multiple pipeline specs provided")
            spec = pipeline_spec_pb2.PipelineSpec()
            json_format.ParseDict(value, spec)  # protojson.Unmarshal: unknown fields are errors
            if spec.schema_version != SCHEMA_VERSION:
                raise BackendError("Invalid input error: KFP only supports schema version 2.1.0, but the pipeline "
                                   f"spec has version {spec.schema_version}")
        elif _is_kubernetes_platform_spec(value):
            if platform is not None:
                raise BackendError("Invalid input error: multiple platform specs provided")
            platform = pipeline_spec_pb2.PlatformSpec()
            json_format.ParseDict(value, platform)
    if spec is None:
        raise BackendError("Invalid input error: no pipeline spec is provided")
    return spec, platform


def _is_pipeline_spec(value) -> bool:
    try:
        spec = json_format.ParseDict(value, pipeline_spec_pb2.PipelineSpec())
    except (json_format.ParseError, TypeError, AttributeError):
        return False
    return bool(spec.pipeline_info.name) and spec.HasField("root")


def _is_kubernetes_platform_spec(value) -> bool:
    try:
        platform = json_format.ParseDict(value, pipeline_spec_pb2.PlatformSpec())
    except (json_format.ParseError, TypeError, AttributeError):
        return False
    return "kubernetes" in platform.platforms


def local_path_for_uri(uri: str, pod_root: str) -> str:
    """launcher_v2.go LocalPathForURI, below the emulated pod's root."""
    for scheme, mount in LOCAL_MOUNTS.items():
        if uri.startswith(scheme):
            return os.path.join(pod_root, mount, uri[len(scheme):])
    raise BackendError(f"failed to generate local path for URI {uri}: unsupported storage scheme")


@dataclasses.dataclass
class RecordedArtifact:
    """An MLMD artifact as the launcher records it (custom properties as MLMD Value protos)."""
    id: int
    uri: str
    schema: str
    custom_properties: dict

    def to_runtime_artifact(self) -> pipeline_spec_pb2.RuntimeArtifact:
        """converter.go toRuntimeArtifact + OutputArtifact.ToRuntimeArtifact (with the schema it loses)."""
        artifact = pipeline_spec_pb2.RuntimeArtifact(name=str(self.id), uri=self.uri)
        for key, value in self.custom_properties.items():
            kind = value.WhichOneof("value")
            if kind == "string_value":
                artifact.metadata.fields[key].string_value = value.string_value
            elif kind in ("double_value", "int_value"):
                artifact.metadata.fields[key].number_value = float(getattr(value, kind))
            elif kind == "struct_value":
                artifact.metadata.fields[key].struct_value.CopyFrom(value.struct_value)
            else:
                raise BackendError(f"unknown property type in MLMD artifact: {kind}")
        artifact.type.instance_schema = ""
        return artifact


def _mlmd_value(value: struct_pb2.Value):
    """converter.go StructValueToMLMDValue."""
    from ml_metadata.proto import metadata_store_pb2

    kind = value.WhichOneof("kind")
    result = metadata_store_pb2.Value()
    if kind == "string_value":
        result.string_value = value.string_value
    elif kind == "number_value":
        result.double_value = value.number_value
    elif kind == "bool_value":
        result.int_value = int(value.bool_value)
    elif kind == "list_value":
        result.struct_value.fields["list"].list_value.CopyFrom(value.list_value)
    elif kind == "struct_value":
        result.struct_value.fields["struct"].struct_value.CopyFrom(value.struct_value)
    else:
        raise BackendError(f"unknown/unsupported value type *structpb.Value_{kind}")
    return result


def _pb_value_to_text(value: struct_pb2.Value) -> str:
    """converter.go PbValueToText."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return str(int(number)) if number.is_integer() else repr(number)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "null_value":
        return ""
    return json_format.MessageToJson(value, indent=None)


def _schema_title(schema: str) -> str:
    """metadata.SchemaToArtifactType: glog.Fatal("No title specified") kills the launcher."""
    title = (yaml.safe_load(schema) or {}).get("title", "") if schema else ""
    if not title:
        raise BackendError("launcher fatal: No title specified")
    return title


class Backend:
    """One KFP deployment: an object store, PersistentVolumeClaims and ML Metadata shared by all runs."""

    def __init__(self, store_dir: str, work_dir: str, python: str = sys.executable):
        self.store_dir = store_dir
        self.work_dir = work_dir
        self.python = python
        self.next_artifact_id = 1
        self.runs: list[RunRecord] = []

    def store_path(self, uri: str) -> str:
        match = OBJECT_STORE.match(uri)
        if not match:
            raise BackendError(f"parse bucket config failed: unsupported Cloud bucket: {uri!r}")
        return os.path.join(self.store_dir, match.group(2), match.group(3))

    def create_run(self, package_text: str, pipeline_root: str | None = None) -> "RunRecord":
        spec, platform = upload(package_text)
        root = pipeline_root or spec.default_pipeline_root
        if not OBJECT_STORE.match(root):
            raise BackendError(f"parse bucket config failed: unsupported Cloud bucket: {root!r}")
        run = RunRecord(self, spec, platform, run_id=str(uuid.uuid4()))
        run.root = "/".join([root.rstrip("/"), spec.pipeline_info.name, run.run_id])
        self.runs.append(run)
        run.execute()
        return run


@dataclasses.dataclass
class TaskRecord:
    name: str
    executor_input: pipeline_spec_pb2.ExecutorInput
    outputs: dict[str, RecordedArtifact]
    log: str
    volume_mounts: list[dict]


class RunRecord:
    def __init__(self, backend: Backend, spec, platform, run_id: str):
        self.backend = backend
        self.spec = spec
        self.platform = platform
        self.run_id = run_id
        self.root = ""
        self.tasks: dict[str, TaskRecord] = {}

    def execute(self) -> None:
        for task_name in self._dependency_order():
            self.tasks[task_name] = self._run_task(task_name)

    def _dependency_order(self) -> list[str]:
        tasks = self.spec.root.dag.tasks
        done: list[str] = []
        while len(done) < len(tasks):
            ready = sorted(name for name, task in tasks.items()
                           if name not in done and all(dep in done for dep in task.dependent_tasks))
            if not ready:
                raise BackendError("the DAG has a cycle or depends on an unknown task")
            done += ready
        return done

    # --- driver ---------------------------------------------------------------------------------------------

    def _resolve_parameter(self, task_name: str, spec) -> struct_pb2.Value:
        kind = spec.WhichOneof("kind")
        if kind != "runtime_value":
            raise BackendError(f"parameter spec of type {kind} is not supported by this emulation")
        value_kind = spec.runtime_value.WhichOneof("value")
        if value_kind != "constant":
            raise BackendError("resolving input parameter: param runtime value spec of type "
                               "*pipelinespec.ValueOrRuntimeParameter_ConstantValue not implemented")
        value = spec.runtime_value.constant
        placeholders = {"{{$.pipeline_job_name}}": self.spec.pipeline_info.name,
                        "{{$.pipeline_job_resource_name}}": self.run_id, "{{$.pipeline_job_uuid}}": self.run_id,
                        "{{$.pipeline_task_name}}": task_name}
        if value.WhichOneof("kind") == "string_value" and value.string_value in placeholders:
            return struct_pb2.Value(string_value=placeholders[value.string_value])
        return value

    @staticmethod
    def _validate_parameter_types(inputs, definitions) -> None:
        """resolve.go handleParamTypeValidationAndConversion."""
        for name, spec in definitions.parameters.items():
            if name not in inputs.parameter_values:
                if spec.is_optional:
                    continue
                if not spec.HasField("default_value"):
                    raise BackendError(f"neither value nor default value provided for non-optional parameter {name!r}")
                continue
            value = inputs.parameter_values[name]
            kind = value.WhichOneof("kind")
            expected = spec.parameter_type
            if expected == PARAMETER_TYPE.STRING:
                if kind != "string_value":
                    inputs.parameter_values[name].string_value = _pb_value_to_text(value)
                continue
            allowed = {"number_value": (PARAMETER_TYPE.NUMBER_DOUBLE, PARAMETER_TYPE.NUMBER_INTEGER),
                       "bool_value": (PARAMETER_TYPE.BOOLEAN,), "list_value": (PARAMETER_TYPE.LIST,),
                       "struct_value": (PARAMETER_TYPE.STRUCT, PARAMETER_TYPE.TASK_FINAL_STATUS)}
            if kind == "null_value":
                raise BackendError(f"got null for input parameter {name!r}")
            if expected not in allowed.get(kind, ()):
                raise BackendError(f"input parameter {name!r} type mismatch: expect "
                                   f"{PARAMETER_TYPE.ParameterTypeEnum.Name(expected)}, got {kind.split('_')[0]}")

    def _provision_outputs(self, task_name: str, outputs_spec, pod_root: str):
        """driver.go provisionOutputs (publish_logs on, the default)."""
        outputs = pipeline_spec_pb2.ExecutorInput.Outputs()
        declared = {name: spec.artifact_type for name, spec in outputs_spec.artifacts.items()}
        declared[EXECUTOR_LOGS] = pipeline_spec_pb2.ArtifactTypeSchema(schema_title="system.Artifact")
        task_root = "/".join([self.root, task_name, str(uuid.uuid4())])
        for name, artifact_type in declared.items():
            artifact = outputs.artifacts[name].artifacts.add(name=name, uri=f"{task_root}/{name}")
            artifact.type.CopyFrom(artifact_type)
        outputs.output_file = os.path.join(local_path_for_uri(task_root, pod_root), "output_metadata.json")
        return outputs

    def _volume_mounts(self, executor_label: str) -> list[dict]:
        """k8s.go: pvcMount entries of the executor's KubernetesExecutorConfig."""
        if self.platform is None:
            return []
        config = json_format.MessageToDict(self.platform.platforms["kubernetes"].deployment_spec)
        return config.get("executors", {}).get(executor_label, {}).get("pvcMount", [])

    # --- launcher -------------------------------------------------------------------------------------------

    def _run_task(self, task_name: str) -> TaskRecord:
        task = self.spec.root.dag.tasks[task_name]
        component = self.spec.components[task.component_ref.name]
        executors = json_format.MessageToDict(self.spec.deployment_spec)["executors"]
        container = executors[component.executor_label]["container"]
        pod_root = os.path.join(self.backend.work_dir, "pods", f"{self.run_id[:8]}-{task_name}")
        os.makedirs(pod_root)
        try:
            executor_input = pipeline_spec_pb2.ExecutorInput()
            for name, spec in task.inputs.parameters.items():
                executor_input.inputs.parameter_values[name].CopyFrom(self._resolve_parameter(task_name, spec))
            for name, spec in task.inputs.artifacts.items():
                producer = spec.task_output_artifact
                recorded = self.tasks[producer.producer_task].outputs.get(producer.output_artifact_key)
                if recorded is None:
                    raise BackendError(f"cannot find output artifact key {producer.output_artifact_key!r} in "
                                       f"producer task {producer.producer_task!r}")
                executor_input.inputs.artifacts[name].artifacts.append(recorded.to_runtime_artifact())
            self._validate_parameter_types(executor_input.inputs, component.input_definitions)
            executor_input.outputs.CopyFrom(self._provision_outputs(task_name, component.output_definitions,
                                                                    pod_root))
            for name, spec in component.input_definitions.parameters.items():  # addDefaultParams
                if name not in executor_input.inputs.parameter_values and spec.HasField("default_value"):
                    executor_input.inputs.parameter_values[name].CopyFrom(spec.default_value)

            for artifact_list in executor_input.inputs.artifacts.values():
                for artifact in artifact_list.artifacts:
                    self._copy_files(self.backend.store_path(artifact.uri), local_path_for_uri(artifact.uri, pod_root))
            for artifact_list in executor_input.outputs.artifacts.values():
                for artifact in artifact_list.artifacts:
                    os.makedirs(os.path.dirname(local_path_for_uri(artifact.uri, pod_root)), exist_ok=True)

            log = self._execute(container, executor_input, pod_root)
            executor_output = pipeline_spec_pb2.ExecutorOutput()
            if os.path.exists(executor_input.outputs.output_file):
                with open(executor_input.outputs.output_file) as f:
                    json_format.Parse(f.read(), executor_output)  # protojson.Unmarshal: strict
            outputs = {}
            for name, artifact_list in executor_input.outputs.artifacts.items():
                artifact = artifact_list.artifacts[0]
                produced = executor_output.artifacts.get(name)
                if name != EXECUTOR_LOGS and produced is not None and produced.artifacts:
                    if produced.artifacts[0].uri:
                        artifact.uri = produced.artifacts[0].uri
                    for key, value in produced.artifacts[0].metadata.fields.items():
                        artifact.metadata.fields[key].CopyFrom(value)
                local = local_path_for_uri(artifact.uri, pod_root)
                if os.path.exists(local):
                    self._copy_files(local, self.backend.store_path(artifact.uri))
                outputs[name] = self._record(name, artifact)
            return TaskRecord(task_name, executor_input, outputs, log, self._volume_mounts(component.executor_label))
        finally:
            shutil.rmtree(pod_root, ignore_errors=True)

    def _execute(self, container: dict, executor_input, pod_root: str) -> str:
        executor_input_json = json_format.MessageToJson(executor_input, indent=None)
        command = [part.replace("{{$}}", executor_input_json) for part in container["command"]]
        args = [part.replace("{{$}}", executor_input_json) for part in container.get("args", [])]
        if command[0] == "python":
            command[0] = self.backend.python  # the image's interpreter: the project's, with its C runtime
        env = {**os.environ, "IMAGE_RETRAIN_KFP_LOCAL_ROOT": pod_root, "TF_CPP_MIN_LOG_LEVEL": "2",
               "PATH": os.path.dirname(self.backend.python) + os.pathsep + os.environ.get("PATH", "")}
        logs = executor_input.outputs.artifacts[EXECUTOR_LOGS].artifacts[0]
        log_path = local_path_for_uri(logs.uri, pod_root)
        with open(log_path, "w") as log_file:
            process = subprocess.run(command + args, stdout=log_file, stderr=subprocess.STDOUT, cwd=pod_root,
                                     env=env, timeout=900)
        with open(log_path) as f:
            log = f.read()
        if process.returncode != 0:
            raise BackendError(f"task {executor_input.outputs.output_file}: exit status {process.returncode}\n"
                               + log[-6000:])
        return log

    def _record(self, name: str, artifact) -> RecordedArtifact:
        """launcher uploadOutputArtifacts -> metadata.Client.RecordArtifact."""
        kind = artifact.type.WhichOneof("kind")
        schema = artifact.type.instance_schema if kind == "instance_schema" else \
            f"title: {artifact.type.schema_title}"
        _schema_title(schema)
        from ml_metadata.proto import metadata_store_pb2

        properties = {key: _mlmd_value(value) for key, value in artifact.metadata.fields.items()}
        properties.setdefault("display_name", metadata_store_pb2.Value(string_value=name))
        properties.setdefault("store_session_info", metadata_store_pb2.Value(string_value="{}"))
        recorded = RecordedArtifact(self.backend.next_artifact_id, artifact.uri, schema, properties)
        self.backend.next_artifact_id += 1
        return recorded

    @staticmethod
    def _copy_files(source: str, destination: str) -> None:
        """objectstore.UploadBlob/DownloadBlob: files only (object stores have no empty folders)."""
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            shutil.copy2(source, destination)
            return
        for folder, _, files in os.walk(source):
            for file_name in files:
                target = os.path.join(destination, os.path.relpath(os.path.join(folder, file_name), source))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(os.path.join(folder, file_name), target)
