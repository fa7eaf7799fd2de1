"""A drop-in for tensorflow_model_server: TF Serving's gRPC and REST APIs over SavedModel versions on disk.

Flags have tensorflow_model_server's names, defaults and meaning (`--flag=value` or `--flag value`), e.g.

    image-retrain serve --port=8500 --rest_api_port=8501 --model_name=flowers --model_base_path=/models/flowers
    python -m serving --model_config_file=models.config --model_config_file_poll_wait_seconds=60

The REST port also serves a web page at `/` for trying the image classifier in a browser.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on", ""):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


# tensorflow_model_server flags we do not implement, each with the one value that matches what this server does
# anyway. Any other value refuses to start: a silently ignored flag (say a
# platform config or a session config) would serve something else than asked for.
UNIMPLEMENTED_FLAGS = {
    "enable_profiler": "false", "flush_filesystem_caches": "false", "enable_per_model_batching_parameters": "false",
    "remove_unused_fields_from_bundle_metagraph": "false", "enable_serialization_as_tensor_content": "false",
    "xla_cpu_compilation_enabled": "false", "use_alts_credentials": "false", "platform_config_file": "",
    "tensorflow_session_parallelism": "0", "num_load_threads": "0", "num_unload_threads": "0",
    "per_process_gpu_memory_fraction": "0", "tensorflow_session_config_file": "",
    "thread_pool_factory_config_file": "", "mixed_precision": "", "num_tflite_pools": "1",
}


def refuse_unimplemented_flags(args) -> None:
    """Raises ConfigError naming every unimplemented flag given a value that would change behaviour."""
    from serving.errors import ConfigError

    refused = []
    for name, harmless in UNIMPLEMENTED_FLAGS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if harmless == "false":
            same = str(value).strip().lower() in ("0", "false", "no", "off")
        else:
            same = str(value).strip() == harmless or (harmless == "0" and _is_zero(value))
        if not same:
            refused.append(f"--{name}={value}")
    if refused:
        raise ConfigError(f"{', '.join(refused)}: not implemented by this server (it would be ignored); remove "
                          "the flag(s), or run tensorflow_model_server for these features")


def _is_zero(text) -> bool:
    try:
        return float(text) == 0
    except ValueError:
        return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from serving.server import ServerOptions  # dataclass only: no TensorFlow import
    defaults = ServerOptions()

    def flag(name, kind, help_text):
        default = getattr(defaults, name)
        if kind is bool:
            parser.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=default, metavar="BOOL",
                                help=f"{help_text} (default {str(default).lower()})")
        else:
            parser.add_argument(f"--{name}", type=kind, default=default, help=f"{help_text} (default {default!r})")

    flag("port", int, "gRPC port; 0 disables TCP gRPC")
    flag("grpc_socket_path", str, "also serve gRPC on this UNIX socket")
    flag("rest_api_port", int, "REST/HTTP port (API, web page, metrics); 0 = off")
    flag("rest_api_num_threads", int, "REST worker threads (JSON parsing and model calls; also the cap on requests "
         "in progress); 0 = as --grpc_max_threads's default")
    flag("rest_api_timeout_in_ms", int, "deadline of a REST request (body upload, queueing, model call): 408 if the "
         "body is late, 504 otherwise")
    flag("rest_api_idle_timeout_in_ms", int, "close a REST connection that has not sent a complete request head "
         "this long after connecting or after its last response")
    flag("rest_api_body_timeout_in_ms", int, "our addition: the longest gap between a request body's bytes (408 "
         "beyond); bodies are read before they take a worker thread")
    flag("rest_api_max_connections", int, "our addition: REST connections open at once; more get 503 and are closed")
    flag("rest_api_allowed_hosts", str, "our addition: Host names REST requests may give besides IP addresses, "
         "localhost and this machine's name (others get 403: DNS rebinding); comma-separated, * = any")
    flag("rest_api_enable_cors_support", bool, "add CORS headers to REST responses")
    flag("rest_api_max_request_bytes", int, "largest accepted REST request body; larger ones get 413")
    flag("bind_address", str, "address both ports bind to (127.0.0.1 for local only)")
    flag("model_name", str, "model name when --model_base_path is used")
    flag("model_base_path", str, "directory of numeric version subdirectories (absolute)")
    flag("model_config_file", str, "ModelServerConfig text proto (overrides --model_name/--model_base_path)")
    flag("model_config_file_poll_wait_seconds", int, "re-read --model_config_file every N s; 0 = never")
    flag("file_system_poll_wait_seconds", int, "poll model base paths for new versions every N s; 0 = once")
    flag("enable_batching", bool, "merge concurrent requests into batched model calls")
    flag("batching_parameters_file", str, "BatchingParameters text proto")
    flag("monitoring_config_file", str, "MonitoringConfig text proto (Prometheus page on the REST port)")
    flag("grpc_channel_arguments", str, "extra gRPC server options: key=value,key=value")
    flag("grpc_max_threads", int, "gRPC worker threads; 0 = 4 x CPUs, with batching at least "
         "max_batch_size x num_batch_threads more (up to 256)")
    flag("enable_grpc_healthcheck_service", bool, "register grpc.health.v1.Health")
    flag("max_num_load_retries", int, "retries of a failed version load")
    flag("load_retry_interval_micros", int, "wait between load retries")
    flag("saved_model_tags", str, "comma-separated MetaGraph tags to load")
    flag("enable_model_warmup", bool, "replay assets.extra/tf_serving_warmup_requests before serving a version")
    flag("num_request_iterations_for_warmup", int, "times each warmup record is replayed; used only if > 0")
    flag("allow_version_labels_for_unavailable_models", bool, "allow new labels on versions not yet loaded")
    flag("enable_signature_method_name_check", bool, "Classify/Regress require the matching method_name")
    flag("tensorflow_intra_op_parallelism", int, "TF intra-op threads; 0 = auto")
    flag("tensorflow_inter_op_parallelism", int, "TF inter-op threads; 0 = auto")
    flag("prefer_tflite_model", bool, "serve a version's model.tflite on LiteRT (XNNPACK) when it has one, with the "
         "SavedModel's signatures")
    flag("num_tflite_interpreters_per_pool", int, "LiteRT interpreters per model version, each running one call at a "
         "time on CPUs / N XNNPACK threads")
    flag("shutdown_grace_seconds", float, "on SIGTERM, how long in-flight requests may take to finish")
    flag("ssl_config_file", str, "SSLConfig text proto: TLS for gRPC and REST (server_key, server_cert), mutual TLS "
         "with client_verify + custom_ca")
    flag("max_total_request_memory_bytes", int, "our addition: memory all requests in flight may use (429 / "
         "RESOURCE_EXHAUSTED beyond); 0 = a quarter of the machine's (or the container's) memory")
    flag("max_request_memory_bytes", int, "our addition: memory one request may use (400 / INVALID_ARGUMENT beyond); "
         "0 = half of --max_total_request_memory_bytes")
    flag("request_memory_factor", int, "our addition: a request may use at most 64 MiB + this many bytes per byte "
         "it sends (and --max_request_memory_bytes)")
    flag("grpc_max_request_bytes", int, "our addition: largest gRPC request message (RESOURCE_EXHAUSTED beyond); "
         "grpc.max_receive_message_length in --grpc_channel_arguments overrides it")
    flag("grpc_max_concurrent_rpcs", int, "our addition: gRPC calls in progress or queued at once "
         "(RESOURCE_EXHAUSTED beyond); 0 = 4 x the gRPC threads")
    flag("enable_reload_config_rpc", bool, "our addition: allow ModelService/HandleReloadConfigRequest (TF Serving "
         "always does); needs --reload_config_allowed_paths, and with TLS a client certificate")
    flag("reload_config_allowed_paths", str, "our addition: comma-separated folders or bucket prefixes a reloaded "
         "config's base paths and request-log prefixes must lie under")
    flag("max_request_batch_size", int, "our addition: most items (dim 0) of a request's string inputs (encoded "
         "images, tf.Examples); 0 = unlimited")
    flag("max_implied_tensor_elements", int, "our addition: most elements a TensorProto may declare beyond the "
         "values it carries")
    flag("request_log_max_file_bytes", int, "our addition (request logging, a model's logging_config): start a new "
         "TFRecord file beyond this size")
    flag("request_log_max_files", int, "our addition: newest request log files kept per filename_prefix; older ones "
         "are deleted")
    flag("request_log_max_queue_bytes", int, "our addition: request log records waiting for the writer; beyond this "
         "they are dropped (request_log_dropped_count), never delaying a request")
    # tensorflow_model_server flags this server does not implement: parsed so that the refusal can name them.
    for name in UNIMPLEMENTED_FLAGS:
        parser.add_argument(f"--{name}", nargs="?", const="true", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--log_level", default="INFO", help="Python logging level (default INFO)")


def import_tensorflow_without_keras() -> None:
    """Imports TensorFlow for a server process without the Keras that `import tensorflow` loads eagerly.

    TensorFlow's __init__ imports keras.src.optimizers, and with it Keras, scikit-learn, pandas, pyarrow, ... (about
    200 MiB of RSS), only to register optimizers for restoring Keras objects. The server runs SavedModel graphs in a
    Session and never touches Keras, so the import is blocked while TensorFlow loads (TF skips it on ImportError);
    afterwards `import keras` works as usual. No-op if TensorFlow is already imported.
    """
    if "tensorflow" in sys.modules:
        return
    blocked = [name for name in ("keras", "tf_keras") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # makes `import keras` raise ImportError
    try:
        import tensorflow  # noqa: F401
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def options_from_args(args):
    from serving.server import ServerOptions
    fields = {f.name for f in dataclasses.fields(ServerOptions)}
    return ServerOptions(**{k: v for k, v in vars(args).items() if k in fields})


def main(args) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.version:
        import tensorflow as tf
        print("TensorFlow ModelServer: image-retrain serving (Python)")
        print(f"TensorFlow Library: {tf.__version__}")
        return 0
    from serving.errors import ConfigError, ServingError
    from serving.server import ModelServer

    try:
        refuse_unimplemented_flags(args)
    except ConfigError as error:
        print(f"Failed to start server. Error: {error}", file=sys.stderr)
        return 1

    import_tensorflow_without_keras()
    server = ModelServer(options_from_args(args))
    try:
        server.start()
    except ServingError as error:
        print(f"Failed to start server. Error: {error.code.name}: {error.message}", file=sys.stderr)
        return 1
    except (ConfigError, OSError) as error:
        print(f"Failed to start server. Error: {error}", file=sys.stderr)
        return 1

    def on_signal(signum, _frame):
        logging.getLogger(__name__).info("Signal %d: draining in-flight requests, then exiting", signum)
        threading.Thread(target=server.stop, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.wait()
    return 0
