"""TFX's Evaluator (its spec and executor), with the baseline dropped when it was trained on other classes, and the
accuracy threshold as an exec property of its own (see executor.py).

TFX's RuntimeParameter replaces a whole exec property and never a field inside the eval config proto, so the
threshold a Kubeflow run may set at submit time is `accuracy_threshold`; the executor writes it into the eval config.
"""
from __future__ import annotations

import tensorflow_model_analysis as tfma
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.orchestration.data_types import RuntimeParameter
from tfx.types import standard_artifacts
from tfx.types.component_spec import ExecutionParameter
from tfx.types.standard_component_specs import EvaluatorSpec
from tfx.utils import json_utils

from components.vocabulary_checked_evaluator import executor
from components.vocabulary_checked_evaluator.executor import ACCURACY_THRESHOLD_KEY


class VocabularyCheckedEvaluatorSpec(EvaluatorSpec):
    PARAMETERS = {**EvaluatorSpec.PARAMETERS, ACCURACY_THRESHOLD_KEY: ExecutionParameter(type=float, optional=True)}


class VocabularyCheckedEvaluator(base_beam_component.BaseBeamComponent):
    """Outputs `evaluation` and `blessing`, as TFX's Evaluator. `accuracy_threshold`, when given, replaces the value
    threshold of the eval config's contract.ACCURACY_METRIC_CLASS metric."""

    SPEC_CLASS = VocabularyCheckedEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel, eval_config: tfma.EvalConfig,
                 baseline_model: types.BaseChannel | None = None, example_splits: list[str] | None = None,
                 accuracy_threshold: float | RuntimeParameter | None = None):
        super().__init__(spec=VocabularyCheckedEvaluatorSpec(
            examples=examples, model=model, baseline_model=baseline_model, eval_config=eval_config,
            example_splits=json_utils.dumps(example_splits), accuracy_threshold=accuracy_threshold,
            fairness_indicator_thresholds=json_utils.dumps(None),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
