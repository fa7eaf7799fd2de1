"""ServingValidator: the candidate is loaded and queried by the serving stack before it may be pushed.

Plays TFX's InfraValidator (same InfraBlessing output, which the Pusher gates on), which cannot run here: its model
server runners start `tensorflow/serving` in Docker or in a Kubernetes pod, and neither exists where this pipeline
runs locally or inside a Kubeflow step. Instead: the graph's ops against the declared TF Serving release's op registry,
a real load and query with that release's TensorFlow, and our model server on a staging copy (checks.py).

    validator = ServingValidator(model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
                                 model_name="flowers", serving_release="2.20.0")
    pusher = AtomicPusher(..., infra_blessing=validator.outputs["blessing"])
"""
from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.serving_validator import executor
from components.serving_validator.executor import LATENCY_REQUESTS_KEY, MODEL_NAME_KEY, SERVING_RELEASE_KEY


class ServingValidatorSpec(types.ComponentSpec):
    PARAMETERS = {
        MODEL_NAME_KEY: ExecutionParameter(type=str),        # the name the staging server serves it under
        SERVING_RELEASE_KEY: ExecutionParameter(type=str),   # tensorflow/serving's tag == its TensorFlow's version
        LATENCY_REQUESTS_KEY: ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        standard_component_specs.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        # When given and not blessed, nothing is started: the push is off anyway.
        standard_component_specs.MODEL_BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing,
                                                                      optional=True),
    }
    OUTPUTS = {standard_component_specs.BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing)}


class ServingValidator(base_component.BaseComponent):
    SPEC_CLASS = ServingValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, model_name: str, serving_release: str,
                 model_blessing: types.BaseChannel | None = None,
                 latency_requests: int = executor.DEFAULT_LATENCY_REQUESTS):
        super().__init__(spec=ServingValidatorSpec(
            model=model, model_blessing=model_blessing, model_name=model_name, serving_release=serving_release,
            latency_requests=latency_requests,
            blessing=types.Channel(type=standard_artifacts.InfraBlessing)))
