"""How long each step of one pipeline run took, from ML Metadata: an execution is created when its step starts and
last updated when it finishes, whichever orchestrator ran it, so no runner keeps timings of its own."""
from __future__ import annotations

from tfx import v1 as tfx
from tfx.dsl.compiler import constants as compiler_constants
from tfx.orchestration import metadata as tfx_metadata


def step_seconds(metadata_path: str, run_id: str) -> dict[str, float]:
    """{node id: seconds} for the executions of pipeline run `run_id`, in the order they started."""
    with tfx_metadata.Metadata(tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)) as handle:
        store = handle.store
        run = store.get_context_by_type_and_name(compiler_constants.PIPELINE_RUN_CONTEXT_TYPE_NAME, run_id)
        executions = store.get_executions_by_context(run.id) if run is not None else []
        seconds = {}
        for execution in sorted(executions, key=lambda e: e.create_time_since_epoch):
            nodes = [context.name for context in store.get_contexts_by_execution(execution.id)
                     if context.type == compiler_constants.NODE_CONTEXT_TYPE_NAME]
            if nodes:  # "<pipeline>.<node id>"
                seconds[nodes[0].split(".", 1)[-1]] = (
                    execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
        return seconds
