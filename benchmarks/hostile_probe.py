"""The hostile-input probe of issue 25: one case per way a request could cost the server far more than it sent, or
reach what it should not, each sent with plain clients (urllib, raw sockets, grpc stubs) to a `python -m serving`
process started from `--server-repo` (this checkout, or another one: the figures before a change).

A case passes when the server answers it as a hardened server should (the status or refusal named in the case),
its peak RSS while answering (VmHWM, reset through /proc/<pid>/clear_refs) rose by at most 256 MiB + 4 x the bytes
sent, and it answers a valid request correctly afterwards. Run through benchmarks/bench_hostile.py.
"""
from __future__ import annotations

import base64
import contextlib
import datetime
import gzip
import json
import os
import random
import socket
import string
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "serving"))
MIB = 1 << 20
CEILING_BYTES = 256 * MIB
CEILING_PER_BYTE_SENT = 4
TIMEOUT_MS = 10000  # the servers' --rest_api_timeout_in_ms (a flag both old and new servers know)


def png_bomb(side: int) -> bytes:
    """A valid 1-bit grayscale PNG of side x side zeros (~12 KB at 9999^2)."""
    row = b"\0" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


class Server:
    """`python -m serving` from `repo` on free loopback ports, with the half_plus_two and classifier models."""

    def __init__(self, repo: str, work: str, *flags: str):
        from serving.process import free_port

        self.grpc_port, self.rest_port = free_port(), free_port()
        self.log = os.path.join(work, f"server-{self.rest_port}.log")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "serving", f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
                 "--bind_address=127.0.0.1", f"--rest_api_timeout_in_ms={TIMEOUT_MS}", *flags],
                cwd=repo, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": repo})

    def wait(self) -> Server:
        from serving.process import wait_until_listening

        wait_until_listening(self.process, self.rest_port, timeout_s=300)
        return self

    def stop(self) -> None:
        from serving.process import stop

        stop([self.process])

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.rest_port}{path}"

    def peak_rise(self, send) -> tuple[int, object]:
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")
        before = _status_kb(self.pid, "VmRSS")
        try:
            outcome = send()
        except Exception as error:  # the case judges the outcome
            outcome = error
        return (_status_kb(self.pid, "VmHWM") - before) * 1024, outcome


# ----------------------------------------------------------------------------------------------------- clients
def http(server: Server, path: str, body: bytes | None = None, headers: dict | None = None, method=None,
         timeout: float = 120) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(server.url(path), data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def raw(port: int, data: bytes, half_close: bool = False, wait_s: float = 15) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as connection:
        try:
            connection.sendall(data)
            if half_close:
                connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        received = b""
        with contextlib.suppress(OSError):
            while chunk := connection.recv(1 << 16):
                received += chunk
        return received


def grpc_call(server: Server, method: str, request, timeout: float = 120, service: str = "prediction"):
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]) as channel:
        stub = (prediction_service_pb2_grpc.PredictionServiceStub if service == "prediction"
                else model_service_pb2_grpc.ModelServiceStub)(channel)
        try:
            getattr(stub, method)(request, timeout=timeout)
            return "OK", ""
        except grpc.RpcError as error:
            return error.code().name, error.details() or ""


def valid(server: Server) -> bool:
    status, _, body = http(server, "/v1/models/half:predict", json.dumps({"instances": [2.0]}).encode(), timeout=60)
    return status == 200 and json.loads(body) == {"predictions": [3.0]}


def json_error(status: int, body: bytes) -> str | None:
    """The `error` text of TF Serving's error shape, or None."""
    try:
        return json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------------------------------------------ requests
def _string_tensor(model: str, alias: str, shape, values):
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    proto = request.inputs[alias]
    proto.dtype = types_pb2.DT_STRING
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    proto.string_val.extend(values)
    return request


def _float_content(floats: int):
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add(size=floats)
    request.inputs["x"].tensor_content = b"\0" * (4 * floats)
    return request


def _int8_out_of_range():
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.inputs["x"].dtype = types_pb2.DT_INT8
    request.inputs["x"].tensor_shape.dim.add(size=1)
    request.inputs["x"].int_val.append(100000)
    return request


def _reload(config_text: str):
    from google.protobuf import text_format
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(config_text, request.config)
    return request


# --------------------------------------------------------------------------------------------------------- cases
class Case:
    def __init__(self, item: str, name: str, sent: int, send, judge):
        self.item, self.name, self.sent, self.send, self.judge = item, name, sent, send, judge


def memory_cases(models: str) -> list[Case]:
    context = {"blob": "x" * MIB}
    classify_body = json.dumps({"signature_name": "classify_x_to_y", "context": context,
                                "examples": [{"x": 1.0}] * 1000}).encode()
    objects_body = b'{"instances": [' + b",".join([b"{}"] * ((64 * MIB - 64) // 3)) + b"]}"
    png = png_bomb(9999)
    png_body = json.dumps({"instances": [{"b64": base64.b64encode(png).decode()}]}).encode()
    broadcast = _string_tensor("classifier", "image_bytes", [1, 900000], [b"x" * 1024])
    big_message = _float_content(150 * MIB // 4)
    refused = ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")

    def rest_4xx(outcome) -> str | None:
        status, _, body = outcome
        return None if 400 <= status < 500 and json_error(status, body) else f"HTTP {status} {body[:80]!r}"

    def grpc_refused(outcome) -> str | None:
        code, details = outcome
        return None if code in refused else f"{code} {details[:80]}"

    return [
        Case("1", "REST :classify, 1 MiB context x 1000 examples", len(classify_body),
             lambda s: http(s, "/v1/models/half:classify", classify_body), rest_4xx),
        Case("2", "gRPC string [1, 900000] carrying one 1 KiB value", broadcast.ByteSize(),
             lambda s: grpc_call(s, "Predict", broadcast), grpc_refused),
        Case("4", "gRPC message of 150 MiB", big_message.ByteSize(),
             lambda s: grpc_call(s, "Predict", big_message), grpc_refused),
        Case("4", "REST 64 MiB body of {} instances", len(objects_body),
             lambda s: http(s, "/v1/models/half:predict", objects_body), rest_4xx),
        Case("4", "REST 1-bit PNG 9999x9999 (12 KB)", len(png_body),
             lambda s: http(s, "/v1/models/classifier:predict", png_body), rest_4xx),
        Case("10", "REST gzip body inflating to 100 MiB", 0,
             lambda s: http(s, "/v1/models/half:predict", gzip.compress(b" " * (100 * MIB)),
                            {"Content-Encoding": "gzip"}),
             lambda outcome: None if outcome[0] == 413 and json_error(outcome[0], outcome[2]) else
             f"HTTP {outcome[0]} {outcome[2][:80]!r}"),
    ]


def control_cases(models: str) -> list[Case]:
    def refused(outcome) -> str | None:
        return None if outcome[0] != "OK" else "accepted"

    def reload_then_restore(server):
        started = time.monotonic()
        missing = 'config { name: "half" base_path: "/nonexistent/half" model_platform: "tensorflow" }'
        grpc_call(server, "HandleReloadConfigRequest", _reload(f"model_config_list {{ {missing} }}"), timeout=3,
                  service="model")
        code, _ = grpc_call(server, "HandleReloadConfigRequest", _reload(
            f'model_config_list {{ config {{ name: "half" base_path: "{models}/half" model_platform: "tensorflow" }} '
            f'config {{ name: "classifier" base_path: "{models}/classifier" model_platform: "tensorflow" }} }}'),
            timeout=5, service="model")
        return code, time.monotonic() - started

    return [
        Case("3", "reload RPC with an empty model list", 0, lambda s: grpc_call(
            s, "HandleReloadConfigRequest", _reload("model_config_list {}"), service="model"), refused),
        Case("3", "reload RPC loading a model from /etc", 0, lambda s: grpc_call(
            s, "HandleReloadConfigRequest", _reload(
                'model_config_list { config { name: "x" base_path: "/etc" model_platform: "tensorflow" } }'),
            service="model"), refused),
        Case("3", "reload RPC on a missing base path, then another within 5 s", 0, reload_then_restore,
             lambda outcome: None if outcome[0] != "DEADLINE_EXCEEDED" else
             f"the second reload waited {outcome[1]:.1f} s for the first's config lock"),
    ]


def rest_cases() -> list[Case]:
    predict = b"POST /v1/models/half:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    body = b'{"instances": [2.0]}'

    def trickles_then_valid(server):
        stop = threading.Event()

        def trickle():
            with socket.create_connection(("127.0.0.1", server.rest_port)) as connection:
                connection.sendall(predict + b"Content-Length: 1000\r\n\r\n")
                while not stop.wait(1.0):
                    with contextlib.suppress(OSError):
                        connection.sendall(b" ")

        threads = [threading.Thread(target=trickle, daemon=True) for _ in range(24)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        started = time.monotonic()
        ok = valid(server)
        waited = time.monotonic() - started
        stop.set()
        return ok, waited

    def metric_injection(server):
        http(server, "/v1/models/x%22%7D%201e9%0Afake_metric%7Ba%3D%22:predict", body)
        return http(server, "/monitoring/prometheus/metrics")[2].decode()

    def metric_cardinality(server):
        before = http(server, "/monitoring/prometheus/metrics")[2].decode().count("request_count{")
        for _ in range(2000):
            name = "".join(random.choices(string.ascii_lowercase, k=12))
            http(server, f"/v1/models/{name}:predict", body)
        return http(server, "/monitoring/prometheus/metrics")[2].decode().count("request_count{") - before

    def chunk_over_the_limit(server):
        started = time.monotonic()
        answer = raw(server.rest_port, predict + b"Transfer-Encoding: chunked\r\n\r\n8000000\r\n" + b" " * 100,
                     wait_s=TIMEOUT_MS / 1000 + 5)
        return answer, time.monotonic() - started

    def page_headers(server):
        return http(server, "/")[1]

    return [
        Case("5", "24 trickling bodies, then a valid request", 0, trickles_then_valid,
             lambda outcome: None if outcome[0] and outcome[1] < 3 else
             f"valid request {'failed' if not outcome[0] else 'answered'} after {outcome[1]:.1f} s"),
        Case("6", "complete request, then the client half-closes", 0, lambda s: raw(
            s.rest_port, predict + b"Content-Length: %d\r\n\r\n" % len(body) + body, half_close=True),
             lambda answer: None if answer.startswith(b"HTTP/1.1 200") else f"got {answer[:40]!r}"),
        Case("7", "model name injecting a metric line", 0, metric_injection,
             lambda text: None if not any(line.startswith("fake_metric") for line in text.splitlines()) else
             "fake_metric line in the scrape"),
        Case("7", "2000 unknown model names", 0, metric_cardinality,
             lambda added: None if added <= 5 else f"{added} new request_count series"),
        Case("10", "version of 5000 digits in the URL", 0, lambda s: http(
            s, "/v1/models/half/versions/" + "9" * 5000 + ":predict", body),
             lambda outcome: None if outcome[0] == 400 and json_error(*outcome[::2]) else f"HTTP {outcome[0]}"),
        Case("10", "web page without CSP / nosniff / frame-ancestors", 0, page_headers,
             lambda headers: None if "frame-ancestors" in headers.get("Content-Security-Policy", "") and
             headers.get("X-Content-Type-Options") == "nosniff" else "headers missing"),
        Case("10", "Host: attacker.example (DNS rebinding)", 0, lambda s: http(
            s, "/v1/models/half", headers={"Host": "attacker.example"}),
             lambda outcome: None if outcome[0] == 403 else f"HTTP {outcome[0]}"),
        Case("10", "text/plain :predict from another web page", 0, lambda s: http(
            s, "/v1/models/half:predict", body, {"Content-Type": "text/plain", "Origin": "http://attacker.example"}),
             lambda outcome: None if outcome[0] == 403 else f"HTTP {outcome[0]}"),
        Case("10", "gRPC int8 value out of range (a server bug before)", 0, lambda s: grpc_call(
            s, "Predict", _int8_out_of_range()),
             lambda outcome: None if outcome[0] == "INVALID_ARGUMENT" else f"{outcome[0]} {outcome[1][:60]}"),
        Case("10", "chunk size over the body limit, then a stall", 0, chunk_over_the_limit,
             lambda outcome: None if outcome[0][9:12] in (b"413", b"400") and outcome[1] < 2 else
             f"{outcome[0][:12]!r} after {outcome[1]:.1f} s"),
    ]


# ------------------------------------------------------------------------------------------------------------ TLS
def _tls_files(work: str) -> dict[str, str]:
    """SSLConfig files: a good pair, a mismatched pair, a 1024-bit RSA key, an expired certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID
    from google.protobuf import text_format

    from serving.config import SSLConfig

    def certificate(key, days: int):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.timezone.utc)
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=30))
                .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))

    def pem(key=None, cert=None) -> str:
        if key is not None:
            return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    good, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pairs = {"good": (good, certificate(good, 1)), "mismatch": (other, certificate(good, 1)),
             "weak": (weak, certificate(weak, 1)), "expired": (good, certificate(good, -1))}
    files = {}
    for name, (key, cert) in pairs.items():
        files[name] = os.path.join(work, f"ssl_{name}.config")
        with open(files[name], "w") as f:
            f.write(text_format.MessageToString(SSLConfig(server_key=pem(key), server_cert=pem(cert=cert))))
    return files


def tls_results(repo: str, work: str, models: str) -> list[tuple[Case, str | None, int]]:
    files = _tls_files(work)
    model = ("--model_name=half", f"--model_base_path={models}/half")
    results = []
    server = Server(repo, work, *model, f"--ssl_config_file={files['good']}")
    try:
        server.wait()
        try:
            status = http(server, "/v1/models/half", timeout=10)[0]
            problem = f"plain HTTP answered {status}" if status == 200 else None
        except OSError:
            problem = None  # the port speaks TLS only
    finally:
        server.stop()
    results.append((Case("8", "TLS configured: REST in clear", 0, None, None), problem, 0))
    for name, what in (("mismatch", "key does not match the certificate"), ("weak", "RSA key of 1024 bits"),
                       ("expired", "expired certificate")):
        server = Server(repo, work, *model, f"--ssl_config_file={files[name]}")
        try:
            server.wait()
            started = True
        except RuntimeError:  # exited before listening
            started = False
        finally:
            server.stop()
        with open(server.log, errors="replace") as f:
            log = f.read()
        problem = ("started anyway" if started else "traceback" if "Traceback" in log else
                   "PEM text in the message" if "BEGIN" in log else None)
        results.append((Case("8", f"TLS: {what}", 0, None, None), problem, 0))
    return results


# ------------------------------------------------------------------------------------------------------------ run
def write_models(work: str) -> str:
    import model_fixtures

    models = os.path.join(work, "models")
    model_fixtures.write_half_plus_two(os.path.join(models, "half", "123"))
    model_fixtures.write_image_classifier(os.path.join(models, "classifier", "1"))
    return models


def run(repo: str, work: str) -> tuple[int, int]:
    """Runs every case against a server from `repo`; prints a row per case and returns (passed, total)."""
    models = write_models(work)
    config = os.path.join(work, "models.config")
    with open(config, "w") as f:
        f.write("model_config_list {\n" + "".join(
            f'  config {{ name: "{name}" base_path: "{models}/{name}" model_platform: "tensorflow" }}\n'
            for name in ("half", "classifier")) + "}\n")
    monitoring = os.path.join(work, "monitoring.config")
    with open(monitoring, "w") as f:
        f.write('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }')
    server = Server(repo, work, f"--model_config_file={config}", f"--monitoring_config_file={monitoring}").wait()
    results = []
    try:
        assert valid(server), "the server does not answer a valid request"
        # The reload cases last: a server that accepts them no longer serves the models the others need.
        for case in memory_cases(models) + rest_cases() + control_cases(models):
            rise, outcome = server.peak_rise(lambda: case.send(server))  # noqa: B023
            problem = (f"{type(outcome).__name__}: {outcome}" if isinstance(outcome, Exception)
                       else case.judge(outcome))
            ceiling = CEILING_BYTES + CEILING_PER_BYTE_SENT * case.sent
            if problem is None and rise > ceiling:
                problem = f"peak RSS +{rise / MIB:.0f} MiB > {ceiling / MIB:.0f} MiB"
            if problem is None and not valid(server):
                problem = "a valid request failed afterwards"
            results.append((case, problem, rise))
            print(f"  [{'pass' if problem is None else 'FAIL'}] item {case.item:>2} {case.name:<58} "
                  f"+{rise / MIB:>6.0f} MiB  {problem or ''}", flush=True)
    finally:
        server.stop()
    for case, problem, _ in tls_results(repo, work, models):
        results.append((case, problem, 0))
        print(f"  [{'pass' if problem is None else 'FAIL'}] item {case.item:>2} {case.name:<58} "
              f"{'':>11}  {problem or ''}", flush=True)
    passed = sum(problem is None for _, problem, _ in results)
    return passed, len(results)
