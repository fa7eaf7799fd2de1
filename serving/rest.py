"""REST front end (TF Serving's /v1 API, the Prometheus page, and the web page at `/`) on a threaded HTTP server."""
from __future__ import annotations

import gzip
import http.server
import json
import logging
import os
import re
import threading
import time
import urllib.parse

import grpc
from google.protobuf import json_format

from serving import json_tensor
from serving.errors import ServingError, invalid
from serving.servable import DEFAULT_SIGNATURE

log = logging.getLogger(__name__)

# A refused (413) body is still read up to this much beyond the limit, for this long, so the client gets the answer.
DISCARD_BEYOND_LIMIT_BYTES = 16 << 20
DISCARD_TIMEOUT_SECONDS = 5.0
API_PATH = re.compile(r"(?i)/v1/.*")
POST_PATH = re.compile(r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
GET_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?")
STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
INT64_MAX = 2**63 - 1


class RestServer(http.server.ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not block shutdown; in-flight ones are drained
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address, core, *, timeout_ms: int, max_body_bytes: int, enable_cors: bool,
                 prometheus_path: str | None, metrics, model_names):
        self.core = core
        self.timeout_ms = timeout_ms
        self.max_body_bytes = max_body_bytes
        self.enable_cors = enable_cors
        self.prometheus_path = prometheus_path
        self.metrics = metrics
        self.model_names = model_names  # callable -> list of served model names (for the web page)
        self._in_flight = 0
        self._idle = threading.Condition()
        self.draining = False
        import socket
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, RestHandler)

    def request_started(self):
        with self._idle:
            self._in_flight += 1

    def request_finished(self):
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def drain(self, timeout_s: float) -> bool:
        """Stops accepting, then waits for in-flight requests (True if all finished)."""
        self.draining = True
        self.shutdown()
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        self.server_close()
        return True


class RestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TensorFlowServingPython"
    server: RestServer

    def setup(self):
        super().setup()
        # Headers and body are separate writes; without TCP_NODELAY, Nagle + delayed ACK add ~40 ms per response.
        import socket
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # access log only at debug level
        log.debug("%s - %s", self.address_string(), format % args)

    # ----------------------------------------------------------------------------------------- plumbing
    def _send(self, status: int, body: bytes, content_type: str | None = "application/json", api=True):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if api and self.server.enable_cors:
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Methods", "POST, GET")
            self.send_header("Access-Control-Allow-Headers", "Content-Type")
        self.send_header("Content-Length", str(len(body)))
        if self.server.draining:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error_json(self, error: ServingError):
        self._send(error.http_status, json_tensor.error_json(error.message))

    def _discard_body(self, length: int) -> None:
        """Reads and drops a refused body (up to a bound) before the 413 goes out: closing with unread bytes makes
        the kernel reset the connection, and a client still sending would see a broken pipe instead of our answer."""
        remaining = min(length, self.server.max_body_bytes + DISCARD_BEYOND_LIMIT_BYTES)
        self.connection.settimeout(DISCARD_TIMEOUT_SECONDS)
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > limit:
                    self.close_connection = True
                    raise _too_large(total, limit)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise invalid("Invalid Content-Length header") from None
            if length > limit:
                self.close_connection = True  # the unread body makes the connection unusable
                self._discard_body(length)
                raise _too_large(length, limit)
            body = self.rfile.read(length) if length > 0 else b""
        if "gzip" in self.headers.get("Content-Encoding", "").lower():
            try:
                body = _gunzip(body, limit)
            except OSError as error:
                raise invalid(f"Failed to decompress gzip request body: {error}") from None
        return body

    def _dispatch(self):
        self.server.request_started()
        try:
            path = urllib.parse.urlsplit(self.path).path
            if API_PATH.fullmatch(path):
                self._handle_api(path)
            elif self.server.prometheus_path and path == self.server.prometheus_path and self.command == "GET":
                self._send(200, self.server.metrics.prometheus_text().encode(), "text/plain; version=0.0.4", False)
            elif path in ("/", "/index.html") and self.command in ("GET", "HEAD"):
                self._send(200, _index_html(self.server.model_names()), "text/html; charset=utf-8", False)
            else:
                self._send(404, b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
                           b"</body></html>", "text/html", False)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.server.request_finished()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    # ---------------------------------------------------------------------------------------------- /v1
    def _handle_api(self, path: str):
        if self.command == "OPTIONS":
            origin = self.headers.get("Origin", "")
            self._send(200 if re.match(r"https?://", origin) else 400, b"", None)
            return
        try:
            body = self._read_body() if self.command in ("POST", "PUT", "PATCH") else b""
            self._send(200, self._route(path, body))
        except ServingError as error:
            self._send_error_json(error)
        except Exception as error:  # never drop the connection without an answer
            log.exception("REST request %s %s failed", self.command, path)
            self._send_error_json(ServingError(grpc.StatusCode.INTERNAL, f"Internal error: {error}"))

    def _route(self, path: str, body: bytes) -> bytes:
        malformed = invalid(f"Malformed request: {self.command} {path}")
        if self.command == "POST":
            match = POST_PATH.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, method = match.groups()
            if method not in ("predict", "classify", "regress"):
                raise malformed
            return self._post(urllib.parse.unquote(name), _version(version),
                              urllib.parse.unquote(label) if label else None, method, body)
        if self.command == "GET":
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

    def _post(self, name, version, label, method, body) -> bytes:
        core = self.server.core
        timeout_ms = self.server.timeout_ms
        request = json_tensor.parse_json(body)
        signature_name = json_tensor.signature_name_of(request)
        if method == "predict":
            with core.observe(name, "predict", "REST"), core.servable(name, version, label) as loaded:
                effective = signature_name or DEFAULT_SIGNATURE
                signature = loaded.signatures.get(effective)
                if signature is None or not signature.inputs:
                    if signature is None:
                        raise invalid(f'Serving signature name: "{effective}" not found in signature def')
                    raise invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
                dtypes = {alias: info.dtype for alias, info in signature.inputs.items()}
                inputs, row_format = json_tensor.predict_inputs_from_json(request, dtypes)
                outputs = core.predict_arrays(loaded, effective, inputs, (), timeout_ms)
                return json_tensor.predict_response_json(outputs, row_format)
        input_proto = json_tensor.classify_regress_input_from_json(request, method)
        with core.observe(name, method, "REST"), core.servable(name, version, label) as loaded:
            if method == "classify":
                _, result = core.classification_result(loaded, signature_name, input_proto, timeout_ms)
                return json_tensor.classification_json(result)
            _, result = core.regression_result(loaded, signature_name, input_proto, timeout_ms)
            return json_tensor.regression_json(result)

    def _status(self, name, version) -> bytes:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        response = self.server.core.status(request)
        # http_rest_api_util.cc ToJsonString: protobuf's C++ JSON printer with add_whitespace (1-space indent).
        return json_format.MessageToJson(response, always_print_fields_with_no_presence=True, indent=1).encode()

    def _metadata(self, name, version, label) -> bytes:
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = version
        elif label:
            request.model_spec.version_label = label
        response = self.server.core.metadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        document = {
            "model_spec": json_format.MessageToDict(response.model_spec, preserving_proto_field_name=True,
                                                    always_print_fields_with_no_presence=True),
            "metadata": {"signature_def": json_format.MessageToDict(
                signature_map, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)},
        }
        return json.dumps(document, indent=1).encode()


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    value = int(text)
    if value > INT64_MAX:
        raise invalid(f"Failed to convert version: {text} to numeric.")
    return value


def _too_large(size: int, limit: int) -> ServingError:
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"Request body of {size} bytes exceeds the limit of {limit} bytes "
                        "(--rest_api_max_request_bytes)", http_status=413)


def _gunzip(body: bytes, limit: int) -> bytes:
    import io
    with gzip.GzipFile(fileobj=io.BytesIO(body)) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _too_large(len(data), limit)
    return data


_INDEX_TEMPLATE = None


def _index_html(model_names) -> bytes:
    global _INDEX_TEMPLATE
    if _INDEX_TEMPLATE is None:
        with open(os.path.join(STATIC_DIR, "index.html"), encoding="utf-8") as f:
            _INDEX_TEMPLATE = f.read()
    models = json.dumps(sorted(model_names)).replace("<", "\\u003c")
    return _INDEX_TEMPLATE.replace("/*MODELS*/[]", models).encode("utf-8")
