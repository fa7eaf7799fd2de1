"""Request logging from a model config's `logging_config`, which open-source TF Serving refuses ("No
request-logger-creator provided."): a sampled share of each model's successful requests is written as
tensorflow.serving.PredictionLog records (request, response, log_metadata) to TFRecord files
(serving/request_log_files.py).

    logging_config {
      log_collector_config { type: "tfrecord" filename_prefix: "/logs/requests" }
      sampling_config { sampling_rate: 0.1 }
    }

Sampling is decided first, as TF Serving's RequestLogger::Log does, so the protos of an unsampled request are never
built. log_metadata carries the model spec that answered (name, version, signature), the sampling config, the
--saved_model_tags and the time. Each record offered is counted in /tensorflow/serving/request_log_count
{model_name, status_code}; those dropped for a full queue also in request_log_dropped_count. The config is validated
with the rest of the model config (serving/config.py) and can change on every reload.
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from tensorflow_serving.apis import prediction_log_pb2

from serving.request_log_files import RequestLogFiles

CLOSE_TIMEOUT_S = 5.0  # at shutdown or when a prefix goes out of the config: time to write what is queued


class _ModelLogging:
    __slots__ = ("sampling_config", "files")

    def __init__(self, sampling_config, files: RequestLogFiles):
        self.sampling_config = sampling_config
        self.files = files


class RequestLogger:
    """The server's request logger: `update(config)` on each applied ModelServerConfig, `log(...)` per request."""

    def __init__(self, *, saved_model_tags, metrics, max_file_bytes: int, max_files: int, max_queue_bytes: int):
        self.saved_model_tags = list(saved_model_tags)
        self.metrics = metrics
        self._file_options = {"max_file_bytes": max_file_bytes, "max_files": max_files,
                              "max_queue_bytes": max_queue_bytes}
        self._by_model: dict[str, _ModelLogging] = {}
        self._files: dict[str, RequestLogFiles] = {}  # by filename_prefix: models sharing one share its files
        self._update_lock = threading.Lock()

    def update(self, config) -> None:
        """Logs the models of `config` (a validated ModelServerConfig) that have a logging_config, and no others.
        A prefix still in use keeps its files and queue; one no longer used is closed. Raises ServingError when a
        new prefix's directory cannot be made, and then changes nothing."""
        wanted = {model.name: model.logging_config for model in config.model_config_list.config
                  if model.HasField("logging_config")}
        with self._update_lock:
            files, opened = {}, []
            try:
                for logging_config in wanted.values():
                    prefix = logging_config.log_collector_config.filename_prefix
                    if prefix not in files:
                        files[prefix] = self._files.get(prefix)
                        if files[prefix] is None:
                            files[prefix] = RequestLogFiles(prefix, on_result=self._count, **self._file_options)
                            opened.append(files[prefix])
            except Exception:
                for new in opened:
                    new.close(CLOSE_TIMEOUT_S)
                raise
            stale = [old for prefix, old in self._files.items() if prefix not in files]
            self._files = files
            self._by_model = {name: _ModelLogging(logging_config.sampling_config,
                                                  files[logging_config.log_collector_config.filename_prefix])
                              for name, logging_config in wanted.items()}
        for old in stale:
            old.close(CLOSE_TIMEOUT_S)

    def log(self, kind: str, served_spec, request_of: Callable, response_of: Callable) -> None:
        """A successful request of `served_spec`'s model (ModelSpec: name, version that answered, signature), as the
        PredictionLog field `kind` ("predict_log", ...); `request_of()` and `response_of()` give its protos and are
        called only when the request is sampled."""
        model_logging = self._by_model.get(served_spec.name)
        if model_logging is None or random.random() >= model_logging.sampling_config.sampling_rate:
            return
        entry = prediction_log_pb2.PredictionLog()
        record = getattr(entry, kind)
        record.request.CopyFrom(request_of())
        record.response.CopyFrom(response_of())
        metadata = entry.log_metadata
        metadata.model_spec.CopyFrom(served_spec)
        metadata.sampling_config.CopyFrom(model_logging.sampling_config)
        metadata.saved_model_tags.extend(self.saved_model_tags)
        metadata.timestamp_secs = int(time.time())
        model_logging.files.offer(served_spec.name, entry)

    def close(self) -> None:
        with self._update_lock:
            files, self._files, self._by_model = self._files, {}, {}
        for old in files.values():
            old.close(CLOSE_TIMEOUT_S)

    def _count(self, model_name: str, status_code: str) -> None:
        if self.metrics is not None:
            self.metrics.record_request_log(model_name, status_code)
