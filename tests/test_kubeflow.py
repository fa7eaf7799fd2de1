"""Kubeflow Pipelines v2 variant: the compiled PipelineSpec and `kfp schedule` against kfp.Client.

The ServedModelBaseline component, which replaces the resolver the open-source KFP backend cannot run, has its own
tests in test_served_model_baseline.py."""
import http.server
import json
import os
import subprocess
import sys
import threading

import pytest
import yaml
from google.protobuf import json_format, struct_pb2
from kfp_backend import BackendError, upload, validate_pipeline_job_inputs

IMAGE = "registry.invalid/image-retrain:test"
PIPELINE_ROOT = "gs://test-bucket/image-retrain"
BEAM_ARGS = ["--runner=DataflowRunner", "--project=test-project", "--region=europe-west1",
             "--temp_location=gs://test-bucket/tmp"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """One compile of the real create_pipeline() for the checks below (~5 s)."""
    from kubeflow.kubeflow_v2_runner import CompileOptions, PvcMount, compile_pipeline
    from pipelines.pipeline import create_pipeline

    options = CompileOptions(
        image=IMAGE, pipeline_root=PIPELINE_ROOT, serving_dir="/models", model_name="flowers",
        data_dir="gs://test-bucket/images", beam_args=list(BEAM_ARGS),
        pvcs=[PvcMount.parse("image-retrain-models:/models")],
        output=str(tmp_path_factory.mktemp("kfp") / "pipeline.yaml"))
    path = compile_pipeline(options)
    return path, options, create_pipeline(options)


def test_compiled_yaml_is_a_pipeline_spec_with_every_component_image_command_and_parameters(compiled):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    from kubeflow.kubeflow_v2_runner import CONTAINER_COMMAND

    path, options, pipeline = compiled
    with open(path) as f:
        documents = list(yaml.safe_load_all(f))
    spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())  # unknown fields would raise
    assert spec.schema_version == "2.1.0"  # the only version the KFP API server accepts
    assert spec.pipeline_info.name == "image-retrain-flowers"
    assert spec.default_pipeline_root == PIPELINE_ROOT

    executors = spec.deployment_spec.fields["executors"].struct_value.fields
    tasks = spec.root.dag.tasks
    assert set(tasks) == {c.id for c in pipeline.components}
    for node in pipeline.components:
        task = tasks[node.id]
        executor_label = spec.components[task.component_ref.name].executor_label
        container = json_format.MessageToDict(executors[executor_label].struct_value)["container"]
        assert container["image"] == IMAGE
        assert container["command"] == list(CONTAINER_COMMAND)
        executor_class = node.executor_spec.executor_class
        args = container["args"]
        assert args[args.index("--executor_class_path") + 1] == f"{executor_class.__module__}.{executor_class.__name__}"
        # Beam arguments reach every step; the embedding stage's Beam work runs on Dataflow with our image.
        assert args[-len(BEAM_ARGS) - 1:] == BEAM_ARGS + [f"--sdk_container_image={IMAGE}"]
    # No TFX resolver: the open-source KFP backend has no resolver executors.
    assert not any("resolver" in json_format.MessageToDict(e.struct_value) for e in executors.values())

    def parameter(task_id, name):
        value = tasks[task_id].inputs.parameters[name].runtime_value
        assert value.WhichOneof("value") == "constant"  # the only form the KFP driver resolves
        return value.constant.string_value

    assert parameter("ServedModelBaseline", "serving_model_dir") == "/models/flowers"
    assert parameter("ServedModelBaseline", "when_nothing_served") == "candidate"
    assert parameter("ImageEmbedder", "cache_dir") == PIPELINE_ROOT + "/embedding_cache"
    baseline_input = tasks["Evaluator"].inputs.artifacts["baseline_model"].task_output_artifact
    assert (baseline_input.producer_task, baseline_input.output_artifact_key) == ("ServedModelBaseline",
                                                                                  "baseline_model")
    push_destination = json.loads(parameter("AtomicPusher", "push_destination"))
    assert push_destination["filesystem"]["base_directory"] == "/models/flowers"

    # The second document mounts the serving claim into every step (kfp-kubernetes' PlatformSpec layout).
    platform = json_format.ParseDict(documents[1], pipeline_spec_pb2.PlatformSpec())
    k8s = json_format.MessageToDict(platform.platforms["kubernetes"].deployment_spec)["executors"]
    assert set(k8s) == set(executors)
    for config in k8s.values():
        assert config["pvcMount"] == [{"constant": "image-retrain-models", "mountPath": "/models",
                                       "pvcNameParameter": {"runtimeValue": {"constant": "image-retrain-models"}}}]
    try:
        from kfp.kubernetes import kubernetes_executor_config_pb2
    except ImportError:
        kubernetes_executor_config_pb2 = None
    if kubernetes_executor_config_pb2 is not None:
        for config in k8s.values():
            json_format.ParseDict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig())


def test_kfp_client_packaging_accepts_the_yaml(compiled):
    from kfp.client import client as kfp_client

    path, _, _ = compiled
    doc = kfp_client._extract_pipeline_yaml(path)  # what create_run/create_recurring_run/upload parse packages with
    assert doc.pipeline_spec.pipeline_info.name == "image-retrain-flowers"
    assert "kubernetes" in doc.platform_spec.platforms
    body = doc.to_dict()
    assert body["pipeline_spec"]["defaultPipelineRoot"] == PIPELINE_ROOT


class _FakeKfpApi(http.server.BaseHTTPRequestHandler):
    """The KFP v2beta1 REST endpoints `kfp schedule` calls, recording request bodies (no KFP cluster here)."""

    requests: list = []

    def _reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        type(self).requests.append(("GET", self.path, None))
        if self.path.startswith("/apis/v2beta1/healthz"):
            return self._reply({"multi_user": False})
        return self._reply({})  # experiments list: none yet

    def _refuse(self, message):
        """The API server's error body (grpc-gateway status JSON, code 3 = INVALID_ARGUMENT)."""
        data = json.dumps({"error_message": message, "code": 3, "message": message}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            return self._reply({"experiment_id": "exp-123", "display_name": body["display_name"]})
        if self.path in ("/apis/v2beta1/recurringruns", "/apis/v2beta1/runs"):
            # The real server builds its template from the spec with NewV2SpecTemplate: same checks here.
            documents = [body["pipeline_spec"]["pipeline_spec"], body["pipeline_spec"].get("platform_spec")]
            try:
                spec, _ = upload(yaml.safe_dump_all([d for d in documents if d]))
                parameters = (body.get("runtime_config") or {}).get("parameters") or {}
                validate_pipeline_job_inputs(spec, {name: json_format.ParseDict(value, struct_pb2.Value())
                                                    for name, value in parameters.items()})
            except BackendError as error:
                return self._refuse(str(error))
            return self._reply({**body, "recurring_run_id": "rr-456", "run_id": "run-789"})
        self.send_error(404)

    def log_message(self, *args):
        pass


def test_kfp_schedule_creates_a_recurring_run_and_prints_its_id(compiled, capsys, tmp_path, monkeypatch):
    from pipelines.cli import main

    path, _, _ = compiled
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json
    _FakeKfpApi.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeKfpApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code = main(["kfp", "schedule", "--cron", "0 0 3 * * *", "--host", f"http://127.0.0.1:{server.server_port}",
                     "--experiment", "nightly", "--package", path])
    finally:
        server.shutdown()
    assert code == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "rr-456"
    [(_, _, experiment)] = [r for r in _FakeKfpApi.requests if r[0] == "POST" and r[1].endswith("/experiments")]
    assert experiment["display_name"] == "nightly"
    [(_, _, job)] = [r for r in _FakeKfpApi.requests if r[0] == "POST" and r[1].endswith("/recurringruns")]
    assert job["experiment_id"] == "exp-123"
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True and job["mode"] == "ENABLE"
    assert job["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "image-retrain-flowers"


def _serve_fake_api():
    _FakeKfpApi.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeKfpApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_kfp_run_and_schedule_send_typed_run_parameters(compiled, capsys, tmp_path, monkeypatch):
    """`--param KEY=VALUE` becomes kfp.Client's arguments / params, typed by the package's root inputs: the API server
    refuses a string for a NUMBER parameter and names the pipeline does not declare (v2_template.go
    validatePipelineJobInputs, which the fake server applies)."""
    from pipelines.cli import main

    path, _, _ = compiled
    monkeypatch.setenv("HOME", str(tmp_path))
    server = _serve_fake_api()
    host = f"http://127.0.0.1:{server.server_port}"
    try:
        assert main(["kfp", "run", "--host", host, "--package", path, "--param", "epochs=3",
                     "--param", "accuracy_threshold=0.5", "--param", "data_dir=gs://other-bucket/images"]) == 0
        assert capsys.readouterr().out.strip().splitlines()[-1] == "run-789"
        assert main(["kfp", "schedule", "--cron", "0 0 3 * * *", "--host", host, "--package", path,
                     "--param", "fine_tune_learning_rate=0.01"]) == 0
        assert main(["kfp", "run", "--host", host, "--package", path]) == 0
    finally:
        server.shutdown()
    runs = [body for method, url, body in _FakeKfpApi.requests if method == "POST" and url.endswith("/runs")]
    parameters = runs[0]["runtime_config"]["parameters"]
    assert parameters == {"epochs": 3, "accuracy_threshold": 0.5, "data_dir": "gs://other-bucket/images"}
    assert type(parameters["epochs"]) is int and type(parameters["accuracy_threshold"]) is float
    assert not runs[1]["runtime_config"].get("parameters")  # nothing given: the package's defaults
    [job] = [body for method, url, body in _FakeKfpApi.requests if method == "POST" and url.endswith("/recurringruns")]
    assert job["runtime_config"]["parameters"] == {"fine_tune_learning_rate": 0.01}

    for flag, message in (("epochs=three", "epochs='three': the package declares it NUMBER_INTEGER"),
                          ("epochs=2.5", "declares it NUMBER_INTEGER"),
                          ("accuracy_threshold=nan", "declares it NUMBER_DOUBLE"),
                          ("model_name=x", "no such run parameter; it has accuracy_threshold, data_dir, epochs"),
                          ("epochs", "expects KEY=VALUE")):
        assert main(["kfp", "run", "--host", "http://127.0.0.1:9", "--package", path, "--param", flag]) == 2
        assert message in capsys.readouterr().err, flag


def test_kfp_schedule_reports_what_the_api_server_refuses(compiled, capsys, tmp_path, monkeypatch):
    from pipelines.cli import main

    path, _, _ = compiled
    with open(path) as f:
        documents = list(yaml.safe_load_all(f))
    documents[0]["schemaVersion"] = "2.0.0"  # what TFX writes without use_pipeline_spec_2_1
    old_package = tmp_path / "old.yaml"
    old_package.write_text(yaml.safe_dump_all(documents))
    monkeypatch.setenv("HOME", str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeKfpApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code = main(["kfp", "schedule", "--cron", "0 0 3 * * *", "--host", f"http://127.0.0.1:{server.server_port}",
                     "--package", str(old_package)])
    finally:
        server.shutdown()
    assert code == 1
    assert "KFP only supports schema version 2.1.0, but the pipeline spec has version 2.0.0" in capsys.readouterr().err


@pytest.mark.parametrize("cron, message", [
    ("0 3 * * *", "5 fields; Kubeflow Pipelines needs 6"),
    ("0 0 25 * * *", "hour '25'.*higher than the maximum value \\(23\\)"),
    ("0 0 3 * * MON-XYZ", "day of week 'XYZ'"),
    ("0 0 3 * * 7", "not 0-6"),  # robfig/cron: Sunday is 0 only
    ("0 0 3 ? * *", None),
    ("0 */15 9-17 * * MON-FRI", None),
    ("0 0 3 * ? *", "'?' is only allowed"),
    ("0 0 3 * * 5-1", "runs backwards"),
    ("@every 6h", None),
    ("@sometimes", "unknown descriptor"),
    ("0 0 3 * * * *", "7 fields"),
])
def test_kfp_cron_is_validated_locally(cron, message):
    from kubeflow.cli import validate_kfp_cron

    if message is None:
        assert validate_kfp_cron(cron) == cron
    else:
        with pytest.raises(ValueError, match=message):
            validate_kfp_cron(cron)


def test_kfp_schedule_rejects_bad_arguments_before_contacting_kfp(capsys, tmp_path):
    from pipelines.cli import main

    # No --host reachable is needed: every one of these fails before a client is created.
    assert main(["kfp", "schedule", "--cron", "0 3 * * *", "--package", str(tmp_path / "p.yaml")]) == 2
    assert "needs 6" in capsys.readouterr().err
    assert main(["kfp", "schedule", "--cron", "0 0 3 * * *", "--package", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["kfp", "schedule", "--cron", "0 0 3 * * *", "--pipeline-id", "p"]) == 2
    assert "go together" in capsys.readouterr().err


def test_compile_options_are_checked(tmp_path):
    from kubeflow.kubeflow_v2_runner import CompileOptions, PvcMount
    from pipelines.beam_args import with_cluster_workers_image

    base = dict(pipeline_root=PIPELINE_ROOT, serving_dir="/models", data_dir="gs://b/images")
    mounted = [PvcMount.parse("models:/models")]
    with pytest.raises(ValueError, match="no --pvc is mounted"):
        CompileOptions(**base).validate()
    CompileOptions(**base, pvcs=mounted).validate()
    with pytest.raises(ValueError, match="is required.*minio://mlpipeline/v2/artifacts"):
        CompileOptions(**{**base, "pipeline_root": None}).validate()
    for root in ("/data/root", "file:///data/root", "hdfs://nn/root"):
        with pytest.raises(ValueError, match="is not object storage: the KFP launcher only accepts gs://, s3://, "
                                             "minio://, mem:// .*default is minio://mlpipeline/v2/artifacts"):
            CompileOptions(**{**base, "pipeline_root": root}, pvcs=mounted).validate()
    CompileOptions(**{**base, "pipeline_root": "/data/root"}, pvcs=mounted + [PvcMount.parse("data:/data")],
                   allow_local_pipeline_root=True).validate()
    with pytest.raises(ValueError, match="embedding-cache-dir.*defaults to PIPELINE_ROOT"):
        CompileOptions(**{**base, "pipeline_root": "minio://mlpipeline/v2/artifacts"}, pvcs=mounted).validate()
    CompileOptions(**{**base, "pipeline_root": "minio://mlpipeline/v2/artifacts"}, pvcs=mounted,
                   embedding_cache_dir="/models/cache").validate()
    with pytest.raises(ValueError, match="latest_blessed needs TFX resolver"):
        CompileOptions(**base, pvcs=mounted, baseline="latest_blessed").validate()
    with pytest.raises(ValueError, match=".yaml"):
        CompileOptions(**base, pvcs=mounted, output="p.json").validate()
    for bad in ("models", "Models:/m", "models:relative"):
        with pytest.raises(ValueError):
            PvcMount.parse(bad)
    assert with_cluster_workers_image(["--runner=FlinkRunner"], "img") == [
        "--runner=FlinkRunner", "--environment_type=DOCKER", "--environment_config=img"]
    assert with_cluster_workers_image(["--runner=DataflowRunner", "--sdk_container_image=mine"], "img") == [
        "--runner=DataflowRunner", "--sdk_container_image=mine"]
    assert with_cluster_workers_image(["--direct_num_workers=0"], "img") == ["--direct_num_workers=0"]


def test_beam_on_a_cluster_needs_artifacts_its_workers_can_open(tmp_path):
    """The launcher copies artifacts into the step's pod only (launcher_v2.go downloadArtifacts/uploadOutputArtifacts,
    which tolerates an output never written locally): a cluster's workers must get gs:// URIs, unmapped."""
    from kubeflow.container_entrypoint import adapt_executor_input
    from kubeflow.kubeflow_v2_runner import CompileOptions, PvcMount

    flink = ["--runner=PortableRunner", "--job_endpoint=image-retrain-beam-job-server:8099"]
    base = dict(serving_dir="/models", data_dir="/models/images", pvcs=[PvcMount.parse("image-retrain-models:/models")])
    CompileOptions(**base, pipeline_root="gs://b/root", embed_beam_args=flink).validate()
    for root, args in (("minio://mlpipeline/v2/artifacts", {"embed_beam_args": flink}),
                       ("s3://b/root", {"beam_args": ["--runner=DataflowRunner"]})):
        with pytest.raises(ValueError, match="Beam runner is a cluster .* use a gs:// pipeline root"):
            CompileOptions(**base, pipeline_root=root, embedding_cache_dir="/models/cache", **args).validate()
    with pytest.raises(ValueError, match="--data-dir /models/images is a container path, out of reach of Dataflow"):
        CompileOptions(**base, pipeline_root="gs://b/root", embed_beam_args=["--runner=DataflowRunner"]).validate()

    def executor_input(uri: str) -> dict:
        artifact = {"uri": uri, "type": {"schemaTitle": "tfx.Examples"}}
        return {"inputs": {"artifacts": {"examples": {"artifacts": [dict(artifact)]}}},
                "outputs": {"artifacts": {"embedded": {"artifacts": [dict(artifact, uri=uri + "-out")]}}}}

    adapted, remote_by_local = adapt_executor_input(executor_input("gs://b/root/x"), None, str(tmp_path),
                                                    beam_on_a_cluster=True)
    assert adapted["inputs"]["artifacts"]["examples"]["artifacts"][0]["uri"] == "gs://b/root/x"
    assert adapted["outputs"]["artifacts"]["embedded"]["artifacts"][0]["uri"] == "gs://b/root/x-out"
    assert remote_by_local == {}
    with pytest.raises(ValueError, match="minio://mlpipeline/x is out of reach of this step's Beam workers"):
        adapt_executor_input(executor_input("minio://mlpipeline/x"), None, str(tmp_path), beam_on_a_cluster=True)
    adapted, _ = adapt_executor_input(executor_input("gs://b/root/x"), None, str(tmp_path))
    assert adapted["inputs"]["artifacts"]["examples"]["artifacts"][0]["uri"] == str(tmp_path / "gcs/b/root/x")


def test_every_class_path_the_package_names_imports_and_the_dockerfile_checks_them(compiled, tmp_path):
    """No Docker engine here: the image's build step runs the same check this test runs in the project's venv."""
    from kubeflow.kubeflow_v2_runner import check_imports

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "Dockerfile")) as f:
        dockerfile = f.read()
    assert "ARG TFX_IMAGE=tensorflow/tfx:1.21.0" in dockerfile and "FROM ${TFX_IMAGE}" in dockerfile
    assert "-c requirements.lock ." in dockerfile and "PYTHONPATH=/opt/image-retrain" in dockerfile
    assert "--no-deps -r requirements-overrides.txt" in dockerfile
    assert "image-retrain kfp compile" in dockerfile and "image-retrain kfp check-imports" in dockerfile

    path, _, _ = compiled
    paths = check_imports(path)
    assert {"kubeflow.container_entrypoint", "image_retrain.ModelReport", "pipelines.models.trainer.run_fn",
            "components.image_embedder.executor.Executor", "tfx.types.standard_artifacts.Examples",
            "image_retrain.artifact_types.Metrics", "image_retrain.artifact_types.ClassificationMetrics",
            "image_retrain.artifact_types.HTML", "image_retrain.artifact_types.Markdown"} <= set(paths)
    assert not any(path.startswith("system.") for path in paths)  # KFP's titles, mapped by the entrypoint
    # From outside the checkout too (the way a pod's working directory is not the project; the image puts the
    # project on PYTHONPATH, as here).
    result = subprocess.run([sys.executable, "-c", "import sys; from kubeflow.kubeflow_v2_runner import "
                             "check_imports; check_imports(sys.argv[1])", path], cwd=tmp_path,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": root})
    assert result.returncode == 0, result.stderr[-2000:]
    with open(os.path.join(root, ".dockerignore")) as f:
        ignored = {line.strip().strip("/") for line in f if line.strip() and not line.startswith("#")}
    assert not ignored & {"components", "pipelines", "kubeflow", "image_retrain", "models", "requirements.lock",
                          "requirements-overrides.txt", "pyproject.toml"}


def test_every_runner_takes_the_same_pipeline_options():
    import argparse

    from pipelines import options as pipeline_options
    from pipelines.cli import build_parser

    shared = argparse.ArgumentParser()
    pipeline_options.add_arguments(shared, pipeline_options.PipelineOptions)
    flags = {flag for action in shared._actions for flag in action.option_strings} - {"-h", "--help"}
    for command in (["run"], ["schedule"], ["kfp", "compile"]):
        parser = build_parser(command[0])
        for name in command:
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        own = {flag for action in parser._actions for flag in action.option_strings}
        assert flags <= own, f"{' '.join(command)} lacks {sorted(flags - own)}"


def test_kfp_compile_flags_reach_the_trainer_evaluator_and_example_gen(tmp_path):
    from pipelines.cli import main

    output = tmp_path / "pipeline.yaml"
    assert main(["kfp", "compile", "--pipeline-root", PIPELINE_ROOT, "--serving-dir", "/models", "--pvc",
                 "image-retrain-models:/models", "--data-dir", "/models/images", "--output", str(output),
                 "--epochs", "7", "--dropout", "0.3", "--split-ratios", "6,2,2", "--accuracy-threshold", "0.9",
                 "--beam-arg=--direct_num_workers=2", "--enable-cache"]) == 0
    spec = next(yaml.safe_load_all(output.read_text()))
    tasks = spec["root"]["dag"]["tasks"]

    def constant(task, name):
        return tasks[task]["inputs"]["parameters"][name]["runtimeValue"]["constant"]

    def run_parameter(task, name):
        """The root input parameter a task input is bound to, and its default (what a run without it gets)."""
        root_name = tasks[task]["inputs"]["parameters"][name]["componentInputParameter"]
        return spec["root"]["inputDefinitions"]["parameters"][root_name]["defaultValue"]

    assert json.loads(constant("Trainer", "custom_config"))["hyperparameters"] == {"epochs": 7, "dropout": 0.3}
    assert run_parameter("Trainer", "epochs") == 7
    assert run_parameter("Evaluator", "accuracy_threshold") == 0.9
    [accuracy] = [m for m in json.loads(constant("Evaluator", "eval_config"))["metrics_specs"][0]["metrics"]
                  if "threshold" in m]
    assert accuracy["threshold"]["value_threshold"]["lower_bound"] == 0.9
    assert run_parameter("ImageExampleGen", "split_ratios") == "6,2,2"
    splits = json.loads(constant("ImageExampleGen", "output_config"))["split_config"]["splits"]
    assert [s["hash_buckets"] for s in splits] == [6, 2, 2]
    executors = spec["deploymentSpec"]["executors"].values()
    assert all(e["container"]["args"][-1] == "--direct_num_workers=2" for e in executors)
    # --enable-cache: every task may be reused (driver/cache.go getFingerPrintsAndID reads each task's
    # cachingOptions.enableCache), except the fingerprint that tells the ingestion whether the images changed.
    assert {name for name, task in tasks.items() if task.get("cachingOptions", {}).get("enableCache")} == \
        set(tasks) - {"InputFingerprint"}


def test_run_parameters_are_root_inputs_with_the_compiled_values_as_defaults(compiled):
    """TFX compiles a RuntimeParameter to a root input without `defaultValue` (compiler_utils.build_parameter_type_spec)
    and the API server refuses a run that leaves out a parameter with neither value nor default (v2_template.go
    validatePipelineJobInputs): the runner writes the defaults. The fingerprint's value reaches the ingestion through a
    task output parameter whose producer the driver looks up by task name (resolve.go resolveUpstreamParameters)."""
    from pipelines import configs

    path, options, pipeline = compiled
    with open(path) as f:
        spec = next(yaml.safe_load_all(f))
    root = spec["root"]["inputDefinitions"]["parameters"]
    hyperparameters = configs.HYPERPARAMETERS
    assert root == {
        "data_dir": {"parameterType": "STRING", "defaultValue": "gs://test-bucket/images"},
        "split_ratios": {"parameterType": "STRING", "defaultValue": "8,1,1"},
        "epochs": {"parameterType": "NUMBER_INTEGER", "defaultValue": hyperparameters["epochs"]},
        "fine_tune_epochs": {"parameterType": "NUMBER_INTEGER", "defaultValue": hyperparameters["fine_tune_epochs"]},
        "learning_rate": {"parameterType": "NUMBER_DOUBLE", "defaultValue": hyperparameters["learning_rate"]},
        "fine_tune_learning_rate": {"parameterType": "NUMBER_DOUBLE",
                                    "defaultValue": hyperparameters["fine_tune_learning_rate"]},
        "accuracy_threshold": {"parameterType": "NUMBER_DOUBLE", "defaultValue": configs.EVAL_ACCURACY_THRESHOLD},
    }
    tasks = spec["root"]["dag"]["tasks"]
    bound = {(task, name): parameter["componentInputParameter"] for task, body in tasks.items()
             for name, parameter in body.get("inputs", {}).get("parameters", {}).items()
             if "componentInputParameter" in parameter}
    assert bound == {("InputFingerprint", "input_base"): "data_dir", ("ImageExampleGen", "input_base"): "data_dir",
                     ("ImageExampleGen", "split_ratios"): "split_ratios", ("Trainer", "epochs"): "epochs",
                     ("Trainer", "fine_tune_epochs"): "fine_tune_epochs", ("Trainer", "learning_rate"): "learning_rate",
                     ("Trainer", "fine_tune_learning_rate"): "fine_tune_learning_rate",
                     ("Evaluator", "accuracy_threshold"): "accuracy_threshold"}
    fingerprint = tasks["ImageExampleGen"]["inputs"]["parameters"]["listing_fingerprint"]["taskOutputParameter"]
    assert fingerprint == {"producerTask": "InputFingerprint", "outputParameterKey": "fingerprint"}
    producer = spec["components"][tasks["InputFingerprint"]["componentRef"]["name"]]
    assert producer["outputDefinitions"]["parameters"]["fingerprint"] == {"parameterType": "STRING"}
    assert tasks["ImageExampleGen"]["dependentTasks"] == ["InputFingerprint"]


def test_only_the_kubeflow_package_takes_run_parameters_a_local_run_gets_plain_values(tmp_path):
    from tfx.orchestration.data_types import RuntimeParameter

    from pipelines.local_runner import RunOptions
    from pipelines.pipeline import create_pipeline

    options = RunOptions(data_dir=str(tmp_path), output_dir=str(tmp_path / "out"), accuracy_threshold=0.7,
                         hyperparameters={"epochs": 3})
    pipeline = create_pipeline(options)
    values = {(c.id, name): value for c in pipeline.components for name, value in c.exec_properties.items()}
    assert not [key for key, value in values.items() if isinstance(value, RuntimeParameter)]
    assert values[("Trainer", "epochs")] == 3 and values[("Evaluator", "accuracy_threshold")] == 0.7
    assert values[("ImageExampleGen", "input_base")] == str(tmp_path)
    assert values[("ImageExampleGen", "split_ratios")] == "8,1,1"


def test_the_entrypoint_gives_kfp_system_types_a_class_and_keeps_tfx_version_off_scalar_metrics(tmp_path):
    """TFX imports an artifact's schema title as a class path (kubeflow_v2_entrypoint_utils._retrieve_class_path), and
    `system.Metrics` names no module; the KFP UI lists every custom property of a system.Metrics artifact as a metric
    (frontend/src/components/viewers/MetricsVisualizations.tsx ScalarMetricsSection)."""
    from tfx.utils import import_utils

    from image_retrain import artifact_types
    from kubeflow.container_entrypoint import adapt_executor_input, outputs_of_type, restore_remote_uris

    def artifact(title: str, uri: str) -> dict:
        return {"artifacts": [{"name": uri, "uri": uri, "type": {"instanceSchema": f"title: {title}\ntype: object\n"}}]}

    launcher_input = {"inputs": {"artifacts": {"examples": artifact("tfx.Examples", "minio://b/x")}},
                      "outputs": {"artifacts": {"metrics": artifact("system.Metrics", "minio://b/m"),
                                                "page": artifact("system.HTML", "minio://b/h"),
                                                "report": artifact("image_retrain.ModelReport", "minio://b/r")},
                                  "outputFile": str(tmp_path / "out.json")}}
    adapted, remote_by_local = adapt_executor_input(launcher_input, None, str(tmp_path),
                                                    class_path_by_title=artifact_types.CLASS_PATH_BY_KFP_TITLE)
    outputs = adapted["outputs"]["artifacts"]
    for name, kind in (("metrics", artifact_types.Metrics), ("page", artifact_types.HTML)):
        class_path = outputs[name]["artifacts"][0]["type"]["schemaTitle"]
        assert import_utils.import_class_by_path(class_path).TYPE_NAME == kind.TYPE_NAME
    assert outputs["report"]["artifacts"][0]["type"] == launcher_input["outputs"]["artifacts"]["report"][
        "artifacts"][0]["type"]
    assert adapted["inputs"]["artifacts"]["examples"]["artifacts"][0]["type"]["instanceSchema"].startswith(
        "title: tfx.Examples")

    assert outputs_of_type(launcher_input, "system.Metrics") == {"metrics"}
    executor_output = {"artifacts": {
        "metrics": {"artifacts": [{"uri": str(tmp_path / "minio/b/m"),
                                   "metadata": {"accuracy": 0.9, "tfx_version": "1.21.0", "absent": None}}]},
        "page": {"artifacts": [{"uri": str(tmp_path / "minio/b/h"), "metadata": {"tfx_version": "1.21.0"}}]}}}
    restored = restore_remote_uris(executor_output, remote_by_local, {"metrics"})["artifacts"]
    assert restored["metrics"]["artifacts"][0] == {"uri": "minio://b/m", "metadata": {"accuracy": 0.9}}
    assert restored["page"]["artifacts"][0] == {"uri": "minio://b/h", "metadata": {"tfx_version": "1.21.0"}}


def test_kfp_package_with_tuning_feeds_the_tuners_best_hyperparameters_to_the_trainer(tmp_path):
    from kubeflow.kubeflow_v2_runner import check_imports
    from pipelines.cli import main

    output = tmp_path / "pipeline.yaml"
    assert main(["kfp", "compile", "--pipeline-root", PIPELINE_ROOT, "--serving-dir", "/models", "--pvc",
                 "image-retrain-models:/models", "--data-dir", "/models/images", "--output", str(output),
                 "--tune", "--tune-trials", "3", "--dropout", "0.3"]) == 0
    spec = next(yaml.safe_load_all(output.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    tuner_config = json.loads(tasks["Tuner"]["inputs"]["parameters"]["custom_config"]["runtimeValue"]["constant"])
    assert tuner_config["tuner_trials"] == 3 and tuner_config["hyperparameters"] == {"dropout": 0.3}
    hyperparameters = tasks["Trainer"]["inputs"]["artifacts"]["hyperparameters"]["taskOutputArtifact"]
    assert hyperparameters == {"producerTask": "Tuner", "outputArtifactKey": "best_hyperparameters"}
    # What the Tuner searches and was not set is the Tuner's to choose, not a run parameter that would override it.
    assert {"learning_rate", "fine_tune_learning_rate"}.isdisjoint(spec["root"]["inputDefinitions"]["parameters"])
    assert {"epochs", "fine_tune_epochs"} <= set(spec["root"]["inputDefinitions"]["parameters"])
    assert "pipelines.models.tuner.tuner_fn" in check_imports(str(output))


def test_artifact_uris_map_into_their_mount_only(tmp_path):
    """component.LocalPathForURI's mapping (gs://B/K -> /gcs/B/K) for URIs an ExecutorInput may carry: one without a
    bucket or climbing out of it must not become a path anywhere else in the pod (`gs:///etc` was /etc)."""
    from kubeflow.container_entrypoint import adapt_executor_input, local_path_for_uri

    assert local_path_for_uri("gs://b/root/x", str(tmp_path)) == str(tmp_path / "gcs" / "b" / "root" / "x")
    assert local_path_for_uri("minio://mlpipeline/v2/a", "/") == "/minio/mlpipeline/v2/a"
    assert local_path_for_uri("https://example.org/x", "/") is None
    for uri in ("gs:///etc", "gs://b/../../etc", "s3://b/root/../../../etc/passwd", "minio:///root"):
        with pytest.raises(ValueError, match="does not name a bucket object"):
            local_path_for_uri(uri, str(tmp_path))
    executor_input = {"inputs": {"artifacts": {"examples": {"artifacts": [
        {"uri": "gs:///etc", "type": {"schemaTitle": "tfx.Examples"}}]}}}, "outputs": {"artifacts": {}}}
    with pytest.raises(ValueError, match="gs:///etc"):
        adapt_executor_input(executor_input, None, str(tmp_path))
