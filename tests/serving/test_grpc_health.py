"""--enable_grpc_healthcheck_service: grpc.health.v1.Health/Check, called with grpc_health's own stub."""
from __future__ import annotations

import argparse
import dataclasses

import grpc
import pytest
from conftest import free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def start_from_flags(make_server, models_dir, *flags: str):
    """A server on the `half` model, started from the flags as `python -m serving` parses them (REST off)."""
    from serving.main import add_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([f"--port={free_port()}", "--rest_api_port=0", "--model_name=half",
                              f"--model_base_path={models_dir / 'half'}", *flags])
    return make_server(**dataclasses.asdict(options_from_args(args)))


def check(server, service: str) -> health_pb2.HealthCheckResponse:
    with grpc.insecure_channel(f"localhost:{server.grpc_port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)


def test_health_service_reports_serving_for_the_server_and_its_services(make_server, models_dir):
    server = start_from_flags(make_server, models_dir, "--enable_grpc_healthcheck_service")
    for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
        assert check(server, service).status == SERVING, service


def test_without_the_flag_the_health_service_is_unimplemented(make_server, models_dir):
    server = start_from_flags(make_server, models_dir)
    with pytest.raises(grpc.RpcError) as error:
        check(server, "")
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
