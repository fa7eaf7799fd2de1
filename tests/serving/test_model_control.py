"""HandleReloadConfigRequest (issue 25 item 3) over real gRPC channels: refused unless --enable_reload_config_rpc;
when enabled, base paths and request-log prefixes only under --reload_config_allowed_paths (one confinement rule:
serving/path_confinement.py), never an empty model list, bounded by the call's deadline; under TLS only for clients
that presented a certificate."""
from __future__ import annotations

import os
import shutil
import time

import grpc
import pytest
from conftest import free_port, write
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from test_tls import Pki, _ssl_config


def reload_request(text: str) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(f"model_config_list {{ {text} }}", request.config)
    return request


def model(name: str, base_path, logging_prefix=None) -> str:
    logging = (f'logging_config {{ log_collector_config {{ type: "tfrecord" filename_prefix: "{logging_prefix}" }} '
               "sampling_config { sampling_rate: 1 } }") if logging_prefix else ""
    return f'config {{ name: "{name}" base_path: "{base_path}" model_platform: "tensorflow" {logging} }}'


def reload(channel, request, timeout=60) -> tuple[str, str]:
    try:
        model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=timeout)
        return "OK", ""
    except grpc.RpcError as error:
        return error.code().name, error.details()


def half_answer(channel, name="half") -> list[float]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add(size=1)
    request.inputs["x"].float_val.append(2.0)
    return list(prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
                .outputs["y"].float_val)


@pytest.fixture
def allowed(models_dir, tmp_path):
    """A folder reloads may use, holding a copy of half_plus_two, and the server's startup config."""
    folder = tmp_path / "allowed"
    shutil.copytree(models_dir / "half", folder / "half")
    return folder, write(tmp_path / "models.config", f"model_config_list {{ {model('half', folder / 'half')} }}")


def test_reload_is_refused_unless_enabled(allowed, make_server):
    folder, config = allowed
    server = make_server(model_config_file=config)
    with grpc.insecure_channel(f"localhost:{server.grpc_port}") as channel:
        code, details = reload(channel, reload_request(model("half", folder / "half")))
        assert (code, "--enable_reload_config_rpc" in details) == ("PERMISSION_DENIED", True)
        assert half_answer(channel) == [3.0]


def test_enabling_it_needs_allowed_paths(allowed):
    from serving.errors import ConfigError
    from serving.server import ModelServer, ServerOptions

    with pytest.raises(ConfigError, match="--enable_reload_config_rpc needs --reload_config_allowed_paths"):
        ModelServer(ServerOptions(port=free_port(), model_config_file=allowed[1],
                                  enable_reload_config_rpc=True)).start()


def test_reload_is_confined_to_the_allowed_paths(allowed, make_server, models_dir, tmp_path):
    folder, config = allowed
    server = make_server(model_config_file=config, enable_reload_config_rpc=True,
                         reload_config_allowed_paths=str(folder))
    os.symlink(models_dir / "half_plus_three", folder / "link_out")  # inside by name, outside in fact
    with grpc.insecure_channel(f"localhost:{server.grpc_port}") as channel:
        for text in (model("half", "/etc"), model("half", models_dir / "half_plus_three"),
                     model("half", f"{folder}/../../{models_dir.name}/half_plus_three"),
                     model("half", folder / "link_out"), model("half", "gs://some-bucket/models/half"),
                     model("half", f"{folder}-sibling/half"),
                     model("half", folder / "half", logging_prefix="/etc/cron.d/requests")):
            code, details = reload(channel, reload_request(text))
            assert code == "PERMISSION_DENIED" and "--reload_config_allowed_paths" in details, (text, details)
        assert reload(channel, reload_request("")) == ("INVALID_ARGUMENT", "ReloadConfigRequest names no models: "
                                                       "it would unload every model")
        assert half_answer(channel) == [3.0]  # nothing refused changed the served models
        shutil.copytree(models_dir / "half_plus_three", folder / "three")
        assert reload(channel, reload_request(model("half", folder / "half") + model(
            "three", folder / "three", logging_prefix=folder / "logs" / "requests"))) == ("OK", "")
        assert half_answer(channel, "three") == [4.0]


def test_reload_is_bounded_by_the_deadline_and_holds_no_lock_after_it(allowed, make_server):
    """A base path with no versions yet: the call returns DEADLINE_EXCEEDED at its deadline (TF Serving would wait
    for good, holding its config lock), and the next reload goes through."""
    folder, config = allowed
    server = make_server(model_config_file=config, enable_reload_config_rpc=True,
                         reload_config_allowed_paths=str(folder))
    (folder / "empty").mkdir()
    with grpc.insecure_channel(f"localhost:{server.grpc_port}") as channel:
        started = time.monotonic()
        code, _ = reload(channel, reload_request(model("half", folder / "half") + model("empty", folder / "empty")),
                         timeout=2)
        assert code == "DEADLINE_EXCEEDED" and time.monotonic() - started < 4
        started = time.monotonic()
        assert reload(channel, reload_request(model("half", folder / "half")), timeout=30) == ("OK", "")
        assert time.monotonic() - started < 10
        assert half_answer(channel) == [3.0]


def test_under_tls_only_a_client_with_a_certificate_may_reload(allowed, make_server, tmp_path):
    folder, config = allowed
    pki = Pki()
    request = reload_request(model("half", folder / "half"))
    without = make_server(model_config_file=config, enable_reload_config_rpc=True,
                          reload_config_allowed_paths=str(folder),
                          ssl_config_file=_ssl_config(tmp_path, pki, client_verify=False))
    with grpc.secure_channel(f"localhost:{without.grpc_port}",
                             grpc.ssl_channel_credentials(root_certificates=pki.ca.encode())) as channel:
        code, details = reload(channel, request)
        assert code == "UNAUTHENTICATED" and "client certificate" in details
        assert half_answer(channel) == [3.0]
    mutual = make_server(model_config_file=config, enable_reload_config_rpc=True,
                         reload_config_allowed_paths=str(folder),
                         ssl_config_file=_ssl_config(tmp_path, pki, client_verify=True))
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.encode(), private_key=pki.client_key.encode(),
                                               certificate_chain=pki.client_cert.encode())
    with grpc.secure_channel(f"localhost:{mutual.grpc_port}", credentials) as channel:
        assert reload(channel, request) == ("OK", "")
