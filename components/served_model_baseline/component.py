"""ServedModelBaseline component: the currently served model as the Evaluator's `baseline_model`.

Usage in a pipeline (output key: `baseline_model`):

    baseline = ServedModelBaseline(serving_model_dir=serving_model_dir, candidate_model=trainer.outputs['model'])
    evaluator = Evaluator(..., model=trainer.outputs['model'], baseline_model=baseline.outputs['baseline_model'])

`serving_model_dir` is the TF Serving model base path the Pusher writes to (`<serving-dir>/<model-name>`). The served
version is the highest numeric subdirectory holding a SavedModel, which is what TF Serving's default `latest` policy
loads. When nothing is served yet (first run):
  - `when_nothing_served="no_baseline"` (default; LocalDagRunner and other portable-launcher runners): no artifact is
    published, so the Evaluator validates the value thresholds only;
  - `when_nothing_served="candidate"` (Kubeflow Pipelines v2, whose launcher always records declared outputs): the
    candidate is published as its own baseline, so change thresholds pass trivially and again only the value
    thresholds decide. `use_candidate_when_nothing_served(pipeline)` switches a built pipeline to this mode.

`candidate_model` also orders the component after the Trainer (the served version is read right before evaluation)
and puts the candidate into the cache key, so with caching on a new candidate always gets a fresh look at the server.
"""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.served_model_baseline import executor
from components.served_model_baseline.executor import (
    BASELINE_MODEL_KEY,
    CANDIDATE,
    CANDIDATE_MODEL_KEY,
    NO_BASELINE,
    SERVING_MODEL_DIR_KEY,
    WHEN_NOTHING_SERVED_CHOICES,
    WHEN_NOTHING_SERVED_KEY,
)

__all__ = ["ServedModelBaseline", "ServedModelBaselineSpec", "use_candidate_when_nothing_served",
           "BASELINE_MODEL_KEY", "NO_BASELINE", "CANDIDATE"]


class ServedModelBaselineSpec(types.ComponentSpec):
    PARAMETERS = {
        SERVING_MODEL_DIR_KEY: ExecutionParameter(type=str),
        WHEN_NOTHING_SERVED_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        CANDIDATE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {
        BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
    }


class ServedModelBaseline(base_component.BaseComponent):
    """Outputs `baseline_model`: a Model artifact holding a copy of the currently served version (or none yet)."""

    SPEC_CLASS = ServedModelBaselineSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, *, serving_model_dir: str, candidate_model: Optional[types.BaseChannel] = None,
                 when_nothing_served: str = NO_BASELINE):
        if not isinstance(serving_model_dir, str) or not serving_model_dir:
            raise ValueError("serving_model_dir must be a non-empty path or URI (the TF Serving model base path)")
        _check_mode(when_nothing_served, candidate_model is not None)
        spec = ServedModelBaselineSpec(
            serving_model_dir=serving_model_dir,
            when_nothing_served=when_nothing_served,
            candidate_model=candidate_model,
            baseline_model=types.Channel(type=standard_artifacts.Model),
        )
        super().__init__(spec=spec)


def _check_mode(when_nothing_served: str, has_candidate: bool) -> None:
    if when_nothing_served not in WHEN_NOTHING_SERVED_CHOICES:
        raise ValueError(f"when_nothing_served must be one of {WHEN_NOTHING_SERVED_CHOICES}, "
                         f"got {when_nothing_served!r}")
    if when_nothing_served == CANDIDATE and not has_candidate:
        raise ValueError("when_nothing_served='candidate' needs candidate_model (the Trainer's model channel)")


def use_candidate_when_nothing_served(pipeline) -> list[ServedModelBaseline]:
    """Switches every ServedModelBaseline of a built pipeline to `when_nothing_served="candidate"` (for KFP v2).

    Returns the switched components; raises ValueError when the pipeline has none or one lacks `candidate_model`.
    """
    found = [c for c in pipeline.components if isinstance(c, ServedModelBaseline)]
    if not found:
        raise ValueError("the pipeline has no ServedModelBaseline component (build it with baseline='served_model')")
    for component in found:
        _check_mode(CANDIDATE, CANDIDATE_MODEL_KEY in component.inputs)
        component.exec_properties[WHEN_NOTHING_SERVED_KEY] = CANDIDATE
    return found
