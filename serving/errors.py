"""The one error type serving.inference raises: a gRPC status code plus TF Serving's message text."""
from __future__ import annotations

import grpc

# TF Serving's http_server.cc ToHTTPStatusCode.
HTTP_STATUS_BY_CODE = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A failed request: `code` is a grpc.StatusCode, `message` the bare text clients see."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status  # only where HTTP has a better answer than the mapping (413)

    @property
    def http_status(self) -> int:
        return self._http_status or HTTP_STATUS_BY_CODE.get(self.code, 500)

    @classmethod
    def from_tf(cls, error: Exception) -> "ServingError":
        """A tf.errors.OpError -> the same code (TF and gRPC share the numbering) and message; any other exception
        -> UNKNOWN with its text."""
        code = CODE_BY_NUMBER.get(getattr(error, "error_code", None), grpc.StatusCode.UNKNOWN)
        return cls(code, getattr(error, "message", None) or str(error) or type(error).__name__)


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


class ConfigError(Exception):
    """A bad flag or config file: reported on stderr, the server exits non-zero."""
