"""TFMA Evaluator that only compares against a baseline trained on the same classes.

Labels are indices into the sorted class list of the data being evaluated, while each model's scores follow its own
class list. When a class is added that sorts before an existing one, or a class is removed or renamed, the baseline's
scores would be matched to the wrong classes and its accuracy would be meaningless, so the baseline is dropped: the
candidate is then blessed on the accuracy threshold alone, and the reason is recorded on the evaluation artifact and
logged. An `accuracy_threshold` exec property replaces the eval config's accuracy value threshold first.
"""
from __future__ import annotations

import os
from typing import Any

import tensorflow_model_analysis as tfma
from tfx.components.evaluator import executor as tfx_evaluator_executor
from tfx.dsl.io import fileio
from tfx.types import standard_component_specs
from tfx.utils import path_utils, proto_utils

from image_retrain import step_results
from image_retrain.contract import ACCURACY_METRIC_CLASS, BASELINE_SKIPPED_PROPERTY
from image_retrain.ingestion_files import read_labels_file
from serving.model_format import LABELS_ASSET

ACCURACY_THRESHOLD_KEY = "accuracy_threshold"


def model_classes(model_uri: str) -> list[str] | None:
    path = os.path.join(path_utils.serving_model_path(model_uri), LABELS_ASSET)
    return read_labels_file(path) if fileio.exists(path) else None


def baseline_mismatch(candidate_uri: str, baseline_uri: str) -> str | None:
    """Why the baseline cannot be compared with the candidate, or None when it can."""
    candidate, baseline = model_classes(candidate_uri), model_classes(baseline_uri)
    if candidate is None or baseline is None:
        return None  # not our exported classifiers: leave TFMA's comparison as configured
    # New classes that sort after all old ones keep every old index: the baseline's scores still line up.
    if candidate[:len(baseline)] != baseline:
        added = sorted(set(candidate) - set(baseline))
        removed = sorted(set(baseline) - set(candidate))
        return (f"class list changed (added {added}, removed {removed}, baseline {baseline}, candidate {candidate}): "
                "baseline comparison skipped, blessing on the accuracy threshold only")
    return None


def with_accuracy_threshold(eval_config_json: str, threshold: float) -> str:
    """The eval config (JSON, as exec properties carry it) with `threshold` as its accuracy metric's lower bound."""
    eval_config = tfma.EvalConfig()
    proto_utils.json_to_proto(eval_config_json, eval_config)
    accuracy = [metric for spec in eval_config.metrics_specs for metric in spec.metrics
                if metric.class_name == ACCURACY_METRIC_CLASS]
    if not accuracy:
        raise ValueError(f"accuracy_threshold given, but the eval config has no {ACCURACY_METRIC_CLASS} metric")
    for metric in accuracy:
        metric.threshold.value_threshold.lower_bound.value = threshold
    return proto_utils.proto_to_json(eval_config)


class Executor(tfx_evaluator_executor.Executor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        threshold = exec_properties.get(ACCURACY_THRESHOLD_KEY)
        if threshold is not None:
            key = standard_component_specs.EVAL_CONFIG_KEY
            exec_properties = {**exec_properties, key: with_accuracy_threshold(exec_properties[key], float(threshold))}
        baselines = input_dict.get(standard_component_specs.BASELINE_MODEL_KEY) or []
        candidates = input_dict.get(standard_component_specs.MODEL_KEY) or []
        reason = baseline_mismatch(candidates[0].uri, baselines[0].uri) if baselines and candidates else None
        if reason:
            step_results.report("evaluate", reason)
            input_dict = {**input_dict, standard_component_specs.BASELINE_MODEL_KEY: []}
            for artifact in output_dict.get(standard_component_specs.EVALUATION_KEY, []):
                artifact.set_string_custom_property(BASELINE_SKIPPED_PROPERTY, reason)
        super().Do(input_dict, output_dict, exec_properties)
