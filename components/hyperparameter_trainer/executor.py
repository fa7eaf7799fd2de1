"""HyperparameterTrainer executor: TFX's GenericExecutor, with the hyperparameters given as exec properties merged
into `custom_config['hyperparameters']`, where the run_fn reads the pipeline's settings (pipelines/models/hparams)."""
from __future__ import annotations

from typing import Any

from tfx.components.trainer import executor as trainer_executor
from tfx.types import standard_component_specs
from tfx.utils import json_utils

from image_retrain.contract import RUN_HYPERPARAMETERS


class Executor(trainer_executor.GenericExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        key = standard_component_specs.CUSTOM_CONFIG_KEY
        custom_config = json_utils.loads(exec_properties.get(key) or "null") or {}
        given = {name: exec_properties[name] for name in RUN_HYPERPARAMETERS if exec_properties.get(name) is not None}
        custom_config["hyperparameters"] = {**(custom_config.get("hyperparameters") or {}), **given}
        super().Do(input_dict, output_dict, {**exec_properties, key: json_utils.dumps(custom_config)})
