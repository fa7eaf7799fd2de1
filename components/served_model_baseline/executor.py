"""Executor of ServedModelBaseline: copy the served (highest numeric) version into a standard Model artifact."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from serving import versions

log = logging.getLogger(__name__)

# Keys shared with component.py (the component spec is built from them).
SERVING_MODEL_DIR_KEY = "serving_model_dir"
WHEN_NOTHING_SERVED_KEY = "when_nothing_served"
CANDIDATE_MODEL_KEY = "candidate_model"
BASELINE_MODEL_KEY = "baseline_model"

# What to do on the first run, when the serving directory holds no loadable version yet.
NO_BASELINE = "no_baseline"  # publish no artifact: the Evaluator validates the value thresholds only
CANDIDATE = "candidate"      # publish the candidate itself (for orchestrators that always publish declared outputs)
EMPTY = "empty"              # publish an artifact holding no model (what a warm start reads as "nothing to continue")
WHEN_NOTHING_SERVED_CHOICES = (NO_BASELINE, CANDIDATE, EMPTY)

# Custom properties on the produced Model artifact, so a run's lineage says what it was compared with.
BASELINE_SOURCE_PROPERTY = "baseline_source"  # "served" or "candidate"
SERVED_VERSION_PROPERTY = "served_version"
SERVED_MODEL_PATH_PROPERTY = "served_model_path"


@dataclass(frozen=True)
class ServedVersion:
    version: int
    path: str


def find_served_version(serving_model_dir: str) -> ServedVersion | None:
    """The version TF Serving's default `latest` policy serves: the highest numeric subdirectory holding a SavedModel.

    A numeric directory without saved_model.pb(txt) is skipped, as TF Serving would fail to load it and keep the older
    version serving (serving.versions has the rule). Returns None when the directory does not exist or holds no such
    version (first run).
    """
    if not serving_model_dir:
        raise ValueError("serving_model_dir must be a non-empty path or URI (the TF Serving model base path)")
    if not fileio.exists(serving_model_dir):
        return None
    if not fileio.isdir(serving_model_dir):
        raise ValueError(f"serving_model_dir {serving_model_dir!r} exists but is not a directory")
    newest = versions.newest_complete_version(serving_model_dir)
    return ServedVersion(*newest) if newest is not None else None


class Executor(base_executor.BaseExecutor):
    """Publishes the served model as `baseline_model`, or nothing on the first run (see `when_nothing_served`)."""

    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        serving_model_dir = exec_properties[SERVING_MODEL_DIR_KEY]
        when_nothing_served = exec_properties.get(WHEN_NOTHING_SERVED_KEY) or NO_BASELINE
        if when_nothing_served not in WHEN_NOTHING_SERVED_CHOICES:
            raise ValueError(f"{WHEN_NOTHING_SERVED_KEY} must be one of {WHEN_NOTHING_SERVED_CHOICES}, "
                             f"got {when_nothing_served!r}")
        baseline = artifact_utils.get_single_instance(output_dict[BASELINE_MODEL_KEY])
        # The Evaluator reads `<uri>/Format-Serving` (path_utils.serving_model_path), like a Trainer's output.
        destination = path_utils.serving_model_dir(baseline.uri)

        served = find_served_version(serving_model_dir)
        if served is not None:
            # A copy rather than a pointer: the serving directory is garbage-collected and rewritten by later pushes,
            # while an artifact must stay what it was when the Evaluator compared against it.
            log.info("Baseline: served version %d from %s", served.version, served.path)
            io_utils.copy_dir(served.path, destination)
            baseline.set_string_custom_property(BASELINE_SOURCE_PROPERTY, "served")
            baseline.set_int_custom_property(SERVED_VERSION_PROPERTY, served.version)
            baseline.set_string_custom_property(SERVED_MODEL_PATH_PROPERTY, served.path)
            return

        if when_nothing_served == NO_BASELINE:
            # Publishing zero artifacts for the output: the portable launcher (LocalDagRunner, BeamDagRunner) publishes
            # exactly what the executor leaves in output_dict (merge_utils.merge_updated_output_artifacts), and the
            # Evaluator's baseline_model input is optional (min_count 0), so it runs with has_baseline=False, which
            # drops change thresholds and validates the value thresholds only ("rubber stamp").
            log.info("Baseline: nothing served under %s yet; publishing no baseline (value thresholds only)",
                     serving_model_dir)
            output_dict[BASELINE_MODEL_KEY].clear()
            return
        if when_nothing_served == EMPTY:
            # Every orchestrator records it (KFP's launcher records declared outputs anyway; TFX's entrypoint wants
            # exactly one artifact), and a reader finds no SavedModel in it.
            log.info("Baseline: nothing served under %s yet; publishing an empty model artifact", serving_model_dir)
            baseline.set_string_custom_property(BASELINE_SOURCE_PROPERTY, "nothing")
            baseline.set_int_custom_property(SERVED_VERSION_PROPERTY, -1)
            return

        # CANDIDATE: the KFP v2 launcher records every declared output artifact even when the executor reports an
        # empty list (launcher_v2.go uploadOutputArtifacts), so "no artifact" would reach the Evaluator as an empty
        # model directory. Comparing the candidate with itself makes every change threshold pass (difference 0), so
        # the blessing again rests on the value thresholds only, and the lineage says so (baseline_source=candidate).
        candidates = input_dict.get(CANDIDATE_MODEL_KEY) or []
        if len(candidates) != 1:
            raise ValueError(f"{WHEN_NOTHING_SERVED_KEY}={CANDIDATE!r} needs exactly one {CANDIDATE_MODEL_KEY} "
                             f"input artifact, got {len(candidates)}")
        candidate = candidates[0]
        source = path_utils.serving_model_path(candidate.uri, path_utils.is_old_model_artifact(candidate))
        log.info("Baseline: nothing served under %s yet; using the candidate %s itself", serving_model_dir, source)
        io_utils.copy_dir(source, destination)
        baseline.set_string_custom_property(BASELINE_SOURCE_PROPERTY, "candidate")
        baseline.set_int_custom_property(SERVED_VERSION_PROPERTY, -1)
