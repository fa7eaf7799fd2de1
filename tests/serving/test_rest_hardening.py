"""The REST front end against hostile and broken clients: raw sockets and `requests` against `python -m serving`.

Every malformed request gets a 4xx with TF Serving's JSON error body (for broken HTTP framing, the parser's 400 with
that body and a closed connection); nothing smuggled behind a broken request is answered; stalled clients are cut off
within the configured timeouts; the server's peak memory stays bounded; valid requests keep working in between.
"""
from __future__ import annotations

import gzip
import json
import os
import socket
import threading
import time

import pytest
import requests
from conftest import free_port, write

from serving.process import model_server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_BODY = 1 << 20
TIMEOUT_MS = 3000
BODY_GAP_MS = 1500
IDLE_MS = 1000
THREADS = 2
MAX_CONNECTIONS = 32
SLACK_S = 1.5  # scheduling slack on a shared 2-core machine
PREDICT = b"POST /v1/models/half:predict HTTP/1.1\r\nHost: localhost\r\n"
VALID_BODY = b'{"instances": [2.0]}'


def _request(headers: bytes, body: bytes = b"") -> bytes:
    return PREDICT + headers + b"\r\n" + body


def _with_length(body: bytes) -> bytes:
    return _request(b"Content-Length: %d\r\n" % len(body), body)


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    """`python -m serving` with small limits, so every limit and timeout is reached within seconds."""
    root = tmp_path_factory.mktemp("rest_hardening")
    monitoring = write(root / "monitoring.config", 'prometheus_config { enable: true, path: "/metrics" }')
    with open(root / "server.log", "wb") as log_file, model_server(
            "--model_name=half", f"--model_base_path={models_dir / 'half'}", f"--monitoring_config_file={monitoring}",
            f"--rest_api_max_request_bytes={MAX_BODY}", f"--rest_api_timeout_in_ms={TIMEOUT_MS}",
            f"--rest_api_body_timeout_in_ms={BODY_GAP_MS}", f"--rest_api_idle_timeout_in_ms={IDLE_MS}",
            f"--rest_api_num_threads={THREADS}", f"--rest_api_max_connections={MAX_CONNECTIONS}",
            cwd=REPO, stderr=log_file) as server:
        yield server


def exchange(port: int, data: bytes, wait_s: float = 10.0, half_close: bool = False
             ) -> tuple[list[tuple[int, dict, bytes]], bool, float]:
    """Sends `data` on a new connection (then shuts its sending side if half_close), reads until the server closes
    (or wait_s passes). -> (responses parsed from what came back, whether the server closed, seconds until then)."""
    started = time.monotonic()
    received, closed = b"", False
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.settimeout(wait_s)
        try:
            connection.sendall(data)
            if half_close:
                connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server refused before reading everything; its answer (if any) is still to be read
        try:
            while chunk := connection.recv(1 << 16):
                received += chunk
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
    return parse_responses(received), closed, time.monotonic() - started


def parse_responses(data: bytes) -> list[tuple[int, dict, bytes]]:
    responses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        responses.append((status, headers, rest[:length]))
        data = rest[length:]
    return responses


def assert_json_error(status: int, headers: dict, body: bytes, expected_status: int, fragment: str) -> None:
    assert status == expected_status, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert fragment in error
    assert "Traceback" not in error and "Internal error" not in error


def assert_still_serving(server) -> None:
    response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/half:predict", data=VALID_BODY, timeout=30)
    assert (response.status_code, response.json()) == (200, {"predictions": [3.0]})


# ------------------------------------------------------------------------------------- broken framing: parser 400
SMUGGLED = b"GET /v1/models/half HTTP/1.1\r\nHost: localhost\r\n\r\n"
FRAMING_CASES = {
    "negative Content-Length": _request(b"Content-Length: -5\r\n", VALID_BODY),
    "conflicting Content-Length": _request(b"Content-Length: 20\r\nContent-Length: 21\r\n", VALID_BODY),
    "Content-Length with sign and underscore": _request(b"Content-Length: +2_77\r\n", VALID_BODY),
    "Content-Length overflowing 64 bits": _request(b"Content-Length: 99999999999999999999999\r\n", VALID_BODY),
    "Content-Length plus Transfer-Encoding (smuggling)": _request(
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED),
    "bad chunk size hiding a request": _request(
        b"Transfer-Encoding: chunked\r\n", b"zz\r\n" + VALID_BODY + b"\r\n0\r\n\r\n" + SMUGGLED),
    "negative chunk size": _request(b"Transfer-Encoding: chunked\r\n", b"-5\r\nabcde\r\n0\r\n\r\n" + SMUGGLED),
    "chunked not the last transfer coding": _request(b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
    "unknown transfer coding": _request(b"Transfer-Encoding: identity\r\n", b""),
    "obsolete header line folding": _request(b"X-Folded: a\r\n b\r\nContent-Length: 20\r\n", VALID_BODY),
    "space before the header colon": _request(b"Content-Length : 20\r\n", VALID_BODY),
    "bare LF line ends": PREDICT.replace(b"\r\n", b"\n") + b"Content-Length: 20\n\n" + VALID_BODY,
    "NUL in a header value": _request(b"X-Nul: a\x00b\r\nContent-Length: 20\r\n", VALID_BODY),
    "request line over the limit": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "header line over the limit": _request(b"X-Long: " + b"a" * 20000 + b"\r\n"),
    "too many headers": _request(b"".join(b"X-H%d: v\r\n" % i for i in range(300))),
    "TLS handshake on the HTTP port": bytes.fromhex("16030100c4010000c00303") + os.urandom(64),
}


@pytest.mark.parametrize("name", FRAMING_CASES)
def test_broken_framing_is_refused_and_closed(server, name):
    responses, closed, _ = exchange(server.rest_port, FRAMING_CASES[name])
    assert [status for status, _, _ in responses] == [400], responses  # one answer: nothing smuggled is served
    assert closed
    status, headers, body = responses[0]
    assert_json_error(status, headers, body, 400, "")
    assert len(body) < 1024
    assert_still_serving(server)


# ------------------------------------------------------------------------------ malformed content: JSON 4xx
def _gzip_bomb() -> bytes:
    return gzip.compress(b"{" + b" " * (4 * MAX_BODY) + b"}")


BAD_BODIES = {
    "integer of 5000 digits": (b'{"instances": [' + b"9" * 5000 + b"]}", 400, "Number too big"),
    "negative integer of 400 digits": (b'{"instances": [-' + b"9" * 400 + b"]}", 400, "Number too big"),
    "nesting 70 levels": (b'{"instances": ' + b"[" * 70 + b"1.0" + b"]" * 70 + b"}", 400, "70 levels deep"),
    "nesting 100000 levels": (b'{"instances": ' + b"[" * 100000 + b"]" * 100000 + b"}", 400, "Nesting too deep"),
    "lone high surrogate in a value": (b'{"instances": ["\\ud800"]}', 400, "surrogate pair in string is invalid"),
    "lone low surrogate in a key": (b'{"instances": [{"\\udc00": 1.0}]}', 400, "surrogate pair in string is invalid"),
    "lone surrogate in a key of the request": (b'{"\\udbff": 1, "instances": [1.0]}', 400, "surrogate pair"),
    "invalid UTF-8": (b'{"instances": ["\xff\xfe"]}', 400, "Invalid encoding in string"),
    "truncated JSON": (b'{"instances": [1.0,', 400, "JSON Parse error"),
    "not JSON": (b"instances=1", 400, "JSON Parse error"),
    "empty body": (b"", 400, "The document is empty"),
    "JSON array instead of object": (b"[1.0]", 400, "Is not object"),
    "instances not a list": (b'{"instances": "abc"}', 400, "Expecting 'instances' to be an list/array"),
    "string where float expected": (b'{"instances": ["abc"]}', 400, "is not of expected type: float"),
    "ragged instances": (b'{"instances": [[1.0], [1.0, 2.0]]}', 400, "Expecting shape"),
    "signature_name not a string": (b'{"signature_name": [], "instances": [1.0]}', 400, "must be a string value"),
    "unknown signature": (b'{"signature_name": "nope", "instances": [1.0]}', 400, "not found in signature def"),
}


@pytest.mark.parametrize("name", BAD_BODIES)
def test_malformed_body_gets_a_json_4xx(server, name):
    body, status, fragment = BAD_BODIES[name]
    response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/half:predict", data=body, timeout=30)
    assert_json_error(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content,
                      status, fragment)
    assert_still_serving(server)


@pytest.mark.parametrize("path,body,status,fragment", [
    ("/v1/models/half:classify", b'{"signature_name": "classify_x_to_y", "examples": [{"x": "\\ud800"}]}', 400,
     "surrogate"),
    ("/v1/models/half:classify", b'{"signature_name": "classify_x_to_y", "examples": [{"x": 18446744073709551615}]}',
     400, "uint64_t"),
    ("/v1/models/half:regress", b'{"signature_name": "regress_x_to_y", "examples": "x"}', 400,
     "Expecting 'examples' value to be an list/array"),
    ("/v1/models/half:classify", b'{"signature_name": "classify_x_to_y", "examples": [{"x": {"b64": "@@"}}]}', 400,
     "Unable to base64 decode"),
    ("/v1/models/half/versions/99999999999999999999:predict", VALID_BODY, 400, "Failed to convert version"),
    ("/v1/models/nope:predict", VALID_BODY, 404, "Servable not found"),
    ("/v1/models/half:explain", VALID_BODY, 400, "Malformed request"),
])
def test_malformed_api_calls_get_a_json_4xx(server, path, body, status, fragment):
    response = requests.post(f"http://127.0.0.1:{server.rest_port}{path}", data=body, timeout=30)
    assert_json_error(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content,
                      status, fragment)


def test_gzip_bodies(server):
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/half:predict"
    gzipped = {"Content-Encoding": "gzip"}
    response = requests.post(url, data=gzip.compress(VALID_BODY), headers=gzipped, timeout=30)
    assert (response.status_code, response.json()) == (200, {"predictions": [3.0]})
    response = requests.post(url, data=b"\x1f\x8b\x08" + b"x" * 20, headers=gzipped, timeout=30)
    assert_json_error(response.status_code, {"content-type": response.headers["Content-Type"]}, response.content, 400,
                      "Failed to decompress gzip request body")
    response = requests.post(url, data=_gzip_bomb(), headers=gzipped, timeout=30)  # 4 MiB inflated from ~4 KiB
    assert_json_error(response.status_code, {"content-type": response.headers["Content-Type"]}, response.content, 413,
                      "--rest_api_max_request_bytes")


def test_oversized_bodies_get_413_not_a_reset(server):
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/half:predict"
    response = requests.post(url, data=b" " * (2 * MAX_BODY), timeout=30)  # Content-Length over the limit
    assert_json_error(response.status_code, {"content-type": response.headers["Content-Type"]}, response.content, 413,
                      "exceeds the limit of 1048576 bytes")
    assert response.headers["Connection"] == "close"
    response = requests.post(url, data=iter([b" " * (1 << 16)] * 40), timeout=30)  # chunked, over the limit
    assert_json_error(response.status_code, {"content-type": response.headers["Content-Type"]}, response.content, 413,
                      "--rest_api_max_request_bytes")
    assert_still_serving(server)


# ------------------------------------------------------------------------------------ stalled clients, timeouts
def test_idle_and_half_sent_connections_are_closed(server):
    for data in (b"", PREDICT + b"Content-Le"):
        responses, closed, elapsed = exchange(server.rest_port, data, wait_s=IDLE_MS / 1000 + 5)
        assert closed and responses == [] and elapsed < IDLE_MS / 1000 + SLACK_S


def test_keep_alive_connection_is_closed_when_idle(server):
    responses, closed, elapsed = exchange(server.rest_port, _with_length(VALID_BODY), wait_s=IDLE_MS / 1000 + 5)
    assert [status for status, _, _ in responses] == [200] and closed
    assert elapsed < IDLE_MS / 1000 + SLACK_S


def test_a_stalled_body_gets_408_after_the_gap_timeout_and_is_closed(server):
    responses, closed, elapsed = exchange(server.rest_port, _request(b"Content-Length: 100\r\n", b'{"inst'),
                                          wait_s=TIMEOUT_MS / 1000 + 5)
    assert len(responses) == 1 and closed
    assert_json_error(*responses[0], 408, "--rest_api_body_timeout_in_ms")
    assert BODY_GAP_MS / 1000 - 0.2 < elapsed < BODY_GAP_MS / 1000 + SLACK_S


def test_a_trickling_body_gets_408_at_the_request_deadline(server):
    """A byte every half second never trips the gap timeout, but the whole body must arrive within the deadline."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.rest_port)) as connection:
        connection.sendall(_request(b"Content-Length: 100\r\n"))
        connection.settimeout(0.5)
        received = b""
        while time.monotonic() - started < TIMEOUT_MS / 1000 + 5 and not received.endswith(b"}"):
            try:
                connection.sendall(b" ")
                received += connection.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                break
    elapsed = time.monotonic() - started
    [(status, headers, body)] = parse_responses(received)
    assert_json_error(status, headers, body, 408, "--rest_api_timeout_in_ms")
    assert TIMEOUT_MS / 1000 - 0.2 < elapsed < TIMEOUT_MS / 1000 + SLACK_S


def test_stalled_uploads_hold_no_worker(server):
    """Six times as many stalled uploads as workers: bodies are read before a worker is taken, so a valid request is
    answered at once (before issue 25 it waited for the uploads to time out), and each upload gets its 408."""
    outcomes = []
    stalled = [threading.Thread(target=lambda: outcomes.append(exchange(
        server.rest_port, _request(b"Content-Length: 100\r\n", b"{"), TIMEOUT_MS / 1000 + 5)))
        for _ in range(6 * THREADS)]
    for thread in stalled:
        thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert_still_serving(server)
    waited = time.monotonic() - started
    for thread in stalled:
        thread.join()
    assert waited < SLACK_S
    assert [responses[0][0] for responses, _, _ in outcomes] == [408] * len(stalled)


# ----------------------------------------------------------------------------------------- bounded memory
def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_big_hostile_bodies_cost_bounded_memory(server):
    assert_still_serving(server)
    before = _peak_rss_kib(server.pid)
    endless = 32 << 20
    for data in (
            _request(b"Content-Length: %d\r\n" % (64 << 20), b" " * endless),  # body way over the limit
            _request(b"Transfer-Encoding: chunked\r\n", b"0" * endless),  # endless chunk-size line
            _request(b"Transfer-Encoding: chunked\r\n", b"5;" + b"e" * endless),  # endless chunk extension
            _request(b"X-Endless: " + b"h" * endless),  # endless header line
            _request(b"Transfer-Encoding: chunked\r\n", b"4000000\r\n" + b" " * endless)):  # chunked over the limit
        responses, closed, _ = exchange(server.rest_port, data, wait_s=TIMEOUT_MS / 1000 + 10, half_close=True)
        assert closed and len(responses) <= 1
        assert not responses or 400 <= responses[0][0] < 500
    growth_mib = (_peak_rss_kib(server.pid) - before) / 1024
    assert growth_mib < 16, f"peak RSS grew by {growth_mib:.0f} MiB for {endless >> 20} MiB hostile bodies"
    assert_still_serving(server)


# ------------------------------------------------------------------------------------------- REST deadline
def test_deadline_is_answered_on_time(models_dir, make_server, tmp_path):
    """A request stuck in a 10 s batch gets 504 after --rest_api_timeout_in_ms, the model run getting the same."""
    batching = write(tmp_path / "batching.config",
                     "max_batch_size { value: 1000 } batch_timeout_micros { value: 10000000 }")
    server = make_server(model_name="half", model_base_path=str(models_dir / "half"), enable_batching=True,
                         batching_parameters_file=batching, rest_api_timeout_in_ms=1000)
    started = time.monotonic()
    response = requests.post(f"http://127.0.0.1:{server.rest_port}/v1/models/half:predict", data=VALID_BODY,
                             timeout=30)
    elapsed = time.monotonic() - started
    assert response.status_code == 504 and response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] in ("Timed out waiting for notification",
                                        "Deadline exceeded while waiting for the batch")
    assert 0.9 < elapsed < 1 + SLACK_S


@pytest.mark.parametrize("options", [{"rest_api_num_threads": -1}, {"rest_api_idle_timeout_in_ms": 0}])
def test_bad_rest_flags_are_config_errors(models_dir, options):
    from serving.errors import ConfigError
    from serving.server import ModelServer, ServerOptions

    server = ModelServer(ServerOptions(port=free_port(), rest_api_port=free_port(), model_name="half",
                                       model_base_path=str(models_dir / "half"), **options))
    with pytest.raises(ConfigError, match="--rest_api_num_threads must be >= 0"):
        server.start()


# ------------------------------------------------------------------------------------------------ issue 25
def test_a_client_that_half_closes_after_its_request_gets_the_answer(server):
    """HTTP/1.1 lets a client shut down its sending side once its request is sent; before, it got no answer."""
    responses, closed, _ = exchange(server.rest_port, _with_length(VALID_BODY), half_close=True)
    assert [(status, json.loads(body)) for status, _, body in responses] == [(200, {"predictions": [3.0]})]
    assert closed


def test_connections_beyond_the_cap_get_503_and_are_closed(server):
    held = [socket.create_connection(("127.0.0.1", server.rest_port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        responses, closed, elapsed = exchange(server.rest_port, _with_length(VALID_BODY))
        assert closed and elapsed < SLACK_S
        [(status, headers, body)] = responses
        assert_json_error(status, headers, body, 503, f"at most {MAX_CONNECTIONS} at once (--rest_api_max_connections)")
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.5)
    assert_still_serving(server)


@pytest.mark.parametrize("host,status", [
    ("attacker.example", 403), ("attacker.example:8501", 403), ("localhost.attacker.example", 403),
    ("localhost", 200), ("localhost:8501", 200), ("LOCALHOST.", 200), ("app.localhost", 200), ("127.0.0.1:1", 200),
    ("[::1]:8501", 200), ("10.1.2.3", 200), (socket.gethostname(), 200)])
def test_the_host_header_must_name_this_server(server, host, status):
    """DNS rebinding: a page on attacker.example, re-resolved to 127.0.0.1, reaches the server with its own name."""
    for path in ("/v1/models/half", "/", "/metrics"):
        response = requests.get(f"http://127.0.0.1:{server.rest_port}{path}", headers={"Host": host}, timeout=30)
        assert response.status_code == status, (host, path)
        if status == 403:
            assert_json_error(403, {k.lower(): v for k, v in response.headers.items()}, response.content, 403,
                              "--rest_api_allowed_hosts")


def test_other_web_pages_cannot_post_to_the_api(server):
    """A cross-site form or fetch with a "simple" content type (text/plain) needs no CORS preflight; the browser sends
    its Origin, and without --rest_api_enable_cors_support only this server's own origin is answered."""
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/half:predict"
    for origin in ("http://attacker.example", "null", f"https://127.0.0.1:{server.rest_port}"):
        response = requests.post(url, data=VALID_BODY, headers={"Content-Type": "text/plain", "Origin": origin},
                                 timeout=30)
        assert_json_error(response.status_code, {k.lower(): v for k, v in response.headers.items()},
                          response.content, 403, "--rest_api_enable_cors_support is off")
    own = requests.post(url, data=VALID_BODY, headers={"Origin": f"http://127.0.0.1:{server.rest_port}"}, timeout=30)
    assert (own.status_code, own.json()) == (200, {"predictions": [3.0]})


def test_responses_carry_nosniff_no_framing_and_the_page_a_policy_for_its_own_script(server):
    import base64
    import hashlib
    import re

    api = requests.get(f"http://127.0.0.1:{server.rest_port}/v1/models/half", timeout=30)
    assert api.headers["X-Content-Type-Options"] == "nosniff" and api.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in api.headers["Content-Security-Policy"]
    page = requests.get(f"http://127.0.0.1:{server.rest_port}/", timeout=30)
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy
    # The hashes are those of the page as served (the model list filled in), so its script and style run.
    for kind in ("script", "style"):
        text = re.search(rf"<{kind}>(.*?)</{kind}>", page.text, re.S).group(1)
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}'" in policy
    assert " style=" not in page.text  # inline style attributes would need 'unsafe-inline'


def test_a_version_of_5000_digits_is_a_400(server):
    """Before, int() refused it with a ValueError: a 500 and a traceback in the log for every such request."""
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/half/versions"
    response = requests.post(f"{url}/{'9' * 5000}:predict", data=VALID_BODY, timeout=30)
    assert_json_error(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content,
                      400, "Failed to convert version: 99999")
    response = requests.post(f"{url}/٣:predict", data=VALID_BODY, timeout=30)  # a digit, not an ASCII one
    assert_json_error(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content,
                      400, "Malformed request")
    response = requests.post(f"{url}/{'0' * 30}123:predict", data=VALID_BODY, timeout=30)  # SimpleAtoi's reading
    assert (response.status_code, response.json()) == (200, {"predictions": [3.0]})


def test_model_names_cannot_inject_metric_lines_nor_grow_the_series(server):
    import random
    import re
    import string

    url = f"http://127.0.0.1:{server.rest_port}"

    def unknown_count() -> int:
        text = requests.get(f"{url}/metrics", timeout=30).text
        return int(next((line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(
            ':tensorflow:serving:request_count{model_name="_unknown_",status="NOT_FOUND"')), 0))

    before = unknown_count()
    requests.post(f"{url}/v1/models/x%22%7D%201e9%0Afake_metric%7Ba%3D%22:predict", data=VALID_BODY, timeout=30)
    for _ in range(300):
        name = "".join(random.choices(string.ascii_lowercase, k=12))
        requests.post(f"{url}/v1/models/{name}:predict", data=VALID_BODY, timeout=30)
    assert_still_serving(server)
    text = requests.get(f"{url}/metrics", timeout=30).text
    assert not [line for line in text.splitlines() if line.startswith("fake_metric")]
    names = {re.search(r'model_name="([^"]*)"', line).group(1) for line in text.splitlines()
             if line.startswith(":tensorflow:serving:request_")}
    assert names == {"_unknown_", "half"}  # one series for every name the server does not serve
    assert unknown_count() == before + 301
