"""Config files in TF Serving's text-proto formats: ModelServerConfig (with the logging_config this server implements),
BatchingParameters, MonitoringConfig, SSLConfig.

ModelServerConfig comes from tensorflow-serving-api. The pip package lacks the BatchingParameters, MonitoringConfig
and SSLConfig messages, so they are declared here with the upstream field names and numbers
(servables/tensorflow/session_bundle_config.proto, config/monitoring_config.proto, config/ssl_config.proto) in a
private descriptor pool.
"""
from __future__ import annotations

import os
import re

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import ConfigError

# A model name is a map key and a URL path segment; it never becomes a file path, but keep it plain anyway.
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _build_messages():
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="serving_private/serving_configs.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])

    def field(message, name, number, kind, type_name=None, repeated=False):
        f = message.field.add(name=name, number=number, type=kind,
                              label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
        if type_name:
            f.type_name = type_name

    batching = proto.message_type.add(name="BatchingParameters")
    for name, number in (("max_batch_size", 1), ("batch_timeout_micros", 2), ("max_enqueued_batches", 3),
                         ("num_batch_threads", 4), ("max_execution_batch_size", 9)):
        field(batching, name, number, F.TYPE_MESSAGE, ".google.protobuf.Int64Value")
    field(batching, "thread_pool_name", 5, F.TYPE_MESSAGE, ".google.protobuf.StringValue")
    field(batching, "allowed_batch_sizes", 6, F.TYPE_INT64, repeated=True)
    field(batching, "pad_variable_length_inputs", 7, F.TYPE_BOOL)
    field(batching, "enable_large_batch_splitting", 8, F.TYPE_MESSAGE, ".google.protobuf.BoolValue")
    prometheus = proto.message_type.add(name="PrometheusConfig")
    field(prometheus, "enable", 1, F.TYPE_BOOL)
    field(prometheus, "path", 2, F.TYPE_STRING)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    field(monitoring, "prometheus_config", 1, F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    ssl = proto.message_type.add(name="SSLConfig")
    for name, number in (("server_key", 1), ("server_cert", 2), ("custom_ca", 3)):
        field(ssl, name, number, F.TYPE_STRING)
    field(ssl, "client_verify", 4, F.TYPE_BOOL)
    pool.Add(proto)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
                 for name in ("BatchingParameters", "MonitoringConfig", "SSLConfig"))


BatchingParameters, MonitoringConfig, SSLConfig = _build_messages()
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
REQUEST_LOG_COLLECTOR = "tfrecord"  # logging_config's log_collector_config.type: serving/request_logger.py


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as error:
        raise ConfigError(f"Failed to read {what} {path}: {error.strerror}") from None


def parse_text_proto(text: str, message, path: str = "<string>"):
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ConfigError(f"Error parsing text-format {message.DESCRIPTOR.full_name}: {error} (file {path})") from None


def read_model_server_config(path: str):
    config = parse_model_server_config(_read(path, "model config file"), path)
    validate_model_server_config(config)
    return config


def parse_model_server_config(text: str, path: str = "<string>"):
    return parse_text_proto(text, model_server_config_pb2.ModelServerConfig(), path)


def validate_model_server_config(config) -> None:
    """TF Serving's ServerCore checks, with its messages (they surface as INVALID_ARGUMENT on reload)."""
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                          "Only ModelConfigList is currently supported")
    seen = set()
    for model in config.model_config_list.config:
        if model.name in seen:
            raise ConfigError(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
        validate_model_name(model.name)
        if not os.path.isabs(model.base_path) and "://" not in model.base_path:
            raise ConfigError(f"Expected model {model.name} to have an absolute path or URI; "
                              f"got base_path()={model.base_path}")
        if not model.model_platform and not model.model_type:
            raise ConfigError("Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                              f"ModelServerConfig::model_platform, model name is {model.name}")
        if model.model_platform and model.model_platform != "tensorflow":
            raise ConfigError(f"Model {model.name} requests unsupported platform {model.model_platform}")
        if model.HasField("logging_config"):
            validate_logging_config(model.name, model.logging_config)


def validate_logging_config(model_name: str, logging_config) -> None:
    """What serving/request_logger.py implements of LoggingConfig; anything else refuses the config rather than
    being ignored. (Open-source TF Serving refuses every logging_config: "No request-logger-creator provided.")"""
    where = f"logging_config of model {model_name}"
    collector = logging_config.log_collector_config
    if collector.type != REQUEST_LOG_COLLECTOR:
        raise ConfigError(f"Cannot find LogCollector::Factory for type: {collector.type} ({where}; this server's "
                          f'collector is "{REQUEST_LOG_COLLECTOR}")')
    if not os.path.isabs(collector.filename_prefix) and "://" not in collector.filename_prefix:
        raise ConfigError(f"{where}: log_collector_config.filename_prefix must be an absolute path or URI; got "
                          f"{collector.filename_prefix!r}")
    sampling = logging_config.sampling_config
    if not 0 <= sampling.sampling_rate <= 1:  # NaN fails too
        raise ConfigError(f"{where}: sampling_config.sampling_rate must be in [0, 1]; got {sampling.sampling_rate}")
    # Fields that would need request metadata or a custom logger this server does not have.
    if sampling.attributes or getattr(sampling, "per_task_sampling_configs", None) \
            or logging_config.HasField("custom_logging_config"):
        raise ConfigError(f"{where}: only log_collector_config and sampling_config.sampling_rate are supported")


def validate_model_name(name: str) -> None:
    if not MODEL_NAME_PATTERN.match(name or ""):
        raise ConfigError(f"Invalid model name {name!r}: use letters, digits, '_', '.', '-' "
                          "(starting with a letter or digit)")


def single_model_config(name: str, base_path: str):
    """--model_name/--model_base_path -> the equivalent one-model ModelServerConfig."""
    if not base_path:
        raise ConfigError("Both --model_base_path and --model_config_file are empty; set one of them")
    config = model_server_config_pb2.ModelServerConfig()
    # A local path made absolute; a URI (gs://, s3://) read by TensorFlow's filesystems as given, as TF Serving does.
    base_path = base_path if "://" in base_path else os.path.abspath(base_path)
    model = config.model_config_list.config.add(name=name, base_path=base_path, model_platform="tensorflow")
    del model  # defaults: latest { num_versions: 1 }
    validate_model_server_config(config)
    return config


def read_batching_parameters(path: str):
    return parse_text_proto(_read(path, "batching parameters file"), BatchingParameters(), path)


def read_monitoring_config(path: str):
    return parse_text_proto(_read(path, "monitoring config file"), MonitoringConfig(), path)


def read_ssl_config(path: str):
    """--ssl_config_file: PEM server_key and server_cert (required), custom_ca and client_verify (mutual TLS)."""
    config = parse_text_proto(_read(path, "SSL config file"), SSLConfig(), path)
    if not config.server_key or not config.server_cert:
        raise ConfigError(f"SSL config file {path} must set both server_key and server_cert (PEM text)")
    if config.client_verify and not config.custom_ca:
        raise ConfigError(f"SSL config file {path} sets client_verify but no custom_ca to verify client "
                          "certificates against")
    return config
