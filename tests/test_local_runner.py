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
