"""Compile `create_pipeline()` for Kubeflow Pipelines v2 with TFX's KubeflowV2DagRunner.

The output is `pipeline.yaml`: the bare PipelineSpec that `kfp.Client` uploads (TFX writes only `pipelineSpec` for a
.yaml name; a .json name would give Vertex AI's PipelineJob wrapper, which open-source KFP rejects). On top of what TFX
writes, this module
  - switches the pipeline to the served-model baseline (open-source KFP has no TFX resolver executors) with the
    candidate as the first run's baseline (the KFP launcher always records declared outputs);
  - sets `defaultPipelineRoot`, which TFX leaves to the Vertex runtimeConfig that a .yaml package drops;
  - appends a kfp-kubernetes platform document mounting PersistentVolumeClaims into every step (`--pvc`), e.g. the
    claim TF Serving reads the model base path from, so the Pusher writes where the server polls.
  - makes distributed Beam runners run the project's image on their workers (see `beam_args_for_image`).
"""
from __future__ import annotations

import dataclasses
import os
import re

import yaml

# The image built from the repository's Dockerfile; override with --image for your registry.
DEFAULT_IMAGE = "image-retrain:latest"
DEFAULT_OUTPUT = "pipeline.yaml"
# kubeflow/manifests: the claim TF Serving reads the model base path from, and where everything mounts it.
SERVING_PVC = "image-retrain-models"
SERVING_MOUNT_PATH = "/models"
# TFX's container entrypoint (KubeflowV2DagRunnerConfig's default command), spelled out so the test can check it.
CONTAINER_COMMAND = ("python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor")
# In-container Beam default: one process per core of the step's pod.
DEFAULT_BEAM_ARGS = ("--direct_running_mode=multi_processing", "--direct_num_workers=0")

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
class CompileOptions:
    image: str = DEFAULT_IMAGE
    pipeline_root: str | None = None          # object storage (gs://...); every artifact is written below it
    serving_dir: str | None = None            # TF Serving models root: the model goes to SERVING_DIR/MODEL_NAME/<version>
    model_name: str | None = None
    data_root: str | None = None
    manifest: str | None = None
    module: str | None = None
    embedding_cache_dir: str | None = None    # default: PIPELINE_ROOT/embedding_cache (shared by all runs)
    accuracy_threshold: float | None = None
    beam_args: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_BEAM_ARGS))
    pvcs: list[PvcMount] = dataclasses.field(default_factory=list)
    pipeline_name: str | None = None
    enable_cache: bool = False
    output: str = DEFAULT_OUTPUT

    def validate(self) -> None:
        if not self.image:
            raise ValueError("--image is required (the image built from the repository's Dockerfile)")
        if not self.pipeline_root:
            raise ValueError("--pipeline-root is required: an object-storage URI (e.g. gs://BUCKET/image-retrain) "
                             "that both the KFP launcher and TFX's file I/O can write")
        if not self.serving_dir:
            raise ValueError("--serving-dir is required: a path on a mounted volume (--pvc) or a bucket URI that "
                             "TF Serving reads as its model base path's parent")
        if bool(self.data_root) == bool(self.manifest):
            raise ValueError("give exactly one of --data-root (folder per class) or --manifest (CSV path,label)")
        if not self.output.endswith((".yaml", ".yml")):
            raise ValueError(f"--output must end with .yaml or .yml (kfp.Client's package format), got {self.output!r}")
        local_paths = [p for p in (self.serving_dir, self.data_root, self.manifest, self.embedding_cache_dir)
                       if p and p.startswith("/")]
        for path in local_paths:
            if not any(path == m.mount_path or path.startswith(m.mount_path.rstrip("/") + "/") for m in self.pvcs):
                raise ValueError(f"{path} is a container path but no --pvc is mounted there; each step runs in its "
                                 "own pod, so local paths must live on a mounted PersistentVolumeClaim")


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


_DISTRIBUTED_RUNNERS = {"dataflowrunner", "flinkrunner", "sparkrunner", "portablerunner", "prismrunner"}


def beam_args_for_image(beam_args: list[str], image: str) -> list[str]:
    """Makes remote Beam workers import the project: its components' DoFns (the embedding stage) run there.

    DataflowRunner: `--sdk_container_image=IMAGE` (the TFX image is built on Beam's SDK image, so ours is a valid
    worker image). Flink/Spark/portable runners: `--environment_type=DOCKER --environment_config=IMAGE`. Arguments the
    user gave win; nothing is added for the DirectRunner, which runs inside the step's own container.
    """
    args = list(beam_args)
    runner = None
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(args):
            runner = args[i + 1]
    if not runner or runner.lower() not in _DISTRIBUTED_RUNNERS:
        return args

    def given(flag: str) -> bool:
        return any(a == flag or a.startswith(flag + "=") for a in args)

    if runner.lower() == "dataflowrunner":
        if not given("--sdk_container_image") and not given("--worker_harness_container_image"):
            args.append(f"--sdk_container_image={image}")
    elif not given("--environment_type"):
        args += ["--environment_type=DOCKER", f"--environment_config={image}"]
    return args


def build_kfp_pipeline(options: CompileOptions):
    """The lead's `create_pipeline()` with the served-model baseline, as KFP should run it."""
    from components.served_model_baseline.component import use_candidate_when_nothing_served
    from pipelines import configs
    from pipelines.pipeline import create_pipeline

    model_name = options.model_name or configs.MODEL_NAME
    kwargs = dict(
        pipeline_name=options.pipeline_name or f"{configs.PIPELINE_NAME}-{model_name}".replace("_", "-"),
        pipeline_root=options.pipeline_root,
        serving_model_dir=_join(options.serving_dir, model_name),
        data_root=options.data_root,
        manifest_path=options.manifest,
        module_handle=options.module or configs.MODULE_HANDLE,
        embedding_cache_dir=options.embedding_cache_dir or _join(options.pipeline_root, "embedding_cache"),
        baseline="served_model",
        enable_cache=options.enable_cache,
        beam_pipeline_args=beam_args_for_image(options.beam_args, options.image),
    )
    if options.accuracy_threshold is not None:
        kwargs["eval_accuracy_threshold"] = options.accuracy_threshold
    pipeline = create_pipeline(**kwargs)
    use_candidate_when_nothing_served(pipeline)
    return pipeline


def compile_pipeline(options: CompileOptions) -> str:
    """Writes the KFP package (YAML) and returns its path."""
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    options.validate()
    pipeline = build_kfp_pipeline(options)
    output = os.path.abspath(options.output)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            default_image=options.image, default_commands=list(CONTAINER_COMMAND)),
        output_dir=os.path.dirname(output),
        output_filename=os.path.basename(output),
    )
    runner.run(pipeline)
    _finish_package(output, options)
    return output


def _finish_package(path: str, options: CompileOptions) -> None:
    with open(path) as f:
        text = f.read()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    pipeline_spec = yaml.safe_load(text)
    pipeline_spec["defaultPipelineRoot"] = options.pipeline_root
    documents = [pipeline_spec]
    if options.pvcs:
        executors = {label: {"pvcMount": [m.to_executor_config() for m in options.pvcs]}
                     for label in pipeline_spec["deploymentSpec"]["executors"]}
        documents.append({"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}})
    with open(path, "w") as f:
        f.write(header)
        yaml.safe_dump_all(documents, f, sort_keys=True)
