"""`image-retrain run`: argument handling and clear failures before and during the pipeline."""
from __future__ import annotations

import shutil

import pytest

from pipelines import cli, configs
from pipelines.local_runner import RunOptions, check_inputs


def test_hyperparameter_flags_reach_the_options(tmp_path, monkeypatch):
    seen = {}

    def stop_before_tfx(options):  # only the parsing is under test here
        seen["options"] = options
        raise SystemExit(0)

    monkeypatch.setattr("pipelines.local_runner.run_pipeline", stop_before_tfx)
    with pytest.raises(SystemExit):
        cli.main(["run", "--data-dir", str(tmp_path), "--epochs", "7", "--augment-flip", "false",
                  "--split-ratios", "6,2,2", "--model-name", "flowers", "--output-dir", str(tmp_path / "o")])
    options = seen["options"]
    assert options.hyperparameters == {"epochs": 7, "augment_flip": False}
    assert options.split_ratios == (6, 2, 2) and options.pipeline_name == f"{configs.PIPELINE_NAME}-flowers"
    assert options.serving_model_dir == str(tmp_path / "o" / "serving" / "flowers")


@pytest.mark.parametrize("options, message", [
    (RunOptions(data_dir="/no/such/dir"), "is not a directory"),
    (RunOptions(manifest="/no/such.csv"), "is not a file"),
    (RunOptions(data_dir="/", split_ratios=(8, 1)), "three positive integers"),
    (RunOptions(data_dir="/", hyperparameters={"test_time_views": 3}), "must be one of \\(1, 2, 4, 8\\)"),
])
def test_unusable_inputs_fail_before_tfx_starts(options, message):
    with pytest.raises(ValueError, match=message):
        check_inputs(options)


def test_a_single_class_stops_the_run_with_the_reason(tmp_path, capsys):
    from image_fixtures import make_shapes_dataset

    make_shapes_dataset(tmp_path / "data", n_per_class=3, classes=("circle", "square"))
    shutil.rmtree(tmp_path / "data" / "square")
    assert cli.main(["run", "--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "needs at least 2 classes" in error and "'circle' (3 files)" in error


@pytest.mark.parametrize("ending", ["exit", "abort"])
def test_quiet_console_drops_only_tensorflows_start_up_lines(ending):
    """The filter process of console.filter_native_stderr, with native writes to fd 2 as TensorFlow's C++ makes them:
    known start-up lines go, everything else (errors, tracebacks, a crash's last line) arrives in order."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import os
        from pipelines import console
        console.filter_native_stderr()
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
        os.write(2, b"I0000 00:00:1796155103.818125   16708 port.cc:153] oneDNN custom operations are on.\\n")
        os.write(2, b"E0000 00:00:1796155119.964451   16708 cuda_platform.cc:52] failed call to cuInit: INTERNAL\\n")
        os.write(2, b"E0000 00:00:1796155119.964451   16708 saver.cc:52] a real error\\n")
        os.write(2, b"first line kept\\n")
        os.write(2, b"last words\\n")
        if {ending!r} == "abort":
            os.abort()
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.stderr.decode().splitlines() == [
        "E0000 00:00:1796155119.964451   16708 saver.cc:52] a real error", "first line kept", "last words"]


def test_beam_steps_say_where_workers_get_their_code_so_tfx_builds_no_copy_of_itself(tmp_path):
    """TFX builds an sdist of its own source for a Beam step whose arguments name no code source, and leaves 52 MB
    in /tmp each time. Every compiled Beam step of ours names the project's image, the portable embedding stage
    included; TFX's own check then adds nothing. A user's own code source wins."""
    from tfx.dsl.compiler import compiler
    from tfx.proto.orchestration import executable_spec_pb2, pipeline_pb2
    from tfx.utils import dependency_utils

    from pipelines.beam_args import with_worker_code_source
    from pipelines.pipeline import create_pipeline

    portable = ["--runner=PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=EXTERNAL",
                "--environment_config=localhost:50000"]
    pipeline = create_pipeline(RunOptions(data_dir=str(tmp_path), output_dir=str(tmp_path / "out"),
                                          embed_beam_args=portable))
    deployment = pipeline_pb2.IntermediateDeploymentConfig()
    compiler.Compiler().compile(pipeline).deployment_config.Unpack(deployment)
    beam_args = {}
    for node, spec in deployment.executor_specs.items():
        beam_spec = executable_spec_pb2.BeamExecutableSpec()
        if spec.Unpack(beam_spec):
            beam_args[node] = list(beam_spec.beam_pipeline_args)
    assert {"ImageExampleGen", "StatisticsGen", "ImageEmbedder", "Evaluator"} <= set(beam_args)
    assert beam_args["ImageEmbedder"][-4:] == portable
    for args in beam_args.values():
        assert f"--sdk_container_image={configs.IMAGE}" in args
        assert dependency_utils.make_beam_dependency_flags(args) == args
    mine = ["--setup_file=./setup.py", "--runner=DataflowRunner"]
    assert with_worker_code_source(mine, configs.IMAGE) == mine
