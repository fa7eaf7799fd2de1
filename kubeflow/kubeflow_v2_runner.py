"""Compile `create_pipeline()` for Kubeflow Pipelines v2 with TFX's KubeflowV2DagRunner.

The output is `pipeline.yaml`: the bare PipelineSpec that `kfp.Client` uploads (TFX writes only `pipelineSpec` for a
.yaml name; a .json name would give Vertex AI's PipelineJob wrapper, which open-source KFP rejects) in schema 2.1.0,
the only one the open-source KFP backend accepts. On top of what TFX writes, this module
  - runs every step through `kubeflow.container_entrypoint`, which adapts the open-source launcher's executor input
    to TFX's executors (TFX's stock entrypoint fails under it);
  - builds the pipeline with the served-model baseline (open-source KFP has no TFX resolver executors) with the
    candidate as the first run's baseline (the KFP launcher always records declared outputs): CompileOptions' defaults;
  - sets `defaultPipelineRoot`, which TFX leaves to the Vertex runtimeConfig that a .yaml package drops;
  - compiles what create_pipeline lets a run change (`run_parameter`) to TFX RuntimeParameters, the package's root
    input parameters, and writes their compiled values as `defaultValue`, which TFX never writes (without one the API
    server refuses every run that does not set them: apiserver/template/v2_template.go validatePipelineJobInputs);
  - names the producer of a task output parameter by its task name: TFX writes `<component id>_task`, and the
    driver looks tasks up by name (driver/resolve.go resolveUpstreamParameters, "producer task, ..., not in tasks");
  - compiles InputFingerprint uncached, whatever --enable-cache says: it is what puts the images' state into the
    ingestion's cache key, so it must look every time (driver/cache.go getFingerPrintsAndID honours each task's
    `cachingOptions.enableCache`; TFX sets it on every task or none);
  - appends a kfp-kubernetes platform document mounting PersistentVolumeClaims into every step (`--pvc`), e.g. the
    claim TF Serving reads the model base path from, so the Pusher writes where the server polls.
  - makes distributed Beam runners run the project's image on their workers (pipelines/beam_args.py, `--image`);
  - refuses what the backend would refuse at run time: a pipeline root that is not object storage, container paths
    outside the mounted volumes.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import re
from typing import TYPE_CHECKING, ClassVar

import yaml

from image_retrain.paths import is_uri, join
from kubeflow.container_entrypoint import CLUSTER_READABLE_SCHEMES
from pipelines import configs
from pipelines.beam_args import beam_runner, runs_on_a_cluster
from pipelines.options import PipelineOptions

if TYPE_CHECKING:
    from tfx.orchestration.pipeline import Pipeline

DEFAULT_IMAGE = configs.IMAGE
DEFAULT_OUTPUT = "pipeline.yaml"
# The project's adapter of TFX's container entrypoint to the open-source KFP launcher (see its docstring).
CONTAINER_COMMAND = ("python", "-m", "kubeflow.container_entrypoint")
# backend/src/v2/objectstore (ParseBucketPathToConfig): the pipeline roots the launcher accepts.
OBJECT_STORE_SCHEMES = ("gs://", "s3://", "minio://", "mem://")
KFP_DEFAULT_PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
# What TensorFlow's own file I/O opens (non-artifact paths: data, cache, serving dir).
TF_FILESYSTEM_SCHEMES = ("gs://",)

_PVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclasses.dataclass(frozen=True)
class PvcMount:
    claim_name: str
    mount_path: str

    @classmethod
    def parse(cls, text: str) -> "PvcMount":
        """`CLAIM:/mount/path` (a Kubernetes PersistentVolumeClaim name and an absolute path)."""
        claim, sep, path = text.partition(":")
        if not sep or not claim or not path:
            raise ValueError(f"--pvc expects CLAIM:/MOUNT/PATH, got {text!r}")
        if len(claim) > 253 or not _PVC_NAME.match(claim):
            raise ValueError(f"--pvc claim name {claim!r} is not a valid Kubernetes resource name")
        if not path.startswith("/"):
            raise ValueError(f"--pvc mount path {path!r} must be absolute")
        return cls(claim, path.rstrip("/") or "/")

    def to_executor_config(self) -> dict:
        # kfp-kubernetes' KubernetesExecutorConfig.pvc_mount, as `kubernetes.mount_pvc()` writes it (the constant
        # name twice: `pvcNameParameter`, plus the deprecated `constant` that older backends read).
        return {"constant": self.claim_name, "mountPath": self.mount_path,
                "pvcNameParameter": {"runtimeValue": {"constant": self.claim_name}}}


@dataclasses.dataclass
class CompileOptions(PipelineOptions):
    image: str = DEFAULT_IMAGE
    pipeline_root: str | None = None          # object storage; every artifact is written below it
    pvcs: list[PvcMount] = dataclasses.field(default_factory=list)
    output: str = DEFAULT_OUTPUT
    allow_local_pipeline_root: bool = False   # for emulating the backend on one machine only

    # Open-source KFP cannot run TFX resolver executors: runs compare against the served model, and its launcher
    # records every declared output, so a first run publishes the candidate as its own baseline.
    DEFAULT_BASELINE: ClassVar[str] = "served_model"
    WHEN_NOTHING_SERVED: ClassVar[str] = "candidate"

    @property
    def pipeline_root_uri(self) -> str:
        return self.pipeline_root

    @property
    def default_embedding_cache_dir(self) -> str | None:
        return join(self.pipeline_root, "embedding_cache") if self.pipeline_root else None

    @property
    def worker_image(self) -> str:
        return self.image

    def run_parameter(self, name: str, value: int | float | str):
        from tfx.orchestration import data_types

        return data_types.RuntimeParameter(name=name, ptype=type(value), default=value)

    def validate(self) -> None:
        super().validate()
        self._check_package()
        self._check_pipeline_root()
        self._check_paths()

    def _check_package(self) -> None:
        if not self.image:
            raise ValueError("--image is required (the image built from the repository's Dockerfile)")
        if self.resolved_baseline != self.DEFAULT_BASELINE:
            raise ValueError("--baseline latest_blessed needs TFX resolver executors, which the open-source KFP "
                             "backend cannot run; Kubeflow runs compare against the served model (served_model)")
        if not self.output.endswith((".yaml", ".yml")):
            raise ValueError(f"--output must end with .yaml or .yml (kfp.Client's package format), got {self.output!r}")

    @property
    def _cluster_runner(self) -> str | None:
        """The runner of the first Beam step that runs on a cluster, or None."""
        return next((beam_runner(args) for args in (self.step_beam_args, self.step_beam_args + self.embed_beam_args)
                     if runs_on_a_cluster(args)), None)

    def _check_pipeline_root(self) -> None:
        if not self.pipeline_root:
            raise ValueError(f"--pipeline-root is required: object storage the KFP launcher writes artifacts to "
                             f"(the KFP deployment's default is {KFP_DEFAULT_PIPELINE_ROOT})")
        if self.allow_local_pipeline_root:
            return
        if not self.pipeline_root.startswith(OBJECT_STORE_SCHEMES):
            raise ValueError(f"--pipeline-root {self.pipeline_root!r} is not object storage: the KFP launcher only "
                             f"accepts {', '.join(OBJECT_STORE_SCHEMES)} (the KFP deployment's default is "
                             f"{KFP_DEFAULT_PIPELINE_ROOT})")
        cluster_runner = self._cluster_runner
        if cluster_runner and not self.pipeline_root.startswith(CLUSTER_READABLE_SCHEMES):
            raise ValueError(f"--pipeline-root {self.pipeline_root!r}: a step whose Beam runner is a cluster "
                             f"({cluster_runner}) has its workers open the step's artifacts directly, and the KFP "
                             "launcher copies them into the step's pod only; use a "
                             f"{' or '.join(CLUSTER_READABLE_SCHEMES)} pipeline root")

    def _check_paths(self) -> None:
        """Paths the steps open themselves must exist in every pod: on a mounted volume, or gs://."""
        if not self.serving_dir:
            raise ValueError("--serving-dir is required: a path on a mounted volume (--pvc) or a gs:// URI that "
                             "TF Serving reads as its model base path's parent")
        paths = {"--serving-dir": self.serving_dir, "--data-dir": self.data_dir, "--manifest": self.manifest,
                 "--embedding-cache-dir": self.embedding_cache_dir or self.default_embedding_cache_dir}
        on_dataflow = (self._cluster_runner or "").lower() == "dataflowrunner"
        for flag, path in paths.items():
            if not path:
                continue
            if is_uri(path):
                if not path.startswith(TF_FILESYSTEM_SCHEMES):
                    hint = " (it defaults to PIPELINE_ROOT/embedding_cache)" if flag == "--embedding-cache-dir" else ""
                    raise ValueError(f"{flag} {path!r}{hint}: TensorFlow's file I/O opens only "
                                     f"{', '.join(TF_FILESYSTEM_SCHEMES)} URIs or paths on a --pvc volume")
                continue
            if not path.startswith("/"):
                raise ValueError(f"{flag} {path!r} is a relative path: a step's pod has no working directory of "
                                 "yours; give a path on a --pvc volume or a gs:// URI")
            if on_dataflow and flag != "--serving-dir":
                raise ValueError(f"{flag} {path} is a container path, out of reach of Dataflow's workers; "
                                 "use a gs:// URI")
            if not any(path == m.mount_path or path.startswith(m.mount_path.rstrip("/") + "/") for m in self.pvcs):
                raise ValueError(f"{flag} {path} is a container path but no --pvc is mounted there; each step "
                                 "runs in its own pod, so local paths must live on a mounted volume")


def compile_pipeline(options: CompileOptions) -> str:
    """Writes the KFP package (YAML) and returns its path."""
    options.validate()  # before TensorFlow loads: a bad option fails in a second
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    from pipelines.pipeline import create_pipeline

    pipeline = create_pipeline(options)
    output = os.path.abspath(options.output)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            default_image=options.image, default_commands=list(CONTAINER_COMMAND),
            # Schema 2.1.0: the only one the KFP API server accepts (apiserver/template/v2_template.go), with
            # `runtimeValue.constant` parameters (driver/resolve.go) and executor properties in parameterValues.
            use_pipeline_spec_2_1=True),
        output_dir=os.path.dirname(output),
        output_filename=os.path.basename(output),
    )
    runner.run(pipeline)
    _finish_package(output, options, pipeline)
    return output


def _finish_package(path: str, options: CompileOptions, pipeline: Pipeline) -> None:
    with open(path) as f:
        text = f.read()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    pipeline_spec = yaml.safe_load(text)
    pipeline_spec["defaultPipelineRoot"] = options.pipeline_root
    _write_run_parameter_defaults(pipeline_spec, pipeline)
    _name_parameter_producers_by_task(pipeline_spec)
    _uncache_the_input_fingerprint(pipeline_spec, pipeline)
    documents = [pipeline_spec]
    if options.pvcs:
        executors = {label: {"pvcMount": [m.to_executor_config() for m in options.pvcs]}
                     for label in pipeline_spec["deploymentSpec"]["executors"]}
        documents.append({"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}})
    with open(path, "w") as f:
        f.write(header)
        yaml.safe_dump_all(documents, f, sort_keys=True)


def _write_run_parameter_defaults(pipeline_spec: dict, pipeline: Pipeline) -> None:
    from tfx.orchestration import data_types

    root_parameters = pipeline_spec["root"].get("inputDefinitions", {}).get("parameters", {})
    for component in pipeline.components:
        for value in component.exec_properties.values():
            if isinstance(value, data_types.RuntimeParameter):
                root_parameters[value.name]["defaultValue"] = value.default


def _name_parameter_producers_by_task(pipeline_spec: dict) -> None:
    tasks = pipeline_spec["root"]["dag"]["tasks"]
    for task in tasks.values():
        for parameter in task.get("inputs", {}).get("parameters", {}).values():
            producer = parameter.get("taskOutputParameter", {})
            if producer.get("producerTask", "").removesuffix("_task") in tasks:
                producer["producerTask"] = producer["producerTask"].removesuffix("_task")


def _uncache_the_input_fingerprint(pipeline_spec: dict, pipeline: Pipeline) -> None:
    from components.input_fingerprint.component import InputFingerprint

    for component in pipeline.components:
        if isinstance(component, InputFingerprint):
            # Unset, enableCache is false (pipeline_spec.proto CachingOptions).
            pipeline_spec["root"]["dag"]["tasks"][component.id].pop("cachingOptions", None)


_FUNCTION_PARAMETERS = ("run_fn", "tuner_fn", "preprocessing_fn", "stats_options_updater_fn")


def class_paths(package_path: str) -> list[str]:
    """Every Python path a compiled package makes the image import: the step command's module, each executor class,
    each module function (run_fn), and each artifact type TFX's entrypoint resolves from a schema title (first-party
    titles through TFX's table, KFP's through the project's entrypoint)."""
    from tfx.orchestration.kubeflow.v2 import compiler_utils

    from image_retrain import artifact_types

    with open(package_path) as f:
        spec = next(yaml.safe_load_all(f))
    paths = set()
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor["container"]
        command, args = container["command"], container.get("args", [])
        if "-m" in command:
            paths.add(command[command.index("-m") + 1])
        if "--executor_class_path" in args:
            paths.add(args[args.index("--executor_class_path") + 1])
    for task in spec["root"]["dag"]["tasks"].values():  # module functions TFX imports by dotted path (run_fn)
        for name, parameter in task.get("inputs", {}).get("parameters", {}).items():
            if name in _FUNCTION_PARAMETERS:
                paths.add(parameter["runtimeValue"]["constant"])
    class_path_by_title = {**compiler_utils.TITLE_TO_CLASS_PATH, **artifact_types.CLASS_PATH_BY_KFP_TITLE}
    for component in spec["components"].values():
        for definitions in (component.get("inputDefinitions", {}), component.get("outputDefinitions", {})):
            for artifact in definitions.get("artifacts", {}).values():
                artifact_type = artifact["artifactType"]
                title = artifact_type.get("schemaTitle") or yaml.safe_load(artifact_type["instanceSchema"])["title"]
                paths.add(class_path_by_title.get(title, title))
    return sorted(paths)


def check_imports(package_path: str) -> list[str]:
    """Imports every path of `class_paths`; returns them, or raises ImportError naming the first that fails."""
    from tfx.utils import import_utils

    paths = class_paths(package_path)
    for path in paths:
        try:
            importlib.import_module(path)
        except ImportError:
            try:
                import_utils.import_class_by_path(path)
            except (ImportError, AttributeError) as error:
                raise ImportError(f"{path} (named by {package_path}) does not import: {error}") from error
    return paths
