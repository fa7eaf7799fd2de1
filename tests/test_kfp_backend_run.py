"""The compiled KFP package, run the way the open-source Kubeflow Pipelines v2 backend runs it.

`tests/kfp_backend.py` ports the API server's upload and run-parameter checks, the driver's parameter/artifact
resolution, cache and output provisioning (executor-logs included), and the launcher's executor input, object-store
sync and artifact recording from kubeflow/pipelines' Go sources (named in its docstring, with what it simplifies).
Every task here is a real subprocess running the package's own command line through `kubeflow.container_entrypoint`,
and runs are created the way a user creates them: `image-retrain kfp run [--param ...]` -> kfp.Client -> the REST API.
What the UI shows is checked against what kubeflow/pipelines' frontend reads (frontend/src/components/viewers/
MetricsVisualizations.tsx, frontend/server/handlers/artifacts.ts).
"""
import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from image_fixtures import make_shapes_dataset
from kfp_backend import ApiServer, Backend, BackendError, cache_key, fingerprint, upload

from serving import versions

PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"  # the KFP deployment's default root
HYPERPARAMETERS = {"epochs": 25, "batch_size": 16, "learning_rate": 0.01, "dropout": 0.1,
                   "fine_tune_variables": 0}  # the head only: this test is about the backend, not fine-tuning
THRESHOLD = 0.7
SPLIT_RATIOS = (6, 2, 2)
CLASSES = ["circle", "square", "triangle"]
# MarkdownViewer.tsx MAX_MARKDOWN_STR_LENGTH: longer text is cut.
MAX_MARKDOWN_LENGTH = 50 * 1000 * 8


def compile_package(volume: Path, output: Path) -> str:
    from kubeflow.kubeflow_v2_runner import CompileOptions, PvcMount, compile_pipeline

    options = CompileOptions(
        pipeline_root=PIPELINE_ROOT, pvcs=[PvcMount.parse(f"image-retrain-models:{volume}")],
        serving_dir=str(volume / "models"), data_dir=str(volume / "images"),
        embedding_cache_dir=str(volume / "embedding_cache"), model_name="shapes",
        hyperparameters=dict(HYPERPARAMETERS), accuracy_threshold=THRESHOLD, split_ratios=SPLIT_RATIOS,
        enable_cache=True, output=str(output))
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
            kind = parameter.WhichOneof("kind")
            assert kind in ("runtime_value", "component_input_parameter", "task_output_parameter")
            if kind == "runtime_value":
                assert parameter.runtime_value.WhichOneof("value") == "constant"
    for component in spec.components.values():
        for parameter in component.input_definitions.parameters.values():
            assert parameter.parameter_type != 0  # PARAMETER_TYPE_UNSPECIFIED would refuse every value

    documents = list(yaml.safe_load_all(text))
    old = dict(documents[0], schemaVersion="2.0.0")
    with pytest.raises(BackendError, match="KFP only supports schema version 2.1.0, but the pipeline spec has "
                                           "version 2.0.0"):
        upload(yaml.safe_dump_all([old, documents[1]]))


def test_run_parameters_are_checked_by_the_api_server_and_default_to_the_compiled_values(package, tmp_path):
    """v2_template.go validatePipelineJobInputs, then argo.go Compile filling in the root's defaultValues."""
    work, volume, text = package
    backend = Backend(str(tmp_path / "store"), str(tmp_path))
    run = backend.submit(text)  # nothing given: every parameter has its compiled value
    defaults = {name: json_format.MessageToDict(value) for name, value in run.parameters.items()}
    assert defaults == {"data_dir": str(volume / "images"), "split_ratios": "6,2,2", "epochs": 25,
                        "fine_tune_epochs": 4, "learning_rate": 0.01, "fine_tune_learning_rate": 0.002,
                        "accuracy_threshold": THRESHOLD}
    given = backend.submit(text, {"epochs": 3, "accuracy_threshold": 0.5})
    assert json_format.MessageToDict(given.parameters["epochs"]) == 3
    assert json_format.MessageToDict(given.parameters["learning_rate"]) == 0.01

    with pytest.raises(BackendError, match="parameter\\(s\\) provided are not required by pipeline: model_name"):
        backend.submit(text, {"model_name": "other"})
    with pytest.raises(BackendError, match="input parameter epochs requires type double or integer"):
        backend.submit(text, {"epochs": "3"})
    with pytest.raises(BackendError, match="input parameter data_dir requires type string"):
        backend.submit(text, {"data_dir": 3})
    documents = list(yaml.safe_load_all(text))
    del documents[0]["root"]["inputDefinitions"]["parameters"]["epochs"]["defaultValue"]  # what TFX alone writes
    with pytest.raises(BackendError, match="parameter epochs is not optional, yet has neither default value nor "
                                           "user provided value"):
        backend.submit(yaml.safe_dump_all(documents))


def test_the_driver_refuses_the_schema_2_0_parameter_forms_and_tfx_s_producer_task_names(package, tmp_path):
    _, _, text = package
    documents = list(yaml.safe_load_all(text))
    tasks = documents[0]["root"]["dag"]["tasks"]
    # The task that runs first, so the run stops before anything touches the shared volume.
    tasks["InputFingerprint"]["inputs"]["parameters"]["input_base"] = {
        "runtimeValue": {"constantValue": {"stringValue": "x"}}}
    backend = Backend(str(tmp_path / "store"), str(tmp_path))
    with pytest.raises(BackendError, match="ConstantValue not implemented"):
        backend.create_run(yaml.safe_dump_all(documents))

    # TFX names a task output parameter's producer `<component id>_task`; the driver looks tasks up by name.
    documents = list(yaml.safe_load_all(text))
    producer = documents[0]["root"]["dag"]["tasks"]["ImageExampleGen"]["inputs"]["parameters"][
        "listing_fingerprint"]["taskOutputParameter"]
    producer["producerTask"] += "_task"
    with pytest.raises(BackendError, match="producer task, InputFingerprint_task, not in tasks"):
        backend.create_run(yaml.safe_dump_all(documents))


def test_the_cache_key_is_the_backends(package):
    """cacheutils/cache.go GenerateCacheKey: input artifact ids (not URIs), resolved parameter values, output specs
    with the URI wiped, image, command + args and sorted PVC names; nothing about files."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    _, _, text = package
    spec, _ = upload(text)
    component = spec.components["ImageExampleGen"]
    container = json_format.MessageToDict(spec.deployment_spec)["executors"][component.executor_label]["container"]

    def key(artifact_id="7", uri="minio://b/run-1/x", listing="48 files sha256:ab", output_uri="minio://b/1/y",
            pvcs=("b", "a")):
        executor_input = pipeline_spec_pb2.ExecutorInput()
        executor_input.inputs.artifacts["examples"].artifacts.add(name=artifact_id, uri=uri)
        executor_input.inputs.parameter_values["listing_fingerprint"].string_value = listing
        output = executor_input.outputs.artifacts["examples"].artifacts.add(name="examples", uri=output_uri)
        output.type.schema_title = "tfx.Examples"
        return fingerprint(cache_key(executor_input, component, container, list(pvcs)))

    assert key() == key(uri="minio://b/run-2/x", output_uri="minio://b/2/y", pvcs=("a", "b", "a"))
    assert len({key(), key(artifact_id="8"), key(listing="60 files sha256:cd"), key(pvcs=("a",))}) == 4


def validate_confusion_matrix(value: dict) -> list[str]:
    """MetricsVisualizations.tsx validateConfusionMatrix: the runtype check, then a square matrix."""
    specs, rows = value.get("annotationSpecs"), value.get("rows")
    assert isinstance(specs, list) and all(isinstance(s.get("displayName"), str) for s in specs), value
    assert isinstance(rows, list) and all(isinstance(r.get("row"), list) and
                                          all(isinstance(n, (int, float)) for n in r["row"]) for r in rows), value
    assert len(specs) == len(rows) and all(len(r["row"]) == len(rows) for r in rows), value
    return [s["displayName"] for s in specs]


@pytest.mark.e2e
def test_runs_from_kfp_run_show_their_results_take_parameters_and_cache_only_what_did_not_change(
        package, monkeypatch, tmp_path):
    from pipelines.cli import main

    work, volume, text = package
    backend = Backend(str(work / "store"), str(work), python=sys.executable)
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client reads ~/.config/kfp/context.json

    def kfp_run(api: ApiServer, *params: str):
        """`image-retrain kfp run` with the package, as a user starts a run."""
        arguments = ["kfp", "run", "--host", api.url, "--package", str(work / "pipeline.yaml")]
        for param in params:
            arguments += ["--param", param]
        runs = len(backend.runs)
        assert main(arguments) == 0
        [run] = backend.runs[runs:]
        if run.error:
            raise run.error
        return run

    def output_dir(run, task, key) -> Path:
        return Path(backend.store_path(run.tasks[task].outputs[key].uri))

    def custom(run, task, key, name):
        value = run.tasks[task].outputs[key].custom_properties[name]
        return getattr(value, value.WhichOneof("value"))

    def received(run, task, name):
        return json_format.MessageToDict(run.tasks[task].executor_input.inputs.parameter_values[name])

    with ApiServer(backend).serving() as api:
        first = kfp_run(api)
    assert set(first.tasks) == set(next(yaml.safe_load_all(text))["root"]["dag"]["tasks"])
    assert not any(task.cached for task in first.tasks.values())
    for task in first.tasks.values():
        assert task.volume_mounts == [{"constant": "image-retrain-models", "mountPath": str(volume),
                                       "pvcNameParameter": {"runtimeValue": {"constant": "image-retrain-models"}}}]
        assert "executor-logs" in task.outputs  # recorded by the launcher, with the step's log in the store
        logs = Path(backend.store_path(task.outputs["executor-logs"].uri))
        assert logs.is_file() and logs.stat().st_size > 0

    # The executors received the compiled settings: hyperparameters, threshold, split ratios.
    summary = json.loads((output_dir(first, "Trainer", "model_run") / "training_summary.json").read_text())
    assert {key: summary["hyperparameters"][key] for key in HYPERPARAMETERS} == HYPERPARAMETERS
    eval_config = json.loads((output_dir(first, "Evaluator", "evaluation") / "eval_config.json").read_text())
    bounds = [m["threshold"]["valueThreshold"]["lowerBound"] for spec in eval_config["evalConfig"]["metricsSpecs"]
              for m in spec["metrics"] if "threshold" in m]
    assert bounds == [THRESHOLD]
    ingested = json.loads((output_dir(first, "ImageExampleGen", "examples") / "ingestion_summary.json").read_text())
    assert ingested["num_examples"] == 48
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

    # What the run page shows: the UI finds outputs by MLMD type name (the schema title, metadata/client.go
    # RecordArtifact) and shows only those with a display_name (the launcher's default: the output key).
    outputs = first.tasks["ModelReport"].outputs
    titles = {name: yaml.safe_load(artifact.schema)["title"] for name, artifact in outputs.items()}
    assert titles == {"report": "image_retrain.ModelReport", "metrics": "system.Metrics",
                      "confusion_matrix": "system.ClassificationMetrics", "report_html": "system.HTML",
                      "summary": "system.Markdown", "executor-logs": "system.Artifact"}
    assert all(custom(first, "ModelReport", name, "display_name") == name for name in titles)
    # ScalarMetricsSection: every custom property but display_name (and the reserved store_session_info) is a row.
    scalars = {name: custom(first, "ModelReport", "metrics", name) for name in outputs["metrics"].custom_properties}
    assert set(scalars) == {"accuracy", "baseline_accuracy", "example_count", "blessed", "display_name",
                            "store_session_info"}
    assert scalars["accuracy"] == pytest.approx(report["accuracy"]) and scalars["blessed"] == 1.0
    assert scalars["example_count"] == report["example_count"] == ingested["split_counts"]["test"]
    assert scalars["baseline_accuracy"] == pytest.approx(report["baseline_accuracy"])
    # ConfusionMatrixSection: customProperties.get('confusionMatrix').getStructValue().toJavaScript().struct.
    matrix = json_format.MessageToDict(outputs["confusion_matrix"].custom_properties["confusionMatrix"].struct_value)
    assert validate_confusion_matrix(matrix["struct"]) == CLASSES
    assert [row["row"] for row in matrix["struct"]["rows"]] == report["confusion_matrix"]
    # HTML and Markdown viewers fetch the one object at the URI (artifacts.ts getMinioArtifactHandler: a prefix gives
    # NoSuchKey); the HTML goes into a sandboxed srcdoc iframe (HTMLViewer.tsx), so every image is inline.
    page = Path(backend.store_path(outputs["report_html"].uri))
    assert page.is_file()
    page = page.read_text()
    assert page.startswith("<!doctype html>") and "Model report" in page
    sources = re.findall(r"""src=["']([^"']*)["']""", page)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    markdown = Path(backend.store_path(outputs["summary"].uri))
    assert markdown.is_file()
    markdown = markdown.read_text()
    assert "| class | support | precision | recall |" in markdown and len(markdown) < MAX_MARKDOWN_LENGTH
    assert "<" not in markdown and "![" not in markdown  # raw HTML is not rendered, relative images do not load

    # New images on the claim; the next run sets two parameters, without a recompile.
    make_shapes_dataset(volume / "images", n_per_class=4, seed=3, start_index=16)
    with ApiServer(backend).serving() as api:
        second = kfp_run(api, "epochs=3", "accuracy_threshold=0.5")
    listed = {run: run.tasks["InputFingerprint"].output_parameters["fingerprint"].string_value
              for run in (first, second)}
    assert listed[first].startswith("48 files") and listed[second].startswith("60 files")
    assert not second.tasks["ImageExampleGen"].cached and not second.tasks["ImageEmbedder"].cached
    ingested = json.loads((output_dir(second, "ImageExampleGen", "examples") / "ingestion_summary.json").read_text())
    assert ingested["num_examples"] == 60
    assert custom(second, "ImageEmbedder", "embedded_examples", "embeddings_computed") == 12
    assert custom(second, "ImageEmbedder", "embedded_examples", "embeddings_cached") == 48
    # The Trainer and the Evaluator received the run's values and trained and judged with them.
    assert received(second, "Trainer", "epochs") == 3 and received(second, "Evaluator", "accuracy_threshold") == 0.5
    summary = json.loads((output_dir(second, "Trainer", "model_run") / "training_summary.json").read_text())
    assert summary["hyperparameters"] == {**summary["hyperparameters"], **HYPERPARAMETERS, "epochs": 3}
    assert summary["epochs_run"] <= 3
    eval_config = json.loads((output_dir(second, "Evaluator", "evaluation") / "eval_config.json").read_text())
    bounds = [m["threshold"]["valueThreshold"]["lowerBound"] for spec in eval_config["evalConfig"]["metricsSpecs"]
              for m in spec["metrics"] if "threshold" in m]
    assert bounds == [0.5]
    assert json.loads((output_dir(second, "ModelReport", "report") / "metrics.json").read_text())["threshold"] == 0.5
    # The served version is the baseline now.
    assert custom(second, "ServedModelBaseline", "baseline_model", "baseline_source") == "served"
    assert custom(second, "ServedModelBaseline", "baseline_model", "served_version") == pushed_version
    baseline = output_dir(second, "ServedModelBaseline", "baseline_model") / "Format-Serving"
    assert (baseline / "saved_model.pb").read_bytes() == (Path(pushed_path) / "saved_model.pb").read_bytes()
    report = json.loads((output_dir(second, "ModelReport", "report") / "metrics.json").read_text())
    assert report["baseline_accuracy"] is not None  # compared with the served version

    # Nothing new, the same parameters: only the fingerprint runs; every other task reuses the second run's outputs.
    with ApiServer(backend).serving() as api:
        third = kfp_run(api, "epochs=3", "accuracy_threshold=0.5")
    assert third.tasks["InputFingerprint"].output_parameters["fingerprint"] == \
        second.tasks["InputFingerprint"].output_parameters["fingerprint"]
    assert {name for name, task in third.tasks.items() if not task.cached} == {"InputFingerprint"}
    for name, task in third.tasks.items():
        if name != "InputFingerprint":
            assert {key: a.id for key, a in task.outputs.items()} == \
                {key: a.id for key, a in second.tasks[name].outputs.items()}, name
    assert os.listdir(work / "pods") == []  # every "pod" started empty and is gone
