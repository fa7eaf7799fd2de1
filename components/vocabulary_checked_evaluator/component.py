"""The standard TFX Evaluator, with the baseline dropped when it was trained on other classes (see executor.py)."""
from __future__ import annotations

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.vocabulary_checked_evaluator import executor


class VocabularyCheckedEvaluator(tfx.components.Evaluator):
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
