"""The model server as a child process on free loopback ports: started, waited for, stopped (and the same waiting and
stopping for any helper process).

For whoever needs a real server beside them: `make run`, the pipeline's load-and-query check before a push, the
benchmarks and the tests. Waiting for the ports is waiting for the models: like tensorflow_model_server, the server
opens its ports only once every configured model has loaded its first versions (serving/server.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import portpicker

LOOPBACK = "127.0.0.1"


@dataclasses.dataclass
class ServerProcess:
    process: subprocess.Popen
    grpc_port: int
    rest_port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def grpc_address(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{LOOPBACK}:{self.rest_port}"


def free_port() -> int:
    return portpicker.pick_unused_port()


@contextlib.contextmanager
def model_server(*flags: str, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env: dict | None = None,
                 cwd: str | None = None, timeout_s: float = 180.0, echo: bool = False) -> Iterator[ServerProcess]:
    """`python -m serving --port=P --rest_api_port=R --bind_address=127.0.0.1 FLAGS...` for the block, yielded once
    it listens; stopped (SIGTERM, then SIGKILL after 60 s) when the block ends. `stdout`/`stderr` are Popen's;
    `echo` prints the command line first."""
    grpc_port, rest_port = free_port(), free_port()
    command = [sys.executable, "-m", "serving", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
               f"--bind_address={LOOPBACK}", *flags]
    if echo:
        print("\n$ " + " ".join(command[1:]), flush=True)
    process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=cwd)
    try:
        wait_until_listening(process, rest_port, timeout_s)
        yield ServerProcess(process, grpc_port, rest_port)
    finally:
        stop([process])


def wait_until_listening(process: subprocess.Popen, port: int, timeout_s: float = 120.0) -> None:
    """Returns once something listens on the loopback `port`; raises if `process` exits or `timeout_s` passes
    first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, process.args))} exited with code {process.returncode} before "
                               f"listening on port {port}")
        with socket.socket() as probe:
            if probe.connect_ex((LOOPBACK, port)) == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on port {port} after {timeout_s:.0f} s")
        time.sleep(0.1)


def stop(processes: list[subprocess.Popen], timeout_s: float = 60.0) -> None:
    """SIGTERM to each running process (the model server drains in-flight requests), SIGKILL after `timeout_s`."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
