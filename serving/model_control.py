"""Who may change the served models through ModelService/HandleReloadConfigRequest, and to what.

TF Serving answers that RPC for anyone who reaches its gRPC port (tensorflow/serving#1447, #1565): a client can
unload every model or load a SavedModel from any path, and a SavedModel is code (TensorFlow's SECURITY.md). Here the
RPC is off unless --enable_reload_config_rpc; then every model base path and request-log filename_prefix of the new
config must lie under one of --reload_config_allowed_paths (serving/path_confinement.py), a config must name at
least one model, and with --ssl_config_file only a client that presented a certificate may call it.
"""
from __future__ import annotations

import grpc

from serving.errors import ServingError, invalid
from serving.path_confinement import folder_holding

# A reload without a client deadline waits at most this long for its new models (a missing base path would hold
# the config lock for good); the config stays applied and its models keep loading after it.
RELOAD_DEFAULT_TIMEOUT_S = 300.0


class ModelControl:
    def __init__(self, *, enabled: bool, allowed_paths: list[str], tls: bool):
        self.enabled = enabled
        self.allowed_paths = list(allowed_paths)
        self.tls = tls

    def check_caller(self, client_has_certificate: bool) -> None:
        """Raises ServingError unless this client may call the RPC at all."""
        if not self.enabled:
            raise ServingError(grpc.StatusCode.PERMISSION_DENIED,
                               "HandleReloadConfigRequest is disabled on this server; start it with "
                               "--enable_reload_config_rpc and --reload_config_allowed_paths to allow it")
        if self.tls and not client_has_certificate:
            raise ServingError(grpc.StatusCode.UNAUTHENTICATED,
                               "HandleReloadConfigRequest needs a client certificate (mutual TLS: client_verify in "
                               "--ssl_config_file)")

    def check_paths(self, config) -> None:
        """Raises ServingError unless every path of `config` (a validated ModelServerConfig) lies where it may."""
        models = config.model_config_list.config
        if not models:
            raise invalid("ReloadConfigRequest names no models: it would unload every model")
        for model in models:
            paths = [("base_path", model.base_path)]
            if model.HasField("logging_config"):
                paths.append(("logging_config filename_prefix",
                              model.logging_config.log_collector_config.filename_prefix))
            for what, path in paths:
                if folder_holding(path, self.allowed_paths) is None:
                    raise ServingError(grpc.StatusCode.PERMISSION_DENIED,
                                       f"Model {model.name}: {what} {path} is outside the paths this server may load "
                                       f"from or write to (--reload_config_allowed_paths="
                                       f"{','.join(self.allowed_paths)})")
