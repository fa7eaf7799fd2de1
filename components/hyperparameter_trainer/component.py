"""HyperparameterTrainer: TFX's Trainer (its spec, GenericExecutor and run_fn) with contract.RUN_HYPERPARAMETERS as
exec properties of their own.

TFX's RuntimeParameter replaces a whole exec property and never a value inside one (the Trainer's custom_config is a
dict; one nested there is serialized as an object and never substituted), so hyperparameters a Kubeflow run sets at
submit time must each be an exec property; the executor merges them into custom_config['hyperparameters'].
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.orchestration.data_types import RuntimeParameter
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts
from tfx.types.component_spec import ExecutionParameter
from tfx.types.standard_component_specs import TrainerSpec
from tfx.utils import json_utils

from components.hyperparameter_trainer import executor
from image_retrain.contract import RUN_HYPERPARAMETERS


class HyperparameterTrainerSpec(TrainerSpec):
    PARAMETERS = {**TrainerSpec.PARAMETERS,
                  **{name: ExecutionParameter(type=kind, optional=True) for name, kind in RUN_HYPERPARAMETERS.items()}}


class HyperparameterTrainer(base_component.BaseComponent):
    """`hyperparameters`: the Tuner's best values (a channel, as for TFX's Trainer); `hyperparameter_values`: some of
    RUN_HYPERPARAMETERS, each a value or a RuntimeParameter; they win over custom_config's and the Tuner's."""

    SPEC_CLASS = HyperparameterTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, run_fn: str, train_args: trainer_pb2.TrainArgs,
                 eval_args: trainer_pb2.EvalArgs, custom_config: dict[str, Any],
                 hyperparameters: types.BaseChannel | None = None,
                 base_model: types.BaseChannel | None = None,
                 hyperparameter_values: Mapping[str, int | float | RuntimeParameter] | None = None):
        unknown = set(hyperparameter_values or {}) - set(RUN_HYPERPARAMETERS)
        if unknown:
            raise ValueError(f"not settable per run: {sorted(unknown)}; these are: {sorted(RUN_HYPERPARAMETERS)}")
        super().__init__(spec=HyperparameterTrainerSpec(
            examples=examples, hyperparameters=hyperparameters, base_model=base_model, run_fn=run_fn,
            train_args=train_args,
            eval_args=eval_args, custom_config=json_utils.dumps(custom_config),
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun),
            **(hyperparameter_values or {})))
