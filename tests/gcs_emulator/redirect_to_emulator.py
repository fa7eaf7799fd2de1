"""mitmproxy addon: Google Cloud Storage's hosts, as TensorFlow's GCS client calls them, answered by the emulator at
127.0.0.1:$GCS_EMULATOR_PORT; resumable-upload session URLs the emulator hands out point back through the proxy."""
import os

from mitmproxy import http

GCS_HOSTS = ("www.googleapis.com", "storage.googleapis.com")
EMULATOR = f"http://127.0.0.1:{os.environ['GCS_EMULATOR_PORT']}"


def request(flow: http.HTTPFlow) -> None:
    if flow.request.pretty_host in GCS_HOSTS:
        flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", int(EMULATOR.rsplit(":", 1)[1])
        # curl sends uploads chunked *and* with a Content-Length; the emulator reads only the latter, so send the
        # body mitmproxy has already de-chunked with its true length.
        flow.request.headers.pop("transfer-encoding", None)
        flow.request.headers["content-length"] = str(len(flow.request.raw_content or b""))


def response(flow: http.HTTPFlow) -> None:
    location = flow.response.headers.get("location", "")
    if location.startswith(EMULATOR):
        flow.response.headers["location"] = f"https://{GCS_HOSTS[0]}{location[len(EMULATOR):]}"
