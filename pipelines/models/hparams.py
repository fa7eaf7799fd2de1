"""The Trainer's hyperparameters: pipelines/configs.py's defaults, the Tuner's best values, the pipeline's settings."""
from __future__ import annotations

from typing import Any

import keras_tuner

from pipelines import configs


def hyperparameters_from(custom_config: dict[str, Any] | None, tuned: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults from configs, overridden by the Tuner's best values (`tuned`: a KerasTuner HyperParameters config, as
    the Trainer receives it), overridden by the pipeline's custom_config['hyperparameters']; unknown keys are
    errors. Explicit settings win: the Tuner holds them fixed anyway."""
    overrides = dict(tuned_values(tuned))
    overrides.update((custom_config or {}).get("hyperparameters") or {})
    unknown = sorted(set(overrides) - set(configs.HYPERPARAMETERS))
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown}; known: {sorted(configs.HYPERPARAMETERS)}")
    merged = dict(configs.HYPERPARAMETERS)
    for key, value in overrides.items():
        merged[key] = type(configs.HYPERPARAMETERS[key])(value)
    return merged


def tuned_values(tuned: dict[str, Any] | None) -> dict[str, Any]:
    if not tuned:
        return {}
    return keras_tuner.HyperParameters.from_config(tuned).values
