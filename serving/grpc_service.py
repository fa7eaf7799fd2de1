"""gRPC front end: tensorflow.serving.PredictionService and ModelService on the official generated stubs."""
from __future__ import annotations

import concurrent.futures
import functools
import math

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.errors import ServingError

MAX_MESSAGE_CHARS = 1024  # grpc_status_util.cc truncates longer messages
_NO_DEADLINE_S = 1e8  # grpc reports "no deadline" as a time far in the future


def timeout_ms(context) -> int:
    """The client's deadline as RunOptions.timeout_in_ms (0 = none), like TF Serving's DeadlineToTimeoutMillis."""
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_S:
        return 0
    if remaining <= 0:
        raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded before the request was handled")
    return max(1, math.ceil(remaining * 1000))


def _abort_on_error(method):
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as error:
            message = error.message
            if len(message) > MAX_MESSAGE_CHARS:
                message = message[:MAX_MESSAGE_CHARS] + "...TRUNCATED"
            context.abort(error.code, message)
    return wrapper


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, inference):
        self.inference = inference

    @_abort_on_error
    def Predict(self, request, context):
        return self.inference.predict(request, timeout_ms=timeout_ms(context))

    @_abort_on_error
    def Classify(self, request, context):
        return self.inference.classify(request, timeout_ms=timeout_ms(context))

    @_abort_on_error
    def Regress(self, request, context):
        return self.inference.regress(request, timeout_ms=timeout_ms(context))

    @_abort_on_error
    def MultiInference(self, request, context):
        return self.inference.multi_inference(request, timeout_ms=timeout_ms(context))

    @_abort_on_error
    def GetModelMetadata(self, request, context):
        return self.inference.metadata(request)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, inference):
        self.inference = inference

    @_abort_on_error
    def GetModelStatus(self, request, context):
        return self.inference.status(request)

    @_abort_on_error
    def HandleReloadConfigRequest(self, request, context):
        return self.inference.reload_config(request)


def parse_channel_arguments(text: str) -> list[tuple[str, object]]:
    """'k=v,k=v' -> grpc options; int-looking values become ints (as server.cc does)."""
    options = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"grpc_channel_arguments entry {item!r} is not key=value")
        options.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return options


def server_credentials(ssl_config) -> grpc.ServerCredentials:
    """server.cc BuildServerCredentials: the key pair, custom_ca as the roots, client_verify = require and verify
    client certificates (mutual TLS)."""
    return grpc.ssl_server_credentials(
        [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
        root_certificates=ssl_config.custom_ca.encode() or None, require_client_auth=ssl_config.client_verify)


def add_health_service(server: grpc.Server) -> None:
    """grpc.health.v1.Health reporting SERVING for the whole server ("") and for each TF Serving service."""
    servicer = health.HealthServicer()
    for service in ("tensorflow.serving.ModelService", "tensorflow.serving.PredictionService", ""):
        servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)


def build_server(inference, *, addresses: list[str], max_threads: int, channel_arguments: str = "",
                 enable_health: bool = False, ssl_config=None) -> tuple[grpc.Server, list[int]]:
    """Creates and binds (not starts) the gRPC server; returns it and the bound ports. With `ssl_config` (SSLConfig)
    every address, TCP and UNIX socket alike, serves TLS only, as tensorflow_model_server does."""
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    options += parse_channel_arguments(channel_arguments)
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=max_threads,
                                                                thread_name_prefix="grpc"), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(inference), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(inference), server)
    if enable_health:
        add_health_service(server)
    credentials = server_credentials(ssl_config) if ssl_config is not None else None
    ports = []
    for address in addresses:
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
        if port == 0 and not address.startswith("unix:"):
            raise OSError(f"Failed to bind gRPC server to {address}")
        ports.append(port)
    return server, ports
