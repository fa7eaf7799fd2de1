"""ServingValidator's executor: runs the checks of checks.py on the candidate and records TFX's InfraBlessing.

The artifact keeps TFX InfraValidator's contract (tfx/components/infra_validator/executor.py), so TFX's Pusher and
our AtomicPusher gate on it unchanged: an empty INFRA_BLESSED or INFRA_NOT_BLESSED file in its folder and the int
custom property `blessed` (what Pusher.CheckBlessing reads). On top: `reason` (the one-line cause when not blessed),
the release checked against, what each check did, and the p50/p99 latency our server answered with.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

from tfx.components.evaluator import constants as evaluator_constants
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, path_utils

from components.serving_validator import checks
from image_retrain import contract, step_results
from image_retrain.warmup_records import read_warmup
from serving.model_format import WARMUP_FILE

log = logging.getLogger(__name__)

# Keys shared with component.py.
MODEL_NAME_KEY = "model_name"
SERVING_RELEASE_KEY = "serving_release"
LATENCY_REQUESTS_KEY = "latency_requests"
DEFAULT_LATENCY_REQUESTS = 20

# TFX InfraValidator's marker files (private constants of its executor).
BLESSED_FILE, NOT_BLESSED_FILE = "INFRA_BLESSED", "INFRA_NOT_BLESSED"
SERVING_RELEASE_PROPERTY = "serving_release"
REPORT_FILE = "serving_validation.json"


def validate(model_path: str, model_name: str, release: str, latency_requests: int) -> dict[str, Any]:
    """{"reason": None or why not, "checks": {name: what it did}, "latency_ms": {...}}: each check in turn, stopping
    at the first failure."""
    report: dict[str, Any] = {"reason": None, "checks": {}, "latency_ms": {}}
    reason, ops = checks.op_check(model_path, release)
    report["checks"]["ops"] = (f"{ops.ops_used} ops checked against TensorFlow {release}'s registry"
                               + (f"; attrs it ignores: {', '.join(f'{op}.{a}' for op, a in ops.unknown_attrs)}"
                                  if ops.unknown_attrs else ""))
    if reason:
        report["reason"] = reason
        return report
    records = read_warmup(model_path)
    if not records or not records[0].HasField("predict_log"):
        report["reason"] = f"the model carries no warmup records ({WARMUP_FILE}) to query it with"
        return report
    reason, report["checks"]["release_tensorflow"] = checks.release_check(model_path, records, release)
    if reason:
        report["reason"] = reason
        return report
    with tempfile.TemporaryDirectory(prefix="serving-validation-") as work_dir:
        served = checks.served_check(model_path, records, model_name, work_dir, latency_requests)
    report["reason"], report["latency_ms"] = served.reason, served.latency_ms
    report["checks"]["model_server"] = "failed" if served.reason else (
        f"loaded a staging copy, replayed its warmup, answered {len(records)} requests over gRPC and REST as the "
        "Trainer did")
    return report


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list], output_dict: dict[str, list], exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        blessing = artifact_utils.get_single_instance(output_dict[standard_component_specs.BLESSING_KEY])
        release = exec_properties[SERVING_RELEASE_KEY]
        evaluation = input_dict.get(standard_component_specs.MODEL_BLESSING_KEY) or []
        if evaluation and not evaluation[0].get_int_custom_property(evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY):
            report = {"reason": "the Evaluator did not bless it", "checks": {}, "latency_ms": {}}
        else:
            model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
            report = validate(path_utils.serving_model_path(model.uri), exec_properties[MODEL_NAME_KEY], release,
                              int(exec_properties.get(LATENCY_REQUESTS_KEY) or DEFAULT_LATENCY_REQUESTS))
        record(blessing, report, release)
        if report["reason"]:
            step_results.report("validate", f"not pushable: {report['reason']}")
        else:
            latency = report["latency_ms"]
            step_results.report("validate", f"served as trained (TensorFlow Serving {release} checks passed; "
                                            f"gRPC p50 {latency['grpc_predict_p50_ms']:.1f} ms, REST p50 "
                                            f"{latency['rest_predict_p50_ms']:.1f} ms)")


def record(blessing, report: dict[str, Any], release: str) -> None:
    blessed = report["reason"] is None
    io_utils.write_string_file(os.path.join(blessing.uri, BLESSED_FILE if blessed else NOT_BLESSED_FILE), "")
    io_utils.write_string_file(os.path.join(blessing.uri, REPORT_FILE), json.dumps(report, indent=2))
    blessing.set_int_custom_property(contract.INFRA_BLESSED_PROPERTY, int(blessed))
    blessing.set_string_custom_property(contract.INFRA_REASON_PROPERTY, report["reason"] or "")
    blessing.set_string_custom_property(SERVING_RELEASE_PROPERTY, release)
    for name, what in report["checks"].items():
        blessing.set_string_custom_property(f"check_{name}", what)
    for name, value in report["latency_ms"].items():
        blessing.set_float_custom_property(name, value)
