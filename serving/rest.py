"""REST front end (TF Serving's /v1 API, the Prometheus page and the web page at `/`) on aiohttp's HTTP server.

aiohttp because its server parses HTTP/1.1 with llhttp (Node's strict C parser: it refuses conflicting or malformed
Content-Length, CL+TE smuggling and bad chunk sizes, and limits line and header sizes) and has idle timeouts, lingering
close and graceful shutdown built in; uvicorn + httptools leaves header sizes and the header-read time unbounded.

One event-loop thread moves the bytes. A /v1 request's body is read first, each gap between its bytes at most
--rest_api_body_timeout_in_ms (nginx's client_body_timeout) and the whole within --rest_api_timeout_in_ms, its bytes
charged to the request's memory budget (serving/memory_budget.py) as they arrive; only a complete body takes one of
--rest_api_num_threads worker slots, so slow uploads never hold a worker. Everything else the request costs (JSON
parsing, the model call, writing the response) runs on the worker. At most --rest_api_max_connections connections
are open at once. With --ssl_config_file the port serves HTTPS from the same key pair as gRPC (serving/tls.py).

Browsers get the protections a page on localhost needs: a Host header naming something else than this machine (DNS
rebinding) or a cross-origin Origin without --rest_api_enable_cors_support is refused (403), and every response says
nosniff, no framing and, for the web page, a Content-Security-Policy allowing its own script only.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import gzip
import hashlib
import io
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import urllib.parse
import zlib

import grpc
from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    regression_pb2,
)

from serving import json_tensor, request_costs
from serving.errors import ServingError, invalid
from serving.inference import DEFAULT_SIGNATURE, REST
from serving.memory_budget import RequestMemory

log = logging.getLogger(__name__)

API_PATH = re.compile(r"(?i)/v1/.*")
# [0-9], not \d: RE2's \d (TF Serving's) is ASCII, Python's takes any Unicode digit.
POST_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?"
                       r":(classify|regress|predict)")
GET_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")
STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
INT64_MAX = 2**63 - 1
CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "POST, GET",
                "Access-Control-Allow-Headers": "Content-Type"}
NOT_FOUND_HTML = b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>"
# On every response; the web page replaces the policy with one that allows its own inline script and style.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}
PAGE_POLICY = ("default-src 'none'; script-src '{script}'; style-src '{style}'; img-src blob:; connect-src 'self'; "
               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# Host names that are this machine whatever resolves them (RFC 6761: *.localhost); IP literals are too.
LOCAL_HOST_NAMES = ("localhost",)
INT64_DIGITS = 19
# What TensorFlow's Session::Run says when RunOptions.timeout_in_ms runs out; TF Serving answers it with 504.
DEADLINE_MESSAGE = "Timed out waiting for notification"

# Request-head limits, enforced by the parser (a request over them gets 400 and the connection is closed).
MAX_REQUEST_LINE_BYTES = 8190
MAX_HEADER_FIELD_BYTES = 8190
MAX_HEADERS = 100
LISTEN_BACKLOG = 128
# A refused (413) body is still read and dropped for up to this long before closing: closing with unread bytes makes
# the kernel reset the connection, and a client still sending would see a broken pipe instead of the answer.
LINGER_SECONDS = 5.0
# Connections still open once the in-flight requests are drained get this long to finish before they are cut.
CLOSE_SECONDS = 1.0
# A gzip body is inflated this much at a time, each step charged before it is taken.
GUNZIP_STEP_BYTES = 1 << 20


class _RefusedRequestFilter(logging.Filter):
    """aiohttp logs every request its parser refuses as an ERROR with a traceback. That is the client's fault, and a
    hostile client must not be able to flood the log: it becomes one debug line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            log.debug("Refused a malformed HTTP request: %s", str(error).splitlines()[0])
            return False
        return True


_REFUSED_REQUEST_FILTER = _RefusedRequestFilter()


def _too_many_connections(limit: int) -> bytes:
    # aiohttp has no connection cap, and before a request is parsed there is nothing to answer through it: the
    # refusal is a complete HTTP response written as it is.
    body = json_tensor.error_json(f"Too many connections: this server accepts at most {limit} at once "
                                  "(--rest_api_max_connections)")
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


class _JsonErrorRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler with three changes:
    - what its parser refuses (broken framing, an oversized request head) it answers itself, before any handler
      runs, in text/plain; the same status and close here carry TF Serving's `{"error": ...}` body, so every refusal
      reads alike to a client;
    - a connection beyond the server's cap gets a 503 and is closed at once;
    - a client that shuts down its sending side (HTTP/1.1 allows it once the request is sent) still gets its answer:
      asyncio would close the connection on that EOF, cancelling the request."""

    def connection_made(self, transport) -> None:
        if len(self._manager.connections) >= self._manager.max_connections:
            transport.write(_too_many_connections(self._manager.max_connections))
            transport.close()
            return
        super().connection_made(transport)

    def eof_received(self) -> bool:
        if self._waiter is not None and not self._waiter.done():
            return False  # waiting for a request (none, or half a head): nothing to answer, asyncio closes
        self.close()  # no further request can come: close once this one is answered
        return True  # keeps the sending side open for the answer

    def handle_error(self, request, status=500, exc=None, message=None):
        plain = super().handle_error(request, status, exc, message)  # logs; raises if a response already went out
        reason = getattr(exc, "message", None) or message or plain.reason
        response = web.Response(status=status, body=json_tensor.error_json(" ".join(str(reason).split())),
                                content_type="application/json", headers=SECURITY_HEADERS)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __init__(self, handler, *, max_connections: int, **kwargs):
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections

    def __call__(self) -> web_protocol.RequestHandler:
        # web.Server's protocol factory, with the handler above (its loop and keyword arguments are web.Server's).
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class RestServer:
    """The HTTP server: start() binds and serves on its own event-loop thread; drain() stops it gracefully."""

    def __init__(self, host: str, port: int, inference, *, budget, num_threads: int, timeout_ms: int,
                 body_timeout_ms: int, idle_timeout_ms: int, max_body_bytes: int, max_connections: int,
                 enable_cors: bool, allowed_hosts: list[str], prometheus_path: str | None, metrics, model_names,
                 ssl_context=None):
        self.api = RestApi(inference, max_body_bytes=max_body_bytes)
        self.budget = budget
        self.timeout_s = timeout_ms / 1000 if timeout_ms > 0 else None
        self.body_timeout_s = body_timeout_ms / 1000
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.enable_cors = enable_cors
        self.allowed_hosts = _allowed_hosts(allowed_hosts)
        self.ssl_context = ssl_context
        self.prometheus_path = prometheus_path
        self.metrics = metrics
        self.model_names = model_names  # callable -> list of served model names (for the web page)
        self.num_threads = num_threads
        self._idle_timeout_s = idle_timeout_ms / 1000
        self._socket = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                            backlog=LISTEN_BACKLOG)
        self.port = self._socket.getsockname()[1]
        self._executor = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="rest_worker")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rest_api", daemon=True)
        self._runner = None
        self._slots: asyncio.Semaphore | None = None
        self._in_flight = 0
        self._idle: asyncio.Event | None = None
        self._draining = False

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        logging.getLogger("aiohttp.server").addFilter(_REFUSED_REQUEST_FILTER)  # adds it once per process
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    async def _start(self):
        self._slots = asyncio.Semaphore(self.num_threads)
        self._idle = asyncio.Event()
        self._idle.set()
        server = _JsonErrorServer(
            self._handle, max_connections=self.max_connections,
            access_log=log if log.isEnabledFor(logging.DEBUG) else None,
            # A connection must deliver a complete request head within this long after it opens or after its last
            # response: covers idle, keep-alive and half-sent-header connections alike.
            keepalive_timeout=self._idle_timeout_s, lingering_time=LINGER_SECONDS,
            max_line_size=MAX_REQUEST_LINE_BYTES, max_field_size=MAX_HEADER_FIELD_BYTES, max_headers=MAX_HEADERS,
            auto_decompress=False)  # gzip bodies are inflated by RestApi, bounded by --rest_api_max_request_bytes
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=CLOSE_SECONDS)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket, backlog=LISTEN_BACKLOG, ssl_context=self.ssl_context).start()

    def drain(self, timeout_s: float) -> bool:
        """Stops accepting, lets in-flight requests finish (up to timeout_s), then closes (True if all finished)."""
        future = asyncio.run_coroutine_threadsafe(self._drain(timeout_s), self._loop)
        try:
            drained = future.result(timeout_s + CLOSE_SECONDS + 5)
        except concurrent.futures.TimeoutError:
            drained = False
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        return drained

    async def _drain(self, timeout_s: float) -> bool:
        self._draining = True  # responses from now on say Connection: close
        for site in list(self._runner.sites):
            await site.stop()  # no new connections
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            drained = True
        except TimeoutError:
            drained = False
        await self._runner.cleanup()  # closes idle keep-alive connections
        return drained

    # ------------------------------------------------------------------------------------------- requests
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self._in_flight += 1
        self._idle.clear()
        try:
            path = request.rel_url.raw_path  # still percent-encoded: TF Serving matches first, then decodes
            host = request.headers.get("Host")
            if host is not None and not self._host_allowed(host):
                return await self._refuse(request, ServingError(
                    grpc.StatusCode.PERMISSION_DENIED, f"Host {host!r} is not this server: requests must name it by "
                    "IP address, localhost, this machine's name or one of --rest_api_allowed_hosts"))
            if API_PATH.fullmatch(path):
                return await self._api(request, path)
            if self.prometheus_path and path == self.prometheus_path and request.method == "GET":
                return self._response(200, self.metrics.prometheus_text().encode(), "text/plain; version=0.0.4",
                                      api=False)
            if path in ("/", "/index.html") and request.method in ("GET", "HEAD"):
                page, policy = _index_html(self.model_names())
                response = self._response(200, page, "text/html; charset=utf-8", api=False)
                response.headers["Content-Security-Policy"] = policy
                return response
            return self._response(404, NOT_FOUND_HTML, "text/html", api=False)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _api(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return self._response(200 if re.match(r"https?://", request.headers.get("Origin", "")) else 400, b"", None)
        if not self.enable_cors and not _same_origin(request):
            return await self._refuse(request, ServingError(
                grpc.StatusCode.PERMISSION_DENIED, f"Cross-origin request from {request.headers['Origin']!r} refused "
                "(--rest_api_enable_cors_support is off)"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s if self.timeout_s else None
        has_body = request.method in ("POST", "PUT", "PATCH")
        memory = self.budget.open()
        worker = None
        try:
            body = await self._read_body(request, deadline, memory) if has_body else b""
            try:
                async with asyncio.timeout_at(deadline):
                    await self._slots.acquire()
            except TimeoutError:
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
            # The inference service gets what is left of the deadline (at least 1 ms: its timeout_ms 0 means none).
            timeout_ms = max(1, int((deadline - loop.time()) * 1000)) if deadline is not None else 0
            answer = loop.create_future()
            worker = self._executor.submit(self.api.handle, request.method, path, body,
                                           request.headers.get("Content-Encoding", ""), timeout_ms, memory)
            worker.add_done_callback(
                lambda _: loop.call_soon_threadsafe(self._worker_done, worker, answer, memory))
            try:
                # On timeout the client gets its answer now; the worker keeps its slot until the model call returns.
                async with asyncio.timeout_at(deadline):
                    payload = await answer
            except TimeoutError:
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_MESSAGE) from None
            return self._response(200, payload)
        except ServingError as error:
            return await self._refuse(request, error)
        finally:
            if worker is None:  # otherwise the worker gives it back when it is done
                memory.close()

    async def _refuse(self, request: web.BaseRequest, error: ServingError) -> web.Response:
        """The error answer; a body left unread makes the connection unusable, so it is then closed (a late one at
        once: no lingering read of a body the client has stopped sending)."""
        if error.http_status == 408:
            return await self._answer_and_close(request, self._error(error, close=True))
        has_body = request.method in ("POST", "PUT", "PATCH")
        return self._error(error, close=has_body and not request.content.is_eof())

    def _worker_done(self, worker: concurrent.futures.Future, answer: asyncio.Future, memory: RequestMemory) -> None:
        """On the loop, once per worker (one wake-up): frees its slot and memory, hands its result to a request still
        waiting."""
        self._slots.release()
        memory.close()
        if answer.done():  # the deadline passed first
            return
        if worker.cancelled():
            answer.cancel()
        elif worker.exception() is not None:
            answer.set_exception(worker.exception())
        else:
            answer.set_result(worker.result())

    async def _read_body(self, request: web.BaseRequest, deadline: float | None, memory: RequestMemory) -> bytes:
        """The body, up to --rest_api_max_request_bytes, each gap between its bytes under --rest_api_body_timeout_in_ms
        and all of it before the request's deadline; charged to `memory` as it arrives."""
        limit = self.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(request.content_length, limit)
        loop = asyncio.get_running_loop()
        chunks, size = [], 0
        while True:
            gap_deadline = loop.time() + self.body_timeout_s
            try:
                async with asyncio.timeout_at(gap_deadline if deadline is None else min(deadline, gap_deadline)):
                    chunk = await request.content.readany()
            except TimeoutError:
                late = deadline is not None and loop.time() >= deadline
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, (
                    f"Request body not received within {self.timeout_s * 1000:.0f} ms (--rest_api_timeout_in_ms)"
                    if late else f"Request body stalled: no bytes for {self.body_timeout_s * 1000:.0f} ms "
                    "(--rest_api_body_timeout_in_ms)"), http_status=408) from None
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            memory.received(len(chunk))
            chunks.append(chunk)

    @staticmethod
    async def _answer_and_close(request: web.BaseRequest, response: web.Response) -> web.Response:
        """Sends the response, then closes at once: no lingering read of a body the client has stopped sending."""
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
        return response

    def _error(self, error: ServingError, close: bool = False) -> web.Response:
        return self._response(error.http_status, json_tensor.error_json(error.message), close=close)

    def _response(self, status: int, body: bytes, content_type: str | None = "application/json", api: bool = True,
                  close: bool = False) -> web.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        if api and self.enable_cors:
            headers.update(CORS_HEADERS)
        response = web.Response(status=status, body=body, headers={**SECURITY_HEADERS, **headers})
        if close or self._draining:  # an unread body makes the connection unusable
            response.force_close()
        return response

    def _host_allowed(self, host: str) -> bool:
        """Whether a Host header names this server: an IP address, a local name, this machine's name or an allowed
        one (`*` allows any). A browser tricked by DNS rebinding sends the attacker's name, so it is refused."""
        if "*" in self.allowed_hosts:
            return True
        name = _host_name(host)
        if name in self.allowed_hosts or name.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


class RestApi:
    """TF Serving's /v1 API on one request (runs on a worker thread): -> the 200 body, or raises ServingError.
    Routing and JSON only: every call goes to the InferenceService the gRPC service calls."""

    def __init__(self, inference, *, max_body_bytes: int):
        self.inference = inference
        self.max_body_bytes = max_body_bytes

    def handle(self, method: str, path: str, body: bytes, content_encoding: str, timeout_ms: int,
               memory: RequestMemory) -> bytes:
        try:
            if "gzip" in content_encoding.lower():
                body = _gunzip(body, self.max_body_bytes, memory)
            return self._route(method, path, body, timeout_ms, memory)
        except ServingError:
            raise
        except Exception:  # a bug, not the client's fault: the traceback goes to the log, not to the client
            log.exception("REST request %s %s failed", method, path)
            raise ServingError(grpc.StatusCode.INTERNAL, "Internal error while handling the request") from None

    def _route(self, method: str, path: str, body: bytes, timeout_ms: int, memory: RequestMemory) -> bytes:
        malformed = invalid(f"Malformed request: {method} {path}")
        if method == "POST":
            match = POST_PATH.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, verb = match.groups()
            if verb not in ("predict", "classify", "regress"):
                raise malformed
            return self._post(urllib.parse.unquote(name), _version(version),
                              urllib.parse.unquote(label) if label else None, verb, body, timeout_ms, memory)
        if method == "GET":
            match = GET_PATH.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, metadata = match.groups()
            if not name:
                raise invalid("Missing model name in request.")
            name = urllib.parse.unquote(name)
            if metadata == "metadata":
                return self._metadata(name, _version(version), urllib.parse.unquote(label) if label else None)
            return self._status(name, _version(version))
        raise malformed

    def _post(self, name, version, label, verb, body, timeout_ms, memory: RequestMemory) -> bytes:
        """http_rest_api_handler.cc's Process{Predict,Classify,Regress}Request: JSON -> the request the gRPC service
        gets -> the same InferenceService call -> JSON. The body is parsed before the model is looked up (a bad body
        is a 400 even for an unknown model), as upstream; what parsing it costs is charged before."""
        memory.charge(request_costs.json_body(body), f"parsing the {len(body)}-byte JSON body")
        request = json_tensor.parse_json(body)
        model_spec = _model_spec(name, version, label, json_tensor.signature_name_of(request))
        if verb == "predict":
            prediction = self.inference.predict_tensors(
                model_spec, lambda signatures: json_tensor.predict_inputs_from_json(
                    request, _input_dtypes(signatures, model_spec.signature_name))[0],
                entrypoint=REST, memory=memory, timeout_ms=timeout_ms)
            self.inference.log_rest_predict(model_spec, prediction)
            # predict_inputs_from_json accepted exactly one of "instances" (row format) and "inputs" (columnar).
            return json_tensor.predict_response_json(prediction.outputs, row_format="instances" in request)
        if verb == "classify":
            classify = classification_pb2.ClassificationRequest(model_spec=model_spec)
            json_tensor.classify_regress_input_from_json(request, verb, classify.input)
            return json_tensor.classification_json(
                self.inference.classify(classify, memory=memory, entrypoint=REST, timeout_ms=timeout_ms).result)
        regress = regression_pb2.RegressionRequest(model_spec=model_spec)
        json_tensor.classify_regress_input_from_json(request, verb, regress.input)
        return json_tensor.regression_json(
            self.inference.regress(regress, memory=memory, entrypoint=REST, timeout_ms=timeout_ms).result)

    def _status(self, name, version) -> bytes:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=_model_spec(name, version, None))
        response = self.inference.status(request)
        # http_rest_api_util.cc ToJsonString: protobuf's C++ JSON printer with add_whitespace (1-space indent).
        return json_format.MessageToJson(response, always_print_fields_with_no_presence=True, indent=1).encode()

    def _metadata(self, name, version, label) -> bytes:
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=_model_spec(name, version, label), metadata_field=["signature_def"])
        response = self.inference.metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        document = {
            "model_spec": json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True,
                                                    always_print_fields_with_no_presence=True),
            "metadata": {"signature_def": json_format.MessageToDict(
                signature_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)},
        }
        return json.dumps(document, indent=1).encode()


def _model_spec(name: str, version: int | None, label: str | None, signature_name: str = "") -> model_pb2.ModelSpec:
    """The URL's model, version or label (the regex allows one of the two) and the body's signature_name."""
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    if version is not None:
        spec.version.value = version
    elif label:
        spec.version_label = label
    return spec


def _input_dtypes(signatures: dict, signature_name: str) -> dict[str, int]:
    """The signature's input dtypes the JSON is decoded to (http_rest_api_handler.cc GetInfoMap, with its messages)."""
    signature = signatures.get(signature_name or DEFAULT_SIGNATURE)
    if signature is None:
        raise invalid(f'Serving signature name: "{signature_name or DEFAULT_SIGNATURE}" not found in signature def')
    if not signature.inputs:
        raise invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    return {alias: info.dtype for alias, info in signature.inputs.items()}


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    # Checked by length first: int() of a 5000-digit text raises (Python's 4300-digit limit) instead of answering.
    if len(text.lstrip("0")) > INT64_DIGITS or int(text) > INT64_MAX:
        raise invalid(f"Failed to convert version: {text} to numeric.")
    return int(text)


def _too_large(size: int, limit: int) -> ServingError:
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"Request body of {size} bytes exceeds the limit of {limit} bytes "
                        "(--rest_api_max_request_bytes)", http_status=413)


def _gunzip(body: bytes, limit: int, memory: RequestMemory) -> bytes:
    """The inflated body, at most `limit` bytes (413 beyond), inflated a step at a time, each step charged first."""
    chunks, size = [], 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(body)) as f:
            while size <= limit:
                memory.charge(GUNZIP_STEP_BYTES, "inflating the gzip body")
                chunk = f.read(min(GUNZIP_STEP_BYTES, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise invalid(f"Failed to decompress gzip request body: {error}") from None
    if size > limit:
        raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"Request body inflates to more than the limit of {limit} bytes "
                           "(--rest_api_max_request_bytes)", http_status=413)
    memory.charge(size, "the inflated body")
    return b"".join(chunks)


def _allowed_hosts(listed: list[str]) -> set[str]:
    """The host names a request may give besides IP addresses: local names, this machine's, and `listed`."""
    return {*LOCAL_HOST_NAMES, socket.gethostname().lower(), *(name.strip().lower() for name in listed if name)}


def _host_name(host: str) -> str:
    """A Host header's name without its port ("[::1]:8501" -> "::1", "Example.org." -> "example.org")."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name = host.rpartition(":")[0] if host.count(":") == 1 else host
    return name.rstrip(".").lower()


def _same_origin(request: web.BaseRequest) -> bool:
    """No Origin header (not a browser's cross-site request), or one naming this server as the request reached it."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parsed = urllib.parse.urlsplit(origin)
    return parsed.scheme == request.scheme and parsed.netloc.lower() == request.headers.get("Host", "").lower()


_INDEX_TEMPLATE = None
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.S)


def _index_html(model_names) -> tuple[bytes, str]:
    """The web page with the served models filled in, and its Content-Security-Policy: the page's own inline script
    and style only (by their hashes), images from the files the user picks, requests to this server."""
    global _INDEX_TEMPLATE
    if _INDEX_TEMPLATE is None:
        with open(os.path.join(STATIC_DIR, "index.html"), encoding="utf-8") as f:
            _INDEX_TEMPLATE = f.read()
    models = json.dumps(sorted(model_names)).replace("<", "\\u003c")
    page = _INDEX_TEMPLATE.replace("/*MODELS*/[]", models)
    hashes = {kind: "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
              for kind, text in _INLINE.findall(page)}
    return page.encode("utf-8"), PAGE_POLICY.format(**hashes)
