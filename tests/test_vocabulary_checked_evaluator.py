"""The baseline is compared only when its class indices still mean the same classes."""
from __future__ import annotations

import pytest

from components.vocabulary_checked_evaluator.executor import baseline_mismatch, model_classes


def exported(tmp_path, name, classes):
    assets = tmp_path / name / "Format-Serving" / "assets"
    assets.mkdir(parents=True)
    (assets / "labels.txt").write_text("\n".join(classes) + "\n")
    return str(tmp_path / name)


def test_reads_the_class_list_the_model_ships(tmp_path):
    assert model_classes(exported(tmp_path, "m", ["cat", "dog"])) == ["cat", "dog"]
    assert model_classes(str(tmp_path)) is None


@pytest.mark.parametrize("baseline, candidate", [
    (["circle", "square"], ["circle", "square"]),
    (["circle", "square"], ["circle", "square", "triangle"]),  # appended: old indices unchanged
])
def test_comparable_baselines_are_kept(tmp_path, baseline, candidate):
    assert baseline_mismatch(exported(tmp_path, "c", candidate), exported(tmp_path, "b", baseline)) is None


@pytest.mark.parametrize("baseline, candidate, added, removed", [
    (["circle", "square"], ["apple", "circle", "square"], ["apple"], []),   # shifts every index
    (["circle", "square", "triangle"], ["circle", "triangle"], [], ["square"]),
    (["circle", "square"], ["circle", "squares"], ["squares"], ["square"]),
])
def test_baselines_on_other_classes_are_dropped_with_the_reason(tmp_path, baseline, candidate, added, removed):
    reason = baseline_mismatch(exported(tmp_path, "c", candidate), exported(tmp_path, "b", baseline))
    assert reason is not None
    assert f"added {added}" in reason and f"removed {removed}" in reason and "threshold only" in reason


def test_an_accuracy_threshold_exec_property_replaces_the_eval_config_s_value_threshold():
    """The Kubeflow run parameter `accuracy_threshold` reaches the blessing through this (a RuntimeParameter cannot sit
    inside the eval config proto)."""
    import tensorflow_model_analysis as tfma
    from tfx.utils import proto_utils

    from components.vocabulary_checked_evaluator.executor import with_accuracy_threshold
    from pipelines.pipeline import eval_config

    compiled = eval_config(0.6)
    changed = tfma.EvalConfig()
    proto_utils.json_to_proto(with_accuracy_threshold(proto_utils.proto_to_json(compiled), 0.35), changed)
    [accuracy] = [m for m in changed.metrics_specs[0].metrics if m.HasField("threshold")]
    assert accuracy.threshold.value_threshold.lower_bound.value == 0.35
    assert accuracy.threshold.change_threshold == compiled.metrics_specs[0].metrics[0].threshold.change_threshold
    with pytest.raises(ValueError, match="no SparseCategoricalAccuracy metric"):
        with_accuracy_threshold(proto_utils.proto_to_json(tfma.EvalConfig()), 0.5)
