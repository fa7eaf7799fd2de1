"""InputFingerprint: a fingerprint of ImageExampleGen's input, taken when the run starts, as a String output.

Fed to ImageExampleGen's `listing_fingerprint` exec property (`.future()[0].value`), it puts the state of the images
into the ingestion's cache key: Kubeflow Pipelines' cache key is a task's input artifact ids, parameter values, output
spec and container (backend/src/v2/cacheutils/cache.go GenerateCacheKey) and never looks at files, and TFX's
FileBasedExampleGen driver, which would fingerprint them, is a `lifecycle.preCacheCheck` the backend never runs. So a
cached run re-ingests (and re-embeds, re-trains, ...) when images changed and reuses everything when none did. The
fingerprint itself must run every time: the Kubeflow runner compiles its task uncached.
"""
from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.orchestration.data_types import RuntimeParameter
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.input_fingerprint import executor
from components.input_fingerprint.executor import ALLOW_OUTSIDE_MANIFEST_KEY, INPUT_BASE_KEY, MANIFEST_KEY
from image_retrain.contract import FINGERPRINT_KEY


class InputFingerprintSpec(types.ComponentSpec):
    PARAMETERS = {
        INPUT_BASE_KEY: ExecutionParameter(type=str, optional=True),
        MANIFEST_KEY: ExecutionParameter(type=str, optional=True),
        ALLOW_OUTSIDE_MANIFEST_KEY: ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {}
    OUTPUTS = {FINGERPRINT_KEY: ChannelParameter(type=standard_artifacts.String)}


class InputFingerprint(base_component.BaseComponent):
    """Exactly one of input_base (folder per class) or manifest (CSV), and the manifest confinement, as given to
    ImageExampleGen."""

    SPEC_CLASS = InputFingerprintSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, input_base: str | RuntimeParameter | None = None,
                 manifest: str | RuntimeParameter | None = None, allow_paths_outside_manifest: bool = False):
        if (input_base is None) == (manifest is None):
            raise ValueError("InputFingerprint needs exactly one of input_base or manifest")
        super().__init__(spec=InputFingerprintSpec(
            input_base=input_base, manifest=manifest, allow_paths_outside_manifest=int(allow_paths_outside_manifest),
            **{FINGERPRINT_KEY: types.Channel(type=standard_artifacts.String)}))
