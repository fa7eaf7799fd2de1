"""ModelReport: a human-readable report of one run (metrics, confusion matrix PNG, misclassified test images)."""
from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.model_report import executor
from image_retrain.artifact_types import ModelReport as ModelReportArtifact
from image_retrain.contract import DEFAULT_MAX_MISCLASSIFIED, REPORT_KEY, TEST_SPLIT


class ModelReportSpec(types.ComponentSpec):
    PARAMETERS = {
        "split": ExecutionParameter(type=str),
        # Also copy the report here (e.g. next to the run's outputs), under a folder named after the run.
        "report_dir": ExecutionParameter(type=str, optional=True),
        "max_misclassified": ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }
    OUTPUTS = {REPORT_KEY: ChannelParameter(type=ModelReportArtifact)}


class ModelReport(base_component.BaseComponent):
    SPEC_CLASS = ModelReportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel, evaluation: types.BaseChannel,
                 blessing: types.BaseChannel, split: str = TEST_SPLIT, report_dir: str | None = None,
                 max_misclassified: int = DEFAULT_MAX_MISCLASSIFIED):
        super().__init__(spec=ModelReportSpec(
            examples=examples, model=model, evaluation=evaluation, blessing=blessing, split=split,
            report_dir=report_dir or "", max_misclassified=max_misclassified,
            **{REPORT_KEY: types.Channel(type=ModelReportArtifact)}))
