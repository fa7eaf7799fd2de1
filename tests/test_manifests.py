"""kubeflow/manifests: every resource parses into the Kubernetes Python client's models (nothing dropped on the way,
so a misspelt field fails), and each kustomize overlay builds into a TF Serving setup that matches the pipeline."""
import os
import shutil
import subprocess

import pytest
import yaml

from serving.model_format import ROLLOUT_CONFIG_FILE

MANIFESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kubeflow", "manifests")
TARGETS = ("base", "overlays/local-pvc", "overlays/gcs")
# What the README tells `image-retrain kfp compile --pvc` to mount: the claim TF Serving reads the model base path from.
SERVING_PVC, SERVING_MOUNT_PATH = "image-retrain-models", "/models"
MODEL_CLASSES = {
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
    ("v1", "Pod"): "V1Pod",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("apps/v1", "Deployment"): "V1Deployment",
}


def _to_model(document: dict):
    """Deserializes with the client's own machinery and checks the round trip is lossless (unknown keys vanish)."""
    from kubernetes import client

    api = client.ApiClient()
    model_class = MODEL_CLASSES[(document["apiVersion"], document["kind"])]
    model = api._ApiClient__deserialize(document, model_class)
    assert api.sanitize_for_serialization(model) == document, f"fields lost parsing {document['kind']}"
    return model


def _kustomize_command():
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def _build(target: str) -> list:
    command = _kustomize_command()
    if command is None:
        pytest.skip("kustomize is not installed (Debian 12 has no kustomize package; `kubectl kustomize` from a "
                    "kubectl >= 1.21 or the kustomize release binary both work)")
    result = subprocess.run(command + [os.path.join(MANIFESTS, target)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_base_resources_parse_into_kubernetes_models():
    with open(os.path.join(MANIFESTS, "base", "kustomization.yaml")) as f:
        resources = yaml.safe_load(f)["resources"]
    kinds = []
    for name in resources:
        with open(os.path.join(MANIFESTS, "base", name)) as f:
            for document in yaml.safe_load_all(f):
                kinds.append(type(_to_model(document)).__name__)
    assert sorted(kinds) == ["V1ConfigMap", "V1Deployment", "V1PersistentVolumeClaim", "V1Service"]


@pytest.mark.parametrize("target", TARGETS)
def test_kustomize_build_gives_tf_serving_on_the_pushed_model_base_path(target):
    from pipelines import configs

    models = [_to_model(document) for document in _build(target)]
    [deployment] = [m for m in models if type(m).__name__ == "V1Deployment"]
    [service] = [m for m in models if type(m).__name__ == "V1Service"]
    claims = [m for m in models if type(m).__name__ == "V1PersistentVolumeClaim"]

    [container] = deployment.spec.template.spec.containers
    # The release the pipeline checks every model against before a push is the one deployed.
    assert container.image == f"tensorflow/serving:{configs.TF_SERVING_RELEASE}"
    flags = dict(arg.split("=", 1) if "=" in arg else (arg, None) for arg in container.args)
    assert (flags["--port"], flags["--rest_api_port"]) == ("8500", "8501")
    # The staged rollout's config file beside the versions, re-read often, labels allowed while a pod restarts.
    assert flags["--model_config_file"].endswith(f"/{configs.MODEL_NAME}/{ROLLOUT_CONFIG_FILE}")
    assert int(flags["--model_config_file_poll_wait_seconds"]) > 0
    assert "--allow_version_labels_for_unavailable_models" in flags
    assert flags["--monitoring_config_file"] == "/etc/tensorflow-serving/monitoring.config"
    [monitoring] = [m for m in models if type(m).__name__ == "V1ConfigMap"]
    assert "prometheus_config { enable: true" in monitoring.data["monitoring.config"]
    ports = {p.name: p.container_port for p in container.ports}
    assert ports == {"grpc": 8500, "http": 8501}
    probe = container.readiness_probe.http_get
    assert probe.path == f"/v1/models/{configs.MODEL_NAME}" and ports[probe.port] == 8501
    assert container.liveness_probe is not None and container.resources.requests["memory"]
    assert {(p.port, p.target_port) for p in service.spec.ports} == {(8500, "grpc"), (8501, "http")}
    assert service.spec.selector == deployment.spec.selector.match_labels

    if target == "overlays/gcs":
        assert claims == [] and not deployment.spec.template.spec.init_containers
        assert flags["--model_config_file"].startswith("gs://")
        assert [v.name for v in deployment.spec.template.spec.volumes] == ["monitoring"]
    else:
        # The claim `image-retrain kfp compile --pvc image-retrain-models:/models` mounts into the Pusher's step.
        [claim] = claims
        assert claim.metadata.name == SERVING_PVC
        volumes = {v.name: v for v in deployment.spec.template.spec.volumes}
        assert volumes["models"].persistent_volume_claim.claim_name == SERVING_PVC
        mounts = {m.name: m for m in container.volume_mounts}
        assert mounts["models"].mount_path == SERVING_MOUNT_PATH and mounts["models"].read_only
        assert flags["--model_config_file"] == f"{SERVING_MOUNT_PATH}/{configs.MODEL_NAME}/{ROLLOUT_CONFIG_FILE}"
        [init] = deployment.spec.template.spec.init_containers
        assert init.image == container.image and init.volume_mounts[0].mount_path == SERVING_MOUNT_PATH
        expected_mode = "ReadWriteOnce" if target == "overlays/local-pvc" else "ReadWriteMany"
        assert claim.spec.access_modes == [expected_mode]


def test_the_init_container_writes_the_plain_config_our_server_starts_with_and_the_rollout_reads(tmp_path):
    """The shell command of the built manifest, run here with /models moved to a folder of ours."""
    from image_retrain import rollout
    from pipelines import configs
    from serving.config import read_model_server_config

    [deployment] = [d for d in _build("base") if d["kind"] == "Deployment"]
    [init] = deployment["spec"]["template"]["spec"]["initContainers"]
    command = [arg.replace(SERVING_MOUNT_PATH, str(tmp_path)) for arg in init["command"]]
    for _ in range(2):  # the second run keeps what is there
        assert subprocess.run(command, timeout=30).returncode == 0
    config_path = tmp_path / configs.MODEL_NAME / ROLLOUT_CONFIG_FILE
    (model,) = read_model_server_config(str(config_path)).model_config_list.config
    assert (model.name, model.base_path) == (configs.MODEL_NAME, str(tmp_path / configs.MODEL_NAME))
    assert rollout.read(str(tmp_path / configs.MODEL_NAME)) is None  # plain: no rollout yet
    assert model == rollout.plain_config(configs.MODEL_NAME, model.base_path).model_config_list.config[0]
