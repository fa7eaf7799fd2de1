"""Shared fixtures: real SavedModels written once per session, and in-process servers on free ports."""
from __future__ import annotations

import os
import re
import shutil
import sys
import time
import urllib.request

import portpicker
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import model_fixtures  # noqa: E402


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """half (v123), half_two_versions (123, 124), half_plus_three (v1), classifier (v1), classifier_v2 (for pushes)."""
    root = tmp_path_factory.mktemp("models")
    model_fixtures.write_half_plus_two(str(root / "half" / "123"))
    shutil.copytree(root / "half" / "123", root / "half_two_versions" / "123")
    shutil.copytree(root / "half" / "123", root / "half_two_versions" / "124")
    model_fixtures.write_half_plus_two(str(root / "half_plus_three" / "1"), offset=3.0)
    model_fixtures.write_image_classifier(str(root / "classifier" / "1"))
    return root


def free_port() -> int:
    return portpicker.pick_unused_port()


def wait_for(predicate, timeout_s: float = 60.0, interval_s: float = 0.05) -> bool:
    """Polls `predicate` until it is true (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


def prometheus_samples(rest_port: int, path: str = "/monitoring/prometheus/metrics") -> dict[tuple, float]:
    """A server's Prometheus page as {(metric name, frozenset of its (label, value) pairs): value}."""
    with urllib.request.urlopen(f"http://localhost:{rest_port}{path}", timeout=30) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name, _, labels = series.partition("{")
            samples[(name, frozenset(re.findall(r'(\w+)="([^"]*)"', labels)))] = float(value)
    return samples


def status_kb(pid: int, field: str) -> int:
    """A field of /proc/<pid>/status in kB (VmRSS, VmHWM, ...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_rise_bytes(pid: int, request) -> tuple[int, object]:
    """Runs `request()`; returns (peak RSS of process `pid` during it minus its RSS before, the result or exception).
    """
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = status_kb(pid, "VmRSS")
    try:
        outcome = request()
    except Exception as error:  # the status is checked by the caller
        outcome = error
    return (status_kb(pid, "VmHWM") - before) * 1024, outcome


def write(path, text: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


@pytest.fixture
def make_server():
    """make_server(**ServerOptions fields) -> a started ModelServer on free ports; stopped after the test."""
    from serving.server import ModelServer, ServerOptions

    servers = []

    def factory(**options):
        options.setdefault("port", free_port())
        options.setdefault("rest_api_port", free_port())
        server = ModelServer(ServerOptions(**options))
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop(grace_seconds=2)
