"""A local Google Cloud Storage for tests: gcp-storage-emulator behind mitmproxy (tests/gcs_emulator), installed by
`make test-deps`. `local_gcs()` yields the environment a process needs to use it for every `gs://` path:

  - TensorFlow's GCS client has no endpoint setting (its endpoints are compiled in), but its libcurl honours
    HTTPS_PROXY and CURL_CA_BUNDLE: mitmproxy answers as www.googleapis.com / storage.googleapis.com with its own
    CA and forwards to the emulator; GOOGLE_AUTH_TOKEN_FOR_TESTING skips the metadata-server login;
  - Beam's and google-cloud-storage's GCS clients take STORAGE_EMULATOR_HOST;
  - NO_PROXY keeps loopback traffic (gRPC, REST, Beam services) off the proxy.
"""
from __future__ import annotations

import contextlib
import os
import subprocess

import portpicker
import pytest

from serving.process import stop, wait_until_listening

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENV = os.path.join(REPO, ".venv", "tools", "gcs-emulator")
EMULATOR_DIR = os.path.join(HERE, "gcs_emulator")


@contextlib.contextmanager
def local_gcs(work_dir: str, bucket: str):
    if not os.path.exists(os.path.join(VENV, "bin", "mitmdump")):
        pytest.skip(f"no GCS emulator at {VENV}: run `make test-deps`")
    emulator_port, proxy_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    confdir = os.path.join(work_dir, "mitmproxy")
    logs = [open(os.path.join(work_dir, name), "w") for name in ("gcs_emulator.log", "mitmproxy.log")]
    processes = [
        subprocess.Popen([os.path.join(VENV, "bin", "python"), os.path.join(EMULATOR_DIR, "serve_emulator.py"),
                          str(emulator_port), bucket], stdout=logs[0], stderr=subprocess.STDOUT),
        subprocess.Popen([os.path.join(VENV, "bin", "mitmdump"), "--listen-host", "127.0.0.1", "-p", str(proxy_port),
                          "-s", os.path.join(EMULATOR_DIR, "redirect_to_emulator.py"), "--set", f"confdir={confdir}",
                          # connect upstream only once the addon has pointed the request at the emulator
                          "--set", "connection_strategy=lazy",
                          # curl's uploads carry both Transfer-Encoding and Content-Length (the addon fixes them)
                          "--set", "validate_inbound_headers=false"],
                         env={**os.environ, "GCS_EMULATOR_PORT": str(emulator_port)},
                         stdout=logs[1], stderr=subprocess.STDOUT),
    ]
    try:
        wait_until_listening(processes[0], emulator_port)
        wait_until_listening(processes[1], proxy_port)
        proxy = f"http://127.0.0.1:{proxy_port}"
        yield {"HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "127.0.0.1,localhost",
               "no_proxy": "127.0.0.1,localhost", "CURL_CA_BUNDLE": os.path.join(confdir, "mitmproxy-ca-cert.pem"),
               "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{emulator_port}",
               "GOOGLE_CLOUD_PROJECT": "image-retrain-test"}
    finally:
        stop(processes)
        for log in logs:
            log.close()
