"""ModelReport: a human-readable report of one run (metrics, confusion matrix PNG, misclassified test images), and the
same results as the Kubeflow Pipelines types its UI renders (image_retrain/artifact_types.py)."""
from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.model_report import executor
from image_retrain import artifact_types
from image_retrain.contract import (
    CONFUSION_MATRIX_KEY,
    DEFAULT_MAX_LABEL_ISSUES,
    DEFAULT_MAX_MISCLASSIFIED,
    METRICS_KEY,
    REPORT_HTML_KEY,
    REPORT_KEY,
    REPORT_SUMMARY_KEY,
    TEST_SPLIT,
)

# Output key -> type. The KFP UI names each output after its key (the launcher's display_name).
OUTPUT_TYPES = {
    REPORT_KEY: artifact_types.ModelReport,             # the report's folder (what a local run points to)
    METRICS_KEY: artifact_types.Metrics,                # accuracy, baseline accuracy, example count, blessed
    CONFUSION_MATRIX_KEY: artifact_types.ClassificationMetrics,
    REPORT_HTML_KEY: artifact_types.HTML,               # the report page, images inline
    REPORT_SUMMARY_KEY: artifact_types.Markdown,        # the report without pictures
}


class ModelReportSpec(types.ComponentSpec):
    PARAMETERS = {
        "split": ExecutionParameter(type=str),
        # Also copy the report here (e.g. next to the run's outputs), under a folder named after the run.
        "report_dir": ExecutionParameter(type=str, optional=True),
        "max_misclassified": ExecutionParameter(type=int, optional=True),
        "max_label_issues": ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }
    OUTPUTS = {key: ChannelParameter(type=kind) for key, kind in OUTPUT_TYPES.items()}


class ModelReport(base_component.BaseComponent):
    SPEC_CLASS = ModelReportSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel, evaluation: types.BaseChannel,
                 blessing: types.BaseChannel, split: str = TEST_SPLIT, report_dir: str | None = None,
                 max_misclassified: int = DEFAULT_MAX_MISCLASSIFIED, max_label_issues: int = DEFAULT_MAX_LABEL_ISSUES):
        super().__init__(spec=ModelReportSpec(
            examples=examples, model=model, evaluation=evaluation, blessing=blessing, split=split,
            report_dir=report_dir or "", max_misclassified=max_misclassified, max_label_issues=max_label_issues,
            **{key: types.Channel(type=kind) for key, kind in OUTPUT_TYPES.items()}))
