"""kubeflow/manifests/flink: the FlinkDeployment is valid under the Flink Kubernetes operator's own CRD schema (with
the API server's strict field validation), the job server's Kubernetes resources parse into the client's models, and
the pieces agree with each other, with Beam's published Flink versions and with the README's `--embed-beam-arg`s.
The worker-pool sidecar's command is the one tests/test_portable_runner.py starts and runs the embedding stage on."""
from __future__ import annotations

import copy
import os
import re

import apache_beam
import jsonschema
import pytest
import yaml
from apache_beam.options.pipeline_options import FlinkRunnerOptions
from test_manifests import MANIFESTS, _build, _to_model

FLINK = os.path.join(MANIFESTS, "flink")
REPO = os.path.dirname(MANIFESTS.rstrip("/").rsplit("/", 1)[0])
CRD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "flink_operator",
                   "flinkdeployments.flink.apache.org-v1.yml")


def _documents(name: str) -> list[dict]:
    with open(os.path.join(FLINK, name)) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def flink_deployment() -> dict:
    (document,) = _documents("flink-session-cluster.yaml")
    return document


def worker_pool_container(deployment: dict) -> dict:
    containers = deployment["spec"]["taskManager"]["podTemplate"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "beam-worker-pool")


def _strict(schema):
    """The CRD schema as the API server applies it with strict field validation (kubectl's default since 1.27):
    an object's unknown fields are errors unless it declares x-kubernetes-preserve-unknown-fields. jsonschema has no
    such mode, hence this one rewrite; everything else is the operator's schema as published."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        strict["additionalProperties"] = False
    return strict


@pytest.fixture(scope="module")
def crd_validator():
    with open(CRD) as f:
        crd = yaml.safe_load(f)
    version = next(v for v in crd["spec"]["versions"] if v["served"] and v["storage"])
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # The API server checks apiVersion, kind and metadata (ObjectMeta) itself, outside the CRD's schema.
    schema["properties"].update(apiVersion={"const": f"{crd['spec']['group']}/{version['name']}"},
                                kind={"const": crd["spec"]["names"]["kind"]}, metadata={"type": "object"})
    return jsonschema.Draft7Validator(schema)


def _errors(validator, document) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_flink_deployment_is_valid_under_the_operators_crd(crd_validator):
    assert _errors(crd_validator, flink_deployment()) == []


@pytest.mark.parametrize("path, value, complaint", [
    (("spec", "taskManagr"), {}, "taskManagr"),                       # misspelt field
    (("spec", "flinkVersion"), "v1_12", "v1_12"),                      # a version the operator does not run
    (("spec", "taskManager", "podTemplate", "spec", "containers", 1, "portz"), [], "portz"),
])
def test_the_crd_check_refuses_what_the_api_server_refuses(crd_validator, path, value, complaint):
    document = copy.deepcopy(flink_deployment())
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    assert any(complaint in error for error in _errors(crd_validator, document))


def test_task_manager_pod_template_parses_into_a_kubernetes_pod():
    template = flink_deployment()["spec"]["taskManager"]["podTemplate"]
    pod = _to_model({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "taskmanager"}, **template})
    names = [c.name for c in pod.spec.containers]
    assert names == ["flink-main-container", "beam-worker-pool"], "the operator merges Flink's container by name"
    mounts = {c.name: {(m.name, m.mount_path) for m in c.volume_mounts} for c in pod.spec.containers}
    assert mounts["flink-main-container"] == mounts["beam-worker-pool"] == {("models", "/models")}


def test_job_server_resources_parse_into_kubernetes_models():
    kinds = sorted(type(_to_model(document)).__name__ for document in _documents("beam-job-server.yaml"))
    assert kinds == ["V1Deployment", "V1Service"]


def _job_server_args() -> dict[str, str]:
    deployment = next(d for d in _documents("beam-job-server.yaml") if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(arg.lstrip("-").split("=", 1) for arg in container["args"]), container["image"]


def test_versions_agree_with_beam_and_the_operator():
    args, image = _job_server_args()
    match = re.fullmatch(r"apache/beam_flink(\d+\.\d+)_job_server:(\S+)", image)
    assert match, image
    flink_version, beam_version = match.groups()
    assert beam_version == apache_beam.__version__, "job server and SDK workers must run the same Beam release"
    assert flink_version in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    deployment = flink_deployment()
    assert deployment["spec"]["flinkVersion"] == "v" + flink_version.replace(".", "_")
    assert deployment["spec"]["image"] == f"flink:{flink_version}"


def test_job_server_reaches_the_session_cluster_and_stages_on_the_shared_volume():
    args, _ = _job_server_args()
    # Flink's native Kubernetes mode exposes the JobManager's REST API as the service <cluster-id>-rest on 8081.
    assert args["flink-master"] == f"{flink_deployment()['metadata']['name']}-rest:8081"
    assert args["artifacts-dir"].startswith("/models/")
    assert "job" not in flink_deployment()["spec"], "a session cluster: the job server submits the jobs"


def test_readme_embed_beam_args_match_the_manifests():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    service = next(d for d in _documents("beam-job-server.yaml") if d["kind"] == "Service")
    job_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "job")
    pool_port = worker_pool_container(flink_deployment())["ports"][0]["containerPort"]
    for arg in ("--runner=PortableRunner", f"--job_endpoint={service['metadata']['name']}:{job_port}",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}"):
        assert f"--embed-beam-arg={arg}" in readme, arg


def test_kustomize_builds_the_flink_target_with_the_project_image():
    documents = _build("flink")
    assert sorted(d["kind"] for d in documents) == ["Deployment", "FlinkDeployment", "Service"]
    deployment = next(d for d in documents if d["kind"] == "FlinkDeployment")
    assert worker_pool_container(deployment)["image"] == "image-retrain:latest"
