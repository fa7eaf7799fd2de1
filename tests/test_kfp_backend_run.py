"""The compiled KFP package, run the way the open-source Kubeflow Pipelines v2 backend runs it.

`tests/kfp_backend.py` ports the API server's upload checks, the driver's parameter/artifact resolution and output
provisioning (executor-logs included), and the launcher's executor input, object-store sync and artifact recording
from kubeflow/pipelines' Go sources (named in its docstring, with what it simplifies). Every task here is a real
subprocess running the package's own command line through `kubeflow.container_entrypoint`.
"""
import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from image_fixtures import make_shapes_dataset
from kfp_backend import Backend, BackendError, upload

from serving import versions

PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"  # the KFP deployment's default root
HYPERPARAMETERS = {"epochs": 25, "batch_size": 16, "learning_rate": 0.01, "dropout": 0.1,
                   "fine_tune_variables": 0}  # the head only: this test is about the backend, not fine-tuning
THRESHOLD = 0.7
SPLIT_RATIOS = (6, 2, 2)


def compile_package(volume: Path, output: Path) -> str:
    from kubeflow.kubeflow_v2_runner import CompileOptions, PvcMount, compile_pipeline

    options = CompileOptions(
        pipeline_root=PIPELINE_ROOT, pvcs=[PvcMount.parse(f"image-retrain-models:{volume}")],
        serving_dir=str(volume / "models"), data_dir=str(volume / "images"),
        embedding_cache_dir=str(volume / "embedding_cache"), model_name="shapes",
        hyperparameters=dict(HYPERPARAMETERS), accuracy_threshold=THRESHOLD, split_ratios=SPLIT_RATIOS,
        output=str(output))
    return Path(compile_pipeline(options)).read_text()


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    work = tmp_path_factory.mktemp("kfp")
    volume = work / "volume"  # stands for the PersistentVolumeClaim, mounted at the same path in every pod
    make_shapes_dataset(volume / "images", n_per_class=16, seed=3)
    return work, volume, compile_package(volume, work / "pipeline.yaml")


def test_the_api_server_accepts_the_package_and_refuses_what_it_refuses(package):
    _, _, text = package
    spec, platform = upload(text)
    assert spec.schema_version == "2.1.0"
    assert "kubernetes" in platform.platforms
    for task in spec.root.dag.tasks.values():
        for parameter in task.inputs.parameters.values():
            assert parameter.runtime_value.WhichOneof("value") == "constant"
    for component in spec.components.values():
        for parameter in component.input_definitions.parameters.values():
            assert parameter.parameter_type != 0  # PARAMETER_TYPE_UNSPECIFIED would refuse every value

    documents = list(yaml.safe_load_all(text))
    old = dict(documents[0], schemaVersion="2.0.0")
    with pytest.raises(BackendError, match="KFP only supports schema version 2.1.0, but the pipeline spec has "
                                           "version 2.0.0"):
        upload(yaml.safe_dump_all([old, documents[1]]))


def test_the_driver_refuses_the_schema_2_0_parameter_forms(package, tmp_path):
    _, _, text = package
    documents = list(yaml.safe_load_all(text))
    spec = documents[0]
    # The task that runs first, so the run stops before anything touches the shared volume.
    parameters = spec["root"]["dag"]["tasks"]["ImageExampleGen"]["inputs"]["parameters"]
    name = next(iter(parameters))
    parameters[name] = {"runtimeValue": {"constantValue": {"stringValue": "x"}}}
    backend = Backend(str(tmp_path / "store"), str(tmp_path))
    with pytest.raises(BackendError, match="ConstantValue not implemented"):
        backend.create_run(yaml.safe_dump_all(documents))


@pytest.mark.e2e
def test_two_runs_on_the_backend_push_a_blessed_model_then_compare_with_it(package):
    work, volume, text = package
    backend = Backend(str(work / "store"), str(work), python=sys.executable)

    first = backend.create_run(text)
    assert set(first.tasks) == set(next(yaml.safe_load_all(text))["root"]["dag"]["tasks"])
    for task in first.tasks.values():
        assert task.volume_mounts == [{"constant": "image-retrain-models", "mountPath": str(volume),
                                       "pvcNameParameter": {"runtimeValue": {"constant": "image-retrain-models"}}}]
        assert "executor-logs" in task.outputs  # recorded by the launcher, with the step's log in the store
        logs = Path(backend.store_path(task.outputs["executor-logs"].uri))
        assert logs.is_file() and logs.stat().st_size > 0

    def output_dir(run, task, key) -> Path:
        return Path(backend.store_path(run.tasks[task].outputs[key].uri))

    def custom(run, task, key, name):
        value = run.tasks[task].outputs[key].custom_properties[name]
        return getattr(value, value.WhichOneof("value"))

    # The executors received the compiled settings: hyperparameters, threshold, split ratios.
    summary = json.loads((output_dir(first, "Trainer", "model_run") / "training_summary.json").read_text())
    assert {key: summary["hyperparameters"][key] for key in HYPERPARAMETERS} == HYPERPARAMETERS
    eval_config = json.loads((output_dir(first, "Evaluator", "evaluation") / "eval_config.json").read_text())
    bounds = [m["threshold"]["valueThreshold"]["lowerBound"] for spec in eval_config["evalConfig"]["metricsSpecs"]
              for m in spec["metrics"] if "threshold" in m]
    assert bounds == [THRESHOLD]
    split_counts = json.loads((output_dir(first, "ImageExampleGen", "examples") / "ingestion_summary.json").read_text())
    assert split_counts["num_examples"] == 48
    assert custom(first, "ImageEmbedder", "embedded_examples", "embeddings_computed") == 48

    # Blessed, pushed to the volume TF Serving reads, with the report as a recorded artifact.
    assert custom(first, "Evaluator", "blessing", "blessed") == 1
    ((pushed_version, pushed_path),) = versions.version_directories(str(volume / "models" / "shapes")).items()
    assert versions.is_complete(pushed_path)
    report = json.loads((output_dir(first, "ModelReport", "report") / "metrics.json").read_text())
    assert report["blessed"] and report["accuracy"] >= THRESHOLD
    # Nothing served yet: the candidate is its own baseline (the launcher records every declared output).
    assert custom(first, "ServedModelBaseline", "baseline_model", "baseline_source") == "candidate"
    assert first.tasks["ModelReport"].outputs["report"].schema.startswith("title: image_retrain.ModelReport")

    # Second run: every embedding from the cache, the served version as the baseline.
    second = backend.create_run(text)
    assert custom(second, "ImageEmbedder", "embedded_examples", "embeddings_computed") == 0
    assert custom(second, "ImageEmbedder", "embedded_examples", "embeddings_cached") == 48
    assert custom(second, "ServedModelBaseline", "baseline_model", "baseline_source") == "served"
    assert custom(second, "ServedModelBaseline", "baseline_model", "served_version") == pushed_version
    baseline = output_dir(second, "ServedModelBaseline", "baseline_model") / "Format-Serving"
    assert (baseline / "saved_model.pb").read_bytes() == (Path(pushed_path) / "saved_model.pb").read_bytes()
    report = json.loads((output_dir(second, "ModelReport", "report") / "metrics.json").read_text())
    assert report["baseline_accuracy"] is not None  # compared with the served version
    assert os.listdir(work / "pods") == []  # every "pod" started empty and is gone
