"""Helper processes a test starts on loopback (Beam services, the GCS emulator): wait until they listen, stop them."""
from __future__ import annotations

import socket
import subprocess
import time


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Returns once something listens on 127.0.0.1:`port`; raises if `process` exits or `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s} s")


def stop(processes: list[subprocess.Popen], timeout_s: float = 30.0) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
