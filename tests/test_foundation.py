"""The stack itself: the venv interpreter, its child processes, a real TFX pipeline on SQLite MLMD, `doctor`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
CLI = VENV / "bin" / "image-retrain"
QUIET_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_interpreter_and_its_children_import_tfx_mlmd_tfdv():
    # Beam's multi-processing workers are children started with sys.executable: they must load the same runtime.
    code = (
        "import subprocess, sys\n"
        "from tfx import v1\n"
        "import ml_metadata, tensorflow_data_validation\n"
        "child = subprocess.run([sys.executable, '-c', 'from tfx import v1; import ml_metadata, "
        "tensorflow_data_validation; print(\"child ok\")'], capture_output=True, text=True)\n"
        "print(child.stdout.strip(), child.returncode)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=QUIET_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("child ok 0"), result.stdout


def test_smoke_pipeline_records_artifacts_in_mlmd(tmp_path):
    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx

    from pipelines import configs
    from pipelines.beam_args import with_worker_code_source

    data = tmp_path / "data"
    data.mkdir()
    rows = ["height,width,label"] + [f"{h},{w},{'tall' if h > w else 'wide'}"
                                     for h, w in zip(range(1, 41), range(40, 0, -1))]
    (data / "shapes.csv").write_text("\n".join(rows) + "\n")

    example_gen = tfx.components.CsvExampleGen(input_base=str(data))
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    metadata_path = tmp_path / "metadata.db"
    connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(str(metadata_path))
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="smoke",
        pipeline_root=str(tmp_path / "root"),
        components=[example_gen, statistics_gen, schema_gen, example_validator],
        metadata_connection_config=connection,
        beam_pipeline_args=with_worker_code_source(["--direct_running_mode=in_memory"], configs.IMAGE),
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)

    store = metadata_store.MetadataStore(connection)
    artifacts_by_type = {t: store.get_artifacts_by_type(t) for t in
                         ("Examples", "ExampleStatistics", "Schema", "ExampleAnomalies")}
    for type_name, artifacts in artifacts_by_type.items():
        assert len(artifacts) == 1, type_name
        assert Path(artifacts[0].uri).is_dir(), type_name
    examples_uri = Path(artifacts_by_type["Examples"][0].uri)
    assert sorted(p.name for p in examples_uri.iterdir()) == ["Split-eval", "Split-train"]
    schema_text = (Path(artifacts_by_type["Schema"][0].uri) / "schema.pbtxt").read_text()
    for feature in ("height", "width", "label"):
        assert f'name: "{feature}"' in schema_text
    executions = store.get_executions()
    assert len(executions) == 4
    assert {e.last_known_state for e in executions} == {metadata_store.proto.Execution.COMPLETE}


def run_doctor(env=None):
    return subprocess.run([str(CLI), "doctor"], capture_output=True, text=True, env=env or QUIET_ENV, timeout=300)


def test_doctor_reports_ok():
    result = run_doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    for label in ("Python", "TensorFlow", "TFX", "ML Metadata", "TFDV", "Apache Beam", "glibc", "libstdc++"):
        assert any(line.startswith(label) and " ok " in line for line in result.stdout.splitlines()), label
    assert "Everything OK." in result.stdout


def test_doctor_fails_clearly_when_a_package_is_broken(tmp_path):
    broken = tmp_path / "ml_metadata"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('libstdc++.so.6: version GLIBCXX_3.4.32 not found')\n")
    result = run_doctor({**QUIET_ENV, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    assert "ML Metadata does not import" in result.stderr
    assert "GLIBCXX_3.4.32" in result.stderr and "make setup" in result.stderr


@pytest.mark.skipif(not (VENV / "runtime").is_dir(), reason="host glibc >= 2.39: no private runtime to remove")
def test_doctor_fails_clearly_without_the_private_runtime():
    runtime, moved = VENV / "runtime", VENV / "runtime.moved-by-test"
    runtime.rename(moved)
    try:
        result = run_doctor()
    finally:
        moved.rename(runtime)
    assert result.returncode != 0
    assert "private glibc/libstdc++ runtime" in result.stderr and "make setup" in result.stderr
