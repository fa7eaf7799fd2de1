"""What the open-source Kubeflow Pipelines v2 backend does with a compiled package, task by task, on one machine.

Ported from kubeflow/pipelines (backend, 2.x master, read at commit 7b70c7b):
  - backend/src/apiserver/template/v2_template.go (NewV2SpecTemplate) and template.go (isPipelineSpec): the upload
    checks: strict protojson parse, schemaVersion exactly 2.1.0, non-empty pipelineInfo.name and root, at most one
    PipelineSpec and one kubernetes PlatformSpec document. v2_template.go validatePipelineJobInputs: a run's
    parameters against the root inputDefinitions (unknown names, missing values without a default, JSON types).
  - backend/src/v2/compiler/argocompiler/argo.go (Compile): the root's `defaultValue`s fill the parameters a run left
    out; driver/root_dag.go: they become the root DAG's inputs.
  - backend/src/v2/driver/resolve.go (resolveInputs, resolveInputParameter, resolveUpstreamParameters): parameters
    from `runtimeValue.constant` (the schema-2.0 `constantValue` is "not implemented") with the `{{$.pipeline_job_*}}`
    placeholders, from the root DAG's inputs (`componentInputParameter`) and from an upstream task's output
    parameters (`taskOutputParameter`, the producer looked up by task name), then validation/conversion by
    inputDefinitions' `parameterType` (the deprecated `type` is not read, so an unset parameterType refuses every
    value); artifacts from the producer's recorded outputs.
  - backend/src/v2/driver/driver.go (provisionOutputs): output URIs `<root>/<pipeline>/<run id>/<task>/<uuid>/<key>`,
    the launcher-managed `executor-logs` output (system.Artifact, publish_logs on), output parameter files, the
    executor output file under the task root's local path.
  - backend/src/v2/driver/container.go, driver/cache.go (getFingerPrint, getFingerPrintsAndID, reuseCachedOutputs)
    and cacheutils/cache.go (GenerateCacheKey, GenerateFingerPrint, GetExecutionCache): with caching on in the server
    (CacheEnabled, the default) and the task's `cachingOptions.enableCache`, the sha256 of the cache key (input
    artifact ids, input parameter values, output artifact and parameter specs, image, command + args, sorted PVC
    claim names) looked up among the pipeline's earlier tasks (newest first); a hit reuses that execution's output
    artifacts and parameters and runs no pod; launcher_v2.go records the entry after a task ran.
  - backend/src/v2/metadata/client.go + converter.go: artifacts recorded with metadata as custom properties
    (StructValueToMLMDValue: string, number -> double, bool -> int, list/struct wrapped, null refused), plus
    display_name and store_session_info; read back for downstream tasks by toRuntimeArtifact with the MLMD id as
    name and `type: {instanceSchema: ""}` (GetOutputArtifactsByExecutionId leaves the schema empty).
  - backend/src/v2/component/launcher_v2.go: default parameter values, `{{$}}` replaced by the ExecutorInput as
    protojson (camelCase), every input artifact downloaded to its local path (LocalPathForURI) and every output
    uploaded from it (objectstore.UploadBlob: files only), the command run with its logs in executor-logs, a
    non-zero exit fails the task, the executor output file read strictly (missing -> empty), merged into every
    declared output and recorded (mergeRuntimeArtifacts: uri and metadata, never the type); output parameters from
    the executor output, else their files (collectOutputParameters); an empty schema title is fatal
    (metadata.SchemaToArtifactType).
  - backend/src/v2/driver/k8s.go: `pvcMount` entries of the kubernetes PlatformSpec become the pod's volume mounts.

Simplified here: no Argo, pods or MLMD server. A task is a subprocess with the project's interpreter in place of the
image's `python`; a pod's file system is a fresh folder per task (`IMAGE_RETRAIN_KFP_LOCAL_ROOT`, removed after the
task), so nothing passes between tasks but the object store; the object store is a folder (`minio://B/K` ->
`<store>/B/K`); a PersistentVolumeClaim is a host folder mounted at its own path in every "pod"; ML Metadata is a
dict; tasks run one at a time in dependency order; one namespace; no retries, sub-DAGs, loops or conditions.
`ApiServer` serves the v2beta1 REST calls kfp.Client makes to create a run, so `image-retrain kfp run` reaches it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid

import yaml
from google.protobuf import json_format, struct_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

SCHEMA_VERSION = "2.1.0"
EXECUTOR_LOGS = "executor-logs"
OBJECT_STORE = re.compile(r"^(gs://|s3://|minio://|mem://)([^/]+)/?(.*)$")
LOCAL_MOUNTS = {"gs://": "gcs", "minio://": "minio", "s3://": "s3"}
PARAMETER_TYPE = pipeline_spec_pb2.ParameterType
# The image's `ENV PYTHONPATH=/opt/image-retrain` (Dockerfile): the steps import this checkout's code.
IMAGE_PYTHONPATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def _go_json(value) -> str:
    """encoding/json.Marshal of a decoded JSON value (cache.go GenerateFingerPrint re-marshals protojson's output):
    keys sorted, no spaces, whole floats without a fraction, and <, >, & escaped."""
    def normal(item):
        if isinstance(item, dict):
            return {key: normal(child) for key, child in item.items()}
        if isinstance(item, list):
            return [normal(child) for child in item]
        if isinstance(item, float) and item.is_integer() and abs(item) < 1e21:
            return int(item)
        return item

    text = json.dumps(normal(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for character, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                              ("\u2029", "\\u2029")):
        text = text.replace(character, escape)
    return text


def cache_key(executor_input, component, container: dict, pvc_names: list[str]) -> dict:
    """cacheutils/cache.go GenerateCacheKey (as driver/cache.go getFingerPrint calls it), in protojson field names."""
    key = {
        "inputArtifactNames": {name: {"artifactNames": [artifact.name for artifact in artifacts.artifacts]}
                               for name, artifacts in executor_input.inputs.artifacts.items()},
        "inputParameterValues": {name: json_format.MessageToDict(value)
                                 for name, value in executor_input.inputs.parameter_values.items()},
        "outputArtifactsSpec": {},
        "outputParametersSpec": {},
        "containerSpec": {"image": container["image"],
                          "cmdArgs": list(container.get("command", [])) + list(container.get("args", [])),
                          "pvcNames": sorted(set(pvc_names))},
    }
    for name, artifacts in executor_input.outputs.artifacts.items():
        if artifacts.artifacts:
            wiped = pipeline_spec_pb2.RuntimeArtifact()  # the URI is left out
            wiped.name = artifacts.artifacts[0].name
            wiped.type.CopyFrom(artifacts.artifacts[0].type)
            if artifacts.artifacts[0].HasField("metadata"):
                wiped.metadata.CopyFrom(artifacts.artifacts[0].metadata)
            key["outputArtifactsSpec"][name] = json_format.MessageToDict(wiped)
    for name in executor_input.outputs.parameters:
        spec = component.output_definitions.parameters.get(name)
        if spec is None:
            raise BackendError(f"unknown parameter {name!r} found in ExecutorInput_Outputs")
        key["outputParametersSpec"][name] = PARAMETER_TYPE.ParameterTypeEnum.Name(spec.parameter_type)
    return {field: value for field, value in key.items() if value}  # protojson leaves empty maps out


def fingerprint(key: dict) -> str:
    """cache.go GenerateFingerPrint."""
    return hashlib.sha256(_go_json(key).encode()).hexdigest()


def validate_pipeline_job_inputs(spec, parameters: dict) -> None:
    """v2_template.go validatePipelineJobInputs (kfp.Client always sends a runtime config)."""
    required = spec.root.input_definitions.parameters
    for name, param in required.items():
        if name not in parameters:
            if not param.is_optional and not param.HasField("default_value"):
                raise BackendError(f"Invalid input error: parameter {name} is not optional, yet has neither default "
                                   "value nor user provided value")
            continue
        kind = parameters[name].WhichOneof("kind")
        expected = {PARAMETER_TYPE.NUMBER_DOUBLE: ("number_value", "double or integer"),
                    PARAMETER_TYPE.NUMBER_INTEGER: ("number_value", "double or integer"),
                    PARAMETER_TYPE.STRING: ("string_value", "string"), PARAMETER_TYPE.BOOLEAN: ("bool_value", "bool"),
                    PARAMETER_TYPE.LIST: ("list_value", "list"), PARAMETER_TYPE.STRUCT: ("struct_value", "struct")}
        if param.parameter_type not in expected:
            raise BackendError(f"Invalid input error: input parameter {name} has unspecified type")
        wanted, label = expected[param.parameter_type]
        if kind != wanted:
            raise BackendError(f"Invalid input error: input parameter {name} requires type {label}, but the input "
                               "parameter is not of the matching value type")
    extra = [name for name in parameters if name not in required]
    if extra:
        raise BackendError(f"Invalid input error: parameter(s) provided are not required by pipeline: "
                           f"{', '.join(extra)}")


class Backend:
    """One KFP deployment: an object store, PersistentVolumeClaims, ML Metadata and the cache shared by all runs."""

    def __init__(self, store_dir: str, work_dir: str, python: str = sys.executable, cache_enabled: bool = True):
        self.store_dir = store_dir
        self.work_dir = work_dir
        self.python = python
        self.cache_enabled = cache_enabled  # the API server's CacheEnabled (default true) -> drivers' cache_disabled
        self.next_artifact_id = 1
        self.runs: list[RunRecord] = []
        self.cache: dict[tuple[str, str], list[TaskRecord]] = {}  # (fingerprint, pipeline) -> tasks, newest last

    def store_path(self, uri: str) -> str:
        match = OBJECT_STORE.match(uri)
        if not match:
            raise BackendError(f"parse bucket config failed: unsupported Cloud bucket: {uri!r}")
        return os.path.join(self.store_dir, match.group(2), match.group(3))

    def submit(self, package_text: str, parameters: dict | None = None,
               pipeline_root: str | None = None) -> "RunRecord":
        """The API server's CreateRun up to the workflow: what it refuses raises BackendError; nothing runs yet."""
        spec, platform = upload(package_text)
        values = {name: json_format.ParseDict(value, struct_pb2.Value()) for name, value in (parameters or {}).items()}
        validate_pipeline_job_inputs(spec, values)
        for name, param in spec.root.input_definitions.parameters.items():  # argo.go Compile
            if name not in values:
                if param.HasField("default_value"):
                    values[name] = param.default_value
                elif param.is_optional:
                    values[name] = struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
        root = pipeline_root or spec.default_pipeline_root
        if not OBJECT_STORE.match(root):
            raise BackendError(f"parse bucket config failed: unsupported Cloud bucket: {root!r}")
        run = RunRecord(self, spec, platform, run_id=str(uuid.uuid4()), parameters=values)
        run.root = "/".join([root.rstrip("/"), spec.pipeline_info.name, run.run_id])
        self.runs.append(run)
        return run

    def create_run(self, package_text: str, parameters: dict | None = None,
                   pipeline_root: str | None = None) -> "RunRecord":
        run = self.submit(package_text, parameters, pipeline_root)
        run.execute()
        return run


@dataclasses.dataclass
class TaskRecord:
    name: str
    executor_input: pipeline_spec_pb2.ExecutorInput
    outputs: dict[str, RecordedArtifact]
    output_parameters: dict[str, struct_pb2.Value]
    log: str
    volume_mounts: list[dict]
    fingerprint: str = ""  # set when the task's cache is on
    cached: bool = False   # its outputs were reused from an earlier run's task; no pod ran


class RunRecord:
    def __init__(self, backend: Backend, spec, platform, run_id: str, parameters: dict[str, struct_pb2.Value]):
        self.backend = backend
        self.spec = spec
        self.platform = platform
        self.run_id = run_id
        self.parameters = parameters  # the root DAG's inputs: the run's values, then the package's defaults
        self.root = ""
        self.tasks: dict[str, TaskRecord] = {}
        self.error: BackendError | None = None  # for runs created through ApiServer, which answers before they end

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

    def _resolve_parameter(self, task_name: str, spec) -> struct_pb2.Value | None:
        """resolve.go resolveInputParameter; None for a null root input (ErrResolvedParameterNull)."""
        kind = spec.WhichOneof("kind")
        if kind == "component_input_parameter":
            value = self.parameters.get(spec.component_input_parameter)
            if value is None:
                raise BackendError(f"resolving input parameter: parent DAG does not have input parameter "
                                   f"{spec.component_input_parameter}")
            return None if value.WhichOneof("kind") == "null_value" else value
        if kind == "task_output_parameter":
            producer = self.tasks.get(spec.task_output_parameter.producer_task)
            if producer is None:
                raise BackendError(f"resolving input parameter: producer task, "
                                   f"{spec.task_output_parameter.producer_task}, not in tasks")
            return producer.output_parameters.get(spec.task_output_parameter.output_parameter_key)
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
        for name in outputs_spec.parameters:  # /tmp/kfp/outputs/<name> in the pod
            outputs.parameters[name].output_file = os.path.join(pod_root, "tmp", "kfp", "outputs", name)
        outputs.output_file = os.path.join(local_path_for_uri(task_root, pod_root), "output_metadata.json")
        return outputs

    def _volume_mounts(self, executor_label: str) -> list[dict]:
        """k8s.go: pvcMount entries of the executor's KubernetesExecutorConfig."""
        if self.platform is None:
            return []
        config = json_format.MessageToDict(self.platform.platforms["kubernetes"].deployment_spec)
        return config.get("executors", {}).get(executor_label, {}).get("pvcMount", [])

    def _cached_task(self, task_name: str, task_fingerprint: str, executor_input) -> TaskRecord | None:
        """cache.go GetExecutionCache (newest first) + driver/cache.go reuseCachedOutputs."""
        earlier = self.backend.cache.get((task_fingerprint, "pipeline/" + self.spec.pipeline_info.name))
        if not earlier:
            return None
        cached = earlier[-1]
        for name in executor_input.outputs.artifacts:
            if name not in cached.outputs:
                raise BackendError(f"unable to find artifact with name {name} in mlmd output artifacts")
        return dataclasses.replace(cached, name=task_name, executor_input=executor_input, log="", cached=True)

    # --- launcher -------------------------------------------------------------------------------------------

    def _run_task(self, task_name: str) -> TaskRecord:
        task = self.spec.root.dag.tasks[task_name]
        component = self.spec.components[task.component_ref.name]
        executors = json_format.MessageToDict(self.spec.deployment_spec)["executors"]
        container = executors[component.executor_label]["container"]
        volume_mounts = self._volume_mounts(component.executor_label)
        pod_root = os.path.join(self.backend.work_dir, "pods", f"{self.run_id[:8]}-{task_name}")
        os.makedirs(pod_root)
        try:
            executor_input = pipeline_spec_pb2.ExecutorInput()
            for name, spec in task.inputs.parameters.items():
                value = self._resolve_parameter(task_name, spec)
                if value is None:
                    if component.input_definitions.parameters[name].is_optional:
                        continue  # the launcher fills in its default
                    raise BackendError(f"resolved parameter is null: {spec.component_input_parameter}")
                executor_input.inputs.parameter_values[name].CopyFrom(value)
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

            task_fingerprint = ""
            if self.backend.cache_enabled and task.caching_options.enable_cache:
                task_fingerprint = fingerprint(cache_key(executor_input, component, container,
                                                         [mount["constant"] for mount in volume_mounts]))
                cached = self._cached_task(task_name, task_fingerprint, executor_input)
                if cached is not None:
                    return cached

            for name, spec in component.input_definitions.parameters.items():  # addDefaultParams
                if name not in executor_input.inputs.parameter_values and spec.HasField("default_value"):
                    executor_input.inputs.parameter_values[name].CopyFrom(spec.default_value)
            for artifact_list in executor_input.inputs.artifacts.values():
                for artifact in artifact_list.artifacts:
                    self._copy_files(self.backend.store_path(artifact.uri), local_path_for_uri(artifact.uri, pod_root))
            for artifact_list in executor_input.outputs.artifacts.values():  # prepareOutputFolders
                for artifact in artifact_list.artifacts:
                    os.makedirs(os.path.dirname(local_path_for_uri(artifact.uri, pod_root)), exist_ok=True)

            log = self._execute(container, executor_input, pod_root)
            executor_output = pipeline_spec_pb2.ExecutorOutput()
            if os.path.exists(executor_input.outputs.output_file):
                with open(executor_input.outputs.output_file) as f:
                    json_format.Parse(f.read(), executor_output)  # protojson.Unmarshal: strict
            output_parameters = self._collect_output_parameters(executor_input, executor_output, component)
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
            record = TaskRecord(task_name, executor_input, outputs, output_parameters, log, volume_mounts,
                                fingerprint=task_fingerprint)
            if task_fingerprint:  # launcher_v2.go: CreateExecutionCache after success
                self.backend.cache.setdefault((task_fingerprint, "pipeline/" + self.spec.pipeline_info.name),
                                              []).append(record)
            return record
        finally:
            shutil.rmtree(pod_root, ignore_errors=True)

    @staticmethod
    def _collect_output_parameters(executor_input, executor_output, component) -> dict[str, struct_pb2.Value]:
        """launcher_v2.go collectOutputParameters: the executor output's value, else the parameter's file."""
        values = dict(executor_output.parameter_values)
        for name, parameter in executor_input.outputs.parameters.items():
            if name in values:
                continue
            kind = component.output_definitions.parameters[name].parameter_type
            try:
                with open(parameter.output_file) as f:
                    text = f.read()
            except OSError as error:
                raise BackendError(f"failed to read output parameter name={name!r}: {error}") from None
            values[name] = struct_pb2.Value(string_value=text) if kind == PARAMETER_TYPE.STRING else \
                json_format.Parse(text, struct_pb2.Value())
        return values

    def _execute(self, container: dict, executor_input, pod_root: str) -> str:
        executor_input_json = json_format.MessageToJson(executor_input, indent=None)
        command = [part.replace("{{$}}", executor_input_json) for part in container["command"]]
        args = [part.replace("{{$}}", executor_input_json) for part in container.get("args", [])]
        if command[0] == "python":
            command[0] = self.backend.python  # the image's interpreter: the project's, with its C runtime
        env = {**os.environ, "IMAGE_RETRAIN_KFP_LOCAL_ROOT": pod_root, "TF_CPP_MIN_LOG_LEVEL": "2",
               "PATH": os.path.dirname(self.backend.python) + os.pathsep + os.environ.get("PATH", ""),
               "PYTHONPATH": IMAGE_PYTHONPATH}
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


class ApiServer(http.server.ThreadingHTTPServer):
    """The v2beta1 REST calls kfp.Client makes to create a run (healthz, experiments, runs), answered by `backend`: a
    refusal is the API server's error body (grpc-gateway status JSON, code 3 INVALID_ARGUMENT); an accepted run is
    executed before the answer (the real server answers at once), its failure kept in RunRecord.error."""

    def __init__(self, backend: Backend):
        super().__init__(("127.0.0.1", 0), _ApiHandler)
        self.backend = backend

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    @contextlib.contextmanager
    def serving(self):
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.shutdown()
            thread.join()


class _ApiHandler(http.server.BaseHTTPRequestHandler):
    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/apis/v2beta1/healthz"):
            return self._reply(200, {"multi_user": False})
        return self._reply(200, {})  # the experiments list: none yet

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/apis/v2beta1/experiments":
            return self._reply(200, {"experiment_id": "experiment-1", "display_name": body["display_name"]})
        if self.path != "/apis/v2beta1/runs":
            return self._reply(404, {"error_message": f"no such endpoint {self.path}", "code": 5})
        pipeline_spec = body["pipeline_spec"]
        documents = [pipeline_spec["pipeline_spec"], pipeline_spec.get("platform_spec")] \
            if "pipeline_spec" in pipeline_spec else [pipeline_spec]
        runtime_config = body.get("runtime_config") or {}
        try:
            run = self.server.backend.submit(yaml.safe_dump_all([d for d in documents if d]),
                                             runtime_config.get("parameters"), runtime_config.get("pipeline_root"))
        except BackendError as error:
            return self._reply(400, {"error_message": str(error), "code": 3, "message": str(error)})
        try:
            run.execute()
        except BackendError as error:
            run.error = error
        return self._reply(200, {**body, "run_id": run.run_id, "state": "FAILED" if run.error else "SUCCEEDED"})

    def log_message(self, *args):
        pass
