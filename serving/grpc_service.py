"""gRPC front end: tensorflow.serving.PredictionService and ModelService, with the official generated messages.

The methods are registered here rather than through the generated add_*Servicer_to_server functions, so that each
call knows its message's size on the wire: it is charged to the call's memory budget (serving/memory_budget.py)
before anything is decoded, and the response is serialized while the budget is still held. grpc itself refuses a
message over --grpc_max_request_bytes, and calls beyond --grpc_max_concurrent_rpcs (RESOURCE_EXHAUSTED).
"""
from __future__ import annotations

import concurrent.futures
import logging
import math
import time
from typing import NamedTuple

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import request_costs
from serving.errors import ServingError
from serving.model_control import RELOAD_DEFAULT_TIMEOUT_S

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 1024  # grpc_status_util.cc truncates longer messages
_NO_DEADLINE_S = 1e8  # grpc reports "no deadline" as a time far in the future
PREDICTION_SERVICE, MODEL_SERVICE = "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"


def timeout_ms(context) -> int:
    """The client's deadline as RunOptions.timeout_in_ms (0 = none), like TF Serving's DeadlineToTimeoutMillis."""
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_S:
        return 0
    if remaining <= 0:
        raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded before the request was handled")
    return max(1, math.ceil(remaining * 1000))


class _Received(NamedTuple):
    message: object
    size: int  # bytes on the wire


def _parser(message_type):
    return lambda data: _Received(message_type.FromString(data), len(data))


class Services:
    """The calls of both services on the InferenceService; `budget` charges each, `model_control` guards reloads."""

    def __init__(self, inference, budget, model_control):
        self.inference = inference
        self.budget = budget
        self.model_control = model_control

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        inference = self.inference

        def service(name, table):
            return grpc.method_handlers_generic_handler(name, {
                method: grpc.unary_unary_rpc_method_handler(
                    lambda received, context, call=call: self._answer(call, received, context),
                    request_deserializer=_parser(message_type))  # answers are bytes already: no serializer
                for method, (message_type, call) in table.items()})

        def inference_call(method):  # the request's memory and the client's deadline go with it
            return lambda request, context, memory: method(request, memory=memory, timeout_ms=timeout_ms(context))

        def lookup(method):  # reads the served models only: nothing to charge
            return lambda request, context, memory: method(request)

        return [service(PREDICTION_SERVICE, {
            "Predict": (predict_pb2.PredictRequest, inference_call(inference.predict)),
            "Classify": (classification_pb2.ClassificationRequest, inference_call(inference.classify)),
            "Regress": (regression_pb2.RegressionRequest, inference_call(inference.regress)),
            "MultiInference": (inference_pb2.MultiInferenceRequest, inference_call(inference.multi_inference)),
            "GetModelMetadata": (get_model_metadata_pb2.GetModelMetadataRequest, lookup(inference.metadata)),
        }), service(MODEL_SERVICE, {
            "GetModelStatus": (get_model_status_pb2.GetModelStatusRequest, lookup(inference.status)),
            "HandleReloadConfigRequest": (model_management_pb2.ReloadConfigRequest, self._reload),
        })]

    def _answer(self, call, received: _Received, context) -> bytes:
        """`call(request, context, memory)` within the request's memory budget -> the serialized response; errors
        abort the call with their status (any other exception is a bug: logged, and INTERNAL for the client, never
        its text, rather than grpc's "Exception calling application: ...")."""
        memory = self.budget.open()
        try:
            memory.received(received.size)
            memory.charge((request_costs.RECEIVED_MESSAGE_COPIES - 1) * received.size, "the parsed message")
            return call(received.message, context, memory).SerializeToString()
        except ServingError as error:
            failure = error
        except Exception:
            log.exception("gRPC call failed")
            failure = ServingError(grpc.StatusCode.INTERNAL, "Internal error while handling the request")
        finally:
            memory.close()
        message = failure.message
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + "...TRUNCATED"
        context.abort(failure.code, message)

    def _reload(self, request, context, memory) -> model_management_pb2.ReloadConfigResponse:
        self.model_control.check_caller(client_has_certificate=context.peer_identities() is not None)
        remaining_ms = timeout_ms(context)
        deadline = time.monotonic() + (remaining_ms / 1000 if remaining_ms else RELOAD_DEFAULT_TIMEOUT_S)
        self.inference.apply_config(request.config, deadline=deadline, confine=self.model_control.check_paths)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response


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
    for service in (MODEL_SERVICE, PREDICTION_SERVICE, ""):
        servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)


def build_server(services: Services, *, addresses: list[str], max_threads: int, max_request_bytes: int,
                 max_concurrent_rpcs: int, channel_arguments: str = "", enable_health: bool = False,
                 ssl_config=None) -> tuple[grpc.Server, list[int]]:
    """Creates and binds (not starts) the gRPC server; returns it and the bound ports. With `ssl_config` (SSLConfig)
    every address, TCP and UNIX socket alike, serves TLS only, as tensorflow_model_server does. A
    grpc.max_receive_message_length in `channel_arguments` overrides `max_request_bytes`."""
    options = dict([("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", max_request_bytes)]
                   + parse_channel_arguments(channel_arguments))
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="grpc"),
                         handlers=services.handlers(), options=list(options.items()),
                         maximum_concurrent_rpcs=max_concurrent_rpcs)
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
