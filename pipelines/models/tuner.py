"""The TFX Tuner's module (`tuner_fn`, referenced by dotted path from pipelines/configs.py): a KerasTuner random
search whose every trial is the Trainer's own training."""
from __future__ import annotations

from typing import Any

import keras_tuner
from tfx.v1.components import TunerFnResult

from pipelines import configs
from pipelines.models.hparams import hyperparameters_from
from pipelines.models.trainer import train


def search_space(fixed: dict[str, Any]):
    """KerasTuner HyperParameters: configs.TUNER_SEARCH_SPACE's choices, the fine-tuning ones only when fine-tuning
    is on; settings given explicitly (`fixed`, the pipeline's hyperparameters) are held at their value."""
    hp = hyperparameters_from({"hyperparameters": fixed})
    space = keras_tuner.HyperParameters()
    for name, choices in configs.TUNER_SEARCH_SPACE.items():
        if name in fixed or (name.startswith("fine_tune_") and hp["fine_tune_variables"] == 0):
            continue
        space.Choice(name, choices)
    for name, value in fixed.items():
        space.Fixed(name, hp[name])
    return space


def tuner_fn(fn_args):
    """TFX Tuner entry point: a KerasTuner random search whose every trial is the Trainer's own `train`, scored by
    its eval-split accuracy (the head's, or the best fine-tuning epoch's). Budget: custom_config['tuner_trials']."""
    custom_config = fn_args.custom_config or {}
    fixed = dict(custom_config.get("hyperparameters") or {})
    module_handle = custom_config.get("module_handle", configs.MODULE_HANDLE)

    class TrainerTrials(keras_tuner.RandomSearch):
        def run_trial(self, trial, *args, **kwargs):
            hp = hyperparameters_from({"hyperparameters": trial.hyperparameters.values})
            trained = train(hp, module_handle, fn_args.train_files, fn_args.eval_files, export=False)
            return {"val_accuracy": trained["summary"]["eval_accuracy"]}

    tuner = TrainerTrials(
        hyperparameters=search_space(fixed), objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=int(custom_config.get("tuner_trials", configs.TUNER_TRIALS)), seed=configs.HYPERPARAMETERS["seed"],
        directory=fn_args.working_dir, project_name="search", overwrite=True)
    return TunerFnResult(tuner=tuner, fit_kwargs={})
