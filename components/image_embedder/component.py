"""ImageEmbedder: examples with `image_raw` in, the same examples plus the module's `embedding` out."""
from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.image_embedder import executor
from image_retrain.contract import DEFAULT_EMBEDDING_BATCH_SIZE, EMBEDDED_EXAMPLES_KEY


class ImageEmbedderSpec(types.ComponentSpec):
    PARAMETERS = {
        "module_handle": ExecutionParameter(type=str),
        # Shared across runs: a rerun on unchanged images computes no embedding. Empty: no cache.
        "cache_dir": ExecutionParameter(type=str, optional=True),
        "batch_size": ExecutionParameter(type=int, optional=True),
        # "auto" (the module on LiteRT when its conversion passes the probe check, else TF) or "tensorflow".
        "engine": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {EMBEDDED_EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}


class ImageEmbedder(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = ImageEmbedderSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, module_handle: str, cache_dir: str | None = None,
                 batch_size: int = DEFAULT_EMBEDDING_BATCH_SIZE, engine: str = executor.ENGINE_AUTO):
        super().__init__(spec=ImageEmbedderSpec(
            examples=examples,
            module_handle=module_handle,
            cache_dir=cache_dir or "",
            batch_size=batch_size,
            engine=engine,
            **{EMBEDDED_EXAMPLES_KEY: types.Channel(type=standard_artifacts.Examples)},
        ))
