"""ModelServer: loads the configured models, then opens gRPC and REST (ports open only after the initial load).

    server = ModelServer(ServerOptions(port=8500, rest_api_port=8501, model_name="m", model_base_path="/models/m"))
    server.start()          # blocks until models are AVAILABLE and ports are bound
    ...
    server.stop()           # stops accepting, drains in-flight requests, unloads
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading

from serving import config as config_files
from serving import memory_budget, tls
from serving.batching import BatchingOptions, BatchScheduler
from serving.errors import ConfigError, ServingError
from serving.metrics import Metrics
from serving.model_control import ModelControl

log = logging.getLogger(__name__)
MAX_DEFAULT_BATCHING_GRPC_THREADS = 256


@dataclasses.dataclass
class ServerOptions:
    """tensorflow_model_server's flags (same names and defaults), plus the safety knobs this server adds."""
    port: int = 8500
    grpc_socket_path: str = ""
    rest_api_port: int = 0
    rest_api_num_threads: int = 0  # REST worker threads; 0 = as many as gRPC's default pool
    rest_api_timeout_in_ms: int = 30000
    rest_api_idle_timeout_in_ms: int = 30000  # for a complete request head, after connecting or the last response
    rest_api_body_timeout_in_ms: int = 10000  # the longest gap between a request body's bytes (client_body_timeout)
    rest_api_max_connections: int = 1000
    rest_api_allowed_hosts: str = ""  # Host names besides IP addresses, localhost and the machine's; "*" = any
    rest_api_enable_cors_support: bool = False
    rest_api_max_request_bytes: int = 64 * 1024 * 1024
    bind_address: str = "0.0.0.0"
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = 0
    enable_grpc_healthcheck_service: bool = False
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    saved_model_tags: str = "serve"
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1  # each warmup record runs this many times; < 1 counts as 1
    allow_version_labels_for_unavailable_models: bool = False
    enable_signature_method_name_check: bool = False
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    prefer_tflite_model: bool = False
    num_tflite_interpreters_per_pool: int = 1
    ssl_config_file: str = ""
    # Our additions (tensorflow_model_server has no such flags).
    shutdown_grace_seconds: float = 30.0
    # Memory per request and in total (serving/memory_budget.py); 0 = derived from the machine's memory (a quarter in
    # total, half of that per request). A request may use min(max_request_memory_bytes, 64 MiB + factor x its bytes).
    max_total_request_memory_bytes: int = 0
    max_request_memory_bytes: int = 0
    request_memory_factor: int = 128
    grpc_max_request_bytes: int = 64 * 1024 * 1024  # as REST's; grpc.max_receive_message_length overrides it
    grpc_max_concurrent_rpcs: int = 0  # 0 = 4 x the gRPC threads; beyond, RESOURCE_EXHAUSTED
    # HandleReloadConfigRequest (serving/model_control.py): off unless enabled, and then confined to these prefixes.
    enable_reload_config_rpc: bool = False
    reload_config_allowed_paths: str = ""
    # Bounds on one request's cost, refused with INVALID_ARGUMENT before anything is allocated. Items per request in
    # string inputs (dim 0: encoded images, serialized tf.Examples; the examples of Classify/Regress), whose cost is
    # not bounded by their bytes (1000 small images made the served classifier allocate 6 GB); numeric inputs cost in
    # proportion to the bytes sent and are not counted. 0 = unlimited.
    max_request_batch_size: int = 64
    # Elements a TensorProto may declare beyond the values it carries (TF fills them in): a [12000, 12000] shape with
    # one value would otherwise cost 549 MB.
    max_implied_tensor_elements: int = 1 << 20
    # Request logging (a model config's logging_config, serving/request_logger.py): per filename_prefix, files rotate
    # at this size and the newest N are kept; records wait for the writer in a queue of at most this many bytes.
    request_log_max_file_bytes: int = 64 << 20
    request_log_max_files: int = 10
    request_log_max_queue_bytes: int = 64 << 20


class ModelServer:
    def __init__(self, options: ServerOptions):
        self.options = options
        self.grpc_port: int | None = None
        self.rest_port: int | None = None
        self.manager = self.inference = self.metrics = self.batcher = self.request_logger = None
        self._grpc_server = self._rest_server = None
        self._config_thread = None
        self._stopped = threading.Event()  # stop requested: no new work
        self._finished = threading.Event()  # drained and unloaded
        self._model_config = None
        self._config_text = None
        self._ssl_config = None
        self.budget: memory_budget.MemoryBudget | None = None

    # ------------------------------------------------------------------------------------------ configuration
    def _read_configs(self):
        """Parses every flag-referenced file before anything loads; raises ConfigError with a clear message."""
        o = self.options
        if o.port == 0 and not o.grpc_socket_path and o.rest_api_port == 0:
            raise ConfigError("Nothing to serve on: --port=0, no --grpc_socket_path and --rest_api_port=0")
        if o.rest_api_port and o.rest_api_port == o.port:
            raise ConfigError(f"--rest_api_port ({o.rest_api_port}) must differ from --port ({o.port})")
        if o.rest_api_num_threads < 0 or o.rest_api_idle_timeout_in_ms <= 0:
            raise ConfigError("--rest_api_num_threads must be >= 0 and --rest_api_idle_timeout_in_ms > 0")
        if o.batching_parameters_file and not o.enable_batching:
            raise ConfigError("--batching_parameters_file is set but --enable_batching is not")
        if o.model_config_file:
            self._model_config = config_files.read_model_server_config(o.model_config_file)
            with open(o.model_config_file, encoding="utf-8") as f:
                self._config_text = f.read()
        else:
            if o.model_base_path and not os.path.isabs(o.model_base_path) and "://" not in o.model_base_path:
                log.warning("--model_base_path %s is relative; using %s", o.model_base_path,
                            os.path.abspath(o.model_base_path))
            config_files.validate_model_name(o.model_name)
            self._model_config = config_files.single_model_config(o.model_name, o.model_base_path)
        batching = None
        if o.enable_batching:
            params = (config_files.read_batching_parameters(o.batching_parameters_file)
                      if o.batching_parameters_file else config_files.BatchingParameters())
            try:
                batching = BatchingOptions.from_proto(params)
            except ValueError as error:
                raise ConfigError(f"Invalid batching parameters: {error}") from None
        if o.ssl_config_file:
            self._ssl_config = config_files.read_ssl_config(o.ssl_config_file)
            tls.check_ssl_config(self._ssl_config, o.ssl_config_file)
        if o.max_request_batch_size < 0 or o.max_implied_tensor_elements < 0:
            raise ConfigError("--max_request_batch_size and --max_implied_tensor_elements must be >= 0")
        if min(o.max_total_request_memory_bytes, o.max_request_memory_bytes, o.request_memory_factor,
               o.grpc_max_concurrent_rpcs) < 0 or min(o.grpc_max_request_bytes, o.rest_api_body_timeout_in_ms,
                                                      o.rest_api_max_connections) < 1:
            raise ConfigError("--max_total_request_memory_bytes, --max_request_memory_bytes, --request_memory_factor "
                              "and --grpc_max_concurrent_rpcs must be >= 0; --grpc_max_request_bytes, "
                              "--rest_api_body_timeout_in_ms and --rest_api_max_connections >= 1")
        if o.enable_reload_config_rpc and not self._allowed_reload_paths():
            raise ConfigError("--enable_reload_config_rpc needs --reload_config_allowed_paths: the folders (or bucket "
                              "prefixes) a reloaded config may load models from and write request logs to")
        if min(o.request_log_max_file_bytes, o.request_log_max_files, o.request_log_max_queue_bytes) < 1:
            raise ConfigError("--request_log_max_file_bytes, --request_log_max_files and --request_log_max_queue_bytes "
                              "must be >= 1")
        prometheus_path = None
        if o.monitoring_config_file:
            monitoring = config_files.read_monitoring_config(o.monitoring_config_file)
            if monitoring.prometheus_config.enable:
                prometheus_path = monitoring.prometheus_config.path or config_files.DEFAULT_PROMETHEUS_PATH
        return batching, prometheus_path

    def _allowed_reload_paths(self) -> list[str]:
        return [path.strip() for path in self.options.reload_config_allowed_paths.split(",") if path.strip()]

    def _memory_budget(self) -> memory_budget.MemoryBudget:
        o = self.options
        total = o.max_total_request_memory_bytes or memory_budget.default_total_bytes()
        return memory_budget.MemoryBudget(
            total_bytes=total, request_cap_bytes=o.max_request_memory_bytes or memory_budget.default_request_cap_bytes(
                total), factor=o.request_memory_factor)

    # --------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> ModelServer:
        # Imported here, not at the top: they import TensorFlow, which serving.main imports (without Keras) only after
        # the flags are checked; ServerOptions is imported before that.
        from serving.inference import InferenceService  # noqa: PLC0415 - see above
        from serving.manager import ModelManager  # noqa: PLC0415 - see above
        from serving.request_logger import RequestLogger  # noqa: PLC0415 - see above
        from serving.version_loader import load_version  # noqa: PLC0415 - see above

        o = self.options
        batching, prometheus_path = self._read_configs()
        self.budget = self._memory_budget()
        log.info("Request memory budget: %d bytes in total, at most %d per request (%d MiB + %d x its bytes)",
                 self.budget.total_bytes, self.budget.request_cap_bytes,
                 memory_budget.REQUEST_MEMORY_FLOOR_BYTES >> 20, self.budget.factor)
        self.metrics = Metrics()
        if batching is not None:
            self.batcher = BatchScheduler(batching, self.metrics)
        tags = tuple(t.strip() for t in o.saved_model_tags.split(",") if t.strip())
        self.manager = ModelManager(
            poll_seconds=o.file_system_poll_wait_seconds, load_retries=max(0, o.max_num_load_retries),
            load_retry_interval_s=o.load_retry_interval_micros / 1e6, tags=tags,
            allow_labels_for_unavailable=o.allow_version_labels_for_unavailable_models,
            session_config=self._session_config(),
            version_loader=functools.partial(load_version, prefer_tflite_model=o.prefer_tflite_model,
                                             tflite_interpreters=o.num_tflite_interpreters_per_pool))
        self.request_logger = RequestLogger(saved_model_tags=tags, metrics=self.metrics,
                                            max_file_bytes=o.request_log_max_file_bytes,
                                            max_files=o.request_log_max_files,
                                            max_queue_bytes=o.request_log_max_queue_bytes)
        self.inference = InferenceService(self.manager, max_request_batch_size=o.max_request_batch_size,
                                max_implied_tensor_elements=o.max_implied_tensor_elements, batcher=self.batcher,
                                metrics=self.metrics, request_logger=self.request_logger,
                                enable_method_name_check=o.enable_signature_method_name_check)
        if o.enable_model_warmup:
            self.manager.warmup = self._warmup
        try:
            self.inference.apply_config(self._model_config, startup=True)
        except Exception:
            self._shutdown_internals()
            raise
        self.manager.start_polling()
        self._start_grpc()
        if o.rest_api_port:
            self._start_rest(prometheus_path)
        if o.model_config_file and o.model_config_file_poll_wait_seconds > 0:
            self._config_thread = threading.Thread(target=self._poll_config_file, name="model_config_poll",
                                                   daemon=True)
            self._config_thread.start()
        return self

    def _session_config(self):
        o = self.options
        if not (o.tensorflow_intra_op_parallelism or o.tensorflow_inter_op_parallelism):
            return None
        from tensorflow.core.protobuf import config_pb2  # noqa: PLC0415 - imports TensorFlow: see start()
        return config_pb2.ConfigProto(intra_op_parallelism_threads=o.tensorflow_intra_op_parallelism,
                                      inter_op_parallelism_threads=o.tensorflow_inter_op_parallelism)

    def _warmup(self, loaded):
        loaded.warmup(self.inference.warmup_request, self.options.num_request_iterations_for_warmup)

    def _start_grpc(self):
        from serving.grpc_service import Services, build_server  # noqa: PLC0415 - imports TensorFlow: see start()
        o = self.options
        addresses = []
        if o.port:
            addresses.append(f"{_grpc_host(o.bind_address)}:{o.port}")
        if o.grpc_socket_path:
            addresses.append(f"unix:{o.grpc_socket_path}")
        if not addresses:
            return
        threads = o.grpc_max_threads or self._default_grpc_threads()
        model_control = ModelControl(enabled=o.enable_reload_config_rpc, allowed_paths=self._allowed_reload_paths(),
                                     tls=self._ssl_config is not None)
        try:
            self._grpc_server, ports = build_server(
                Services(self.inference, self.budget, model_control), addresses=addresses, max_threads=threads,
                max_request_bytes=o.grpc_max_request_bytes,
                max_concurrent_rpcs=o.grpc_max_concurrent_rpcs or 4 * threads,
                channel_arguments=o.grpc_channel_arguments, enable_health=o.enable_grpc_healthcheck_service,
                ssl_config=self._ssl_config)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self._grpc_server.start()
        if o.port:
            self.grpc_port = ports[0]
            print(f"Running gRPC ModelServer at {o.bind_address}:{self.grpc_port}{self._tls_note()} ...", flush=True)
        if o.grpc_socket_path:
            print(f"Running gRPC ModelServer at UNIX socket {o.grpc_socket_path} ...", flush=True)

    def _default_grpc_threads(self) -> int:
        """tensorflow_model_server's 4 x CPUs; with batching, enough handler threads to fill every batch thread's batch.

        A handler thread blocks while its request waits in a batch, so the pool caps how many requests can be batched
        at once: with 8 threads and 16 clients only 8 requests reach the batcher. The executor starts threads only
        when needed, so a larger cap costs nothing while idle.
        """
        threads = 4 * (os.cpu_count() or 1)
        if self.batcher is not None:
            wanted = self.batcher.options.max_batch_size * self.batcher.options.num_batch_threads + threads
            threads = max(threads, min(wanted, MAX_DEFAULT_BATCHING_GRPC_THREADS))
        return threads

    def _start_rest(self, prometheus_path):
        from serving.rest import RestServer  # noqa: PLC0415 - imports TensorFlow: see start()
        o = self.options
        self._rest_server = RestServer(
            o.bind_address, o.rest_api_port, self.inference, budget=self.budget,
            # REST workers block in batches like gRPC handler threads do, so the default pool is sized alike.
            num_threads=o.rest_api_num_threads or self._default_grpc_threads(), timeout_ms=o.rest_api_timeout_in_ms,
            body_timeout_ms=o.rest_api_body_timeout_in_ms, idle_timeout_ms=o.rest_api_idle_timeout_in_ms,
            max_body_bytes=o.rest_api_max_request_bytes, max_connections=o.rest_api_max_connections,
            enable_cors=o.rest_api_enable_cors_support, allowed_hosts=o.rest_api_allowed_hosts.split(","),
            prometheus_path=prometheus_path, metrics=self.metrics,
            model_names=lambda: [m.name for m in self.manager.models.values() if m.configured],
            ssl_context=tls.rest_ssl_context(self._ssl_config) if self._ssl_config is not None else None)
        self._rest_server.start()
        self.rest_port = self._rest_server.port
        host = "localhost" if o.bind_address in ("0.0.0.0", "::") else o.bind_address
        print(f"Exporting HTTP/REST API at:{host}:{self.rest_port}{self._tls_note()} ...", flush=True)

    def _tls_note(self) -> str:
        if self._ssl_config is None:
            return ""
        return " (TLS, client certificates required)" if self._ssl_config.client_verify else " (TLS)"

    def _poll_config_file(self):
        """Re-reads --model_config_file every --model_config_file_poll_wait_seconds; a changed one is applied, with
        TF Serving's log lines when it cannot be (server.cc PollFilesystemAndReloadConfig): the running config stays,
        and the file is tried again on each poll until it changes or applies."""
        path, period = self.options.model_config_file, self.options.model_config_file_poll_wait_seconds
        while not self._stopped.wait(period):
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                if text == self._config_text:
                    continue
                config = config_files.parse_model_server_config(text, path)
            except (OSError, ConfigError) as error:
                log.error("Failed to read ModelServerConfig file: %s", error)
                continue
            try:
                self.inference.apply_config(config)
            except ServingError as error:
                log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", error.message)
                continue
            except Exception:  # a bug: logged, and the poll goes on
                log.exception("PollFilesystemAndReloadConfig failed to ReloadConfig")
                continue
            self._config_text = text
            log.info("Reloaded model config from %s", path)

    def stop(self, grace_seconds: float | None = None) -> None:
        """Stops accepting requests, lets in-flight ones finish (up to the grace period), unloads models."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.options.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        events = []
        if self._grpc_server is not None:
            events.append(self._grpc_server.stop(grace))
        if self._rest_server is not None:
            self._rest_server.drain(grace)
        for event in events:
            event.wait(grace + 1)
        self._shutdown_internals()
        self._finished.set()

    def _shutdown_internals(self):
        if self.batcher is not None:
            self.batcher.stop()
        if self.request_logger is not None:
            self.request_logger.close()
        if self.manager is not None:
            self.manager.stop()

    def wait(self) -> None:
        """Blocks until stop() (from a signal handler or another thread) has drained and unloaded everything."""
        while not self._finished.wait(0.5):
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(grace_seconds=5)


def _grpc_host(bind_address: str) -> str:
    return f"[{bind_address}]" if ":" in bind_address else bind_address
