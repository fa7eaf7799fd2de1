"""gcp-storage-emulator on 127.0.0.1:PORT with bucket BUCKET, in memory, until killed.

One fix on top of the emulator as published: a media upload with an empty body (how TensorFlow's GCS client creates a
directory marker) crashes its handler (`len(None)`); an empty object is what GCS stores for it.
"""
import sys
import threading

from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.server import create_server

_media_upload = objects._media_upload


def _media_upload_allowing_empty(request, response, storage):
    if request.data is None:
        request._data = b""
    return _media_upload(request, response, storage)


objects._media_upload = _media_upload_allowing_empty

if __name__ == "__main__":
    port, bucket = int(sys.argv[1]), sys.argv[2]
    create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).start()
    threading.Event().wait()
