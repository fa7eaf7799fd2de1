"""--ssl_config_file as tensorflow_model_server reads it: TLS for gRPC, mutual TLS with client_verify; and, beyond it
(issue 25 item 8), HTTPS on the REST port from the same pair and unsafe pairs refused at start. Real
certificates are generated here (a CA, a server certificate for localhost, client certificates from that CA and from a
stranger's CA) and real grpc secure channels connect."""
from __future__ import annotations

import datetime
import ipaddress
import os

import grpc
import pytest
from conftest import free_port, write
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def _pem_key(key) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _certificate(name: str, key, issuer_name=None, issuer_key=None, server=False, ca=False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


class Pki:
    """PEM strings: a CA, a server pair signed by it, a client pair signed by it, a client pair from another CA."""

    def __init__(self):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        def pem(cert):
            return cert.public_bytes(serialization.Encoding.PEM).decode()

        def new_key():
            return ec.generate_private_key(ec.SECP256R1())

        ca_key, stranger_key = new_key(), new_key()
        ca = _certificate("test CA", ca_key, ca=True)
        stranger = _certificate("stranger CA", stranger_key, ca=True)
        server_key, client_key, rogue_key = new_key(), new_key(), new_key()
        self.ca = pem(ca)
        self.server_key, self.server_cert = _pem_key(server_key), pem(
            _certificate("localhost", server_key, ca.subject, ca_key, server=True))
        self.client_key, self.client_cert = _pem_key(client_key), pem(
            _certificate("client", client_key, ca.subject, ca_key))
        self.rogue_key, self.rogue_cert = _pem_key(rogue_key), pem(
            _certificate("rogue", rogue_key, stranger.subject, stranger_key))


@pytest.fixture(scope="module")
def pki():
    return Pki()


def _ssl_config(tmp_path, pki: Pki, client_verify: bool) -> str:
    from google.protobuf import text_format

    from serving.config import SSLConfig

    config = SSLConfig(server_key=pki.server_key, server_cert=pki.server_cert, custom_ca=pki.ca,
                       client_verify=client_verify)
    return write(tmp_path / f"ssl_{client_verify}.config", text_format.MessageToString(config))


def _predict(channel) -> list[float]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add(size=1)
    request.inputs["x"].float_val.append(2.0)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return list(stub.Predict(request, timeout=10).outputs["y"].float_val)


def _refused(channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as error:
        _predict(channel)
    return error.value.code()


def test_tls_server_verified_by_client_and_plaintext_refused(models_dir, tmp_path, make_server, pki):
    server = make_server(model_name="half", model_base_path=str(models_dir / "half"),
                         ssl_config_file=_ssl_config(tmp_path, pki, client_verify=False))
    target = f"localhost:{server.grpc_port}"
    with grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=pki.ca.encode())) as channel:
        assert _predict(channel) == [3.0]
    with grpc.insecure_channel(target) as channel:  # a plaintext client cannot talk to a TLS port
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
    # A client that trusts another CA refuses this server's certificate.
    other = Pki()
    with grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=other.ca.encode())) as channel:
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_custom_ca(models_dir, tmp_path, make_server, pki):
    server = make_server(model_name="half", model_base_path=str(models_dir / "half"),
                         ssl_config_file=_ssl_config(tmp_path, pki, client_verify=True))
    target = f"localhost:{server.grpc_port}"
    trusted = grpc.ssl_channel_credentials(root_certificates=pki.ca.encode(), private_key=pki.client_key.encode(),
                                           certificate_chain=pki.client_cert.encode())
    with grpc.secure_channel(target, trusted) as channel:
        assert _predict(channel) == [3.0]
    without_certificate = grpc.ssl_channel_credentials(root_certificates=pki.ca.encode())
    with grpc.secure_channel(target, without_certificate) as channel:
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE
    rogue = grpc.ssl_channel_credentials(root_certificates=pki.ca.encode(), private_key=pki.rogue_key.encode(),
                                         certificate_chain=pki.rogue_cert.encode())
    with grpc.secure_channel(target, rogue) as channel:
        assert _refused(channel) == grpc.StatusCode.UNAVAILABLE


def test_bad_ssl_config_is_a_start_up_error(models_dir, tmp_path, pki):
    from serving.errors import ConfigError
    from serving.server import ModelServer, ServerOptions

    for text, words in (('server_key: "k"', "must set both server_key and server_cert"),
                        ('server_key: "k" server_cert: "c" client_verify: true', "no custom_ca"),
                        ("nonsense", "Error parsing text-format tensorflow.serving.SSLConfig")):
        config = write(tmp_path / "bad_ssl.config", text)
        with pytest.raises(ConfigError, match=words):
            ModelServer(ServerOptions(model_name="half", model_base_path=str(models_dir / "half"),
                                      ssl_config_file=config)).start()


# ------------------------------------------------------------------------------------ REST on the same SSLConfig
def _https(port: int, pki: Pki, client=None):
    """(status, JSON) of GET /v1/models/half over HTTPS, trusting the test CA; `client`: (cert, key) PEM pair."""
    import json
    import ssl
    import tempfile
    import urllib.request

    context = ssl.create_default_context(cadata=pki.ca)
    if client is not None:
        folder = tempfile.mkdtemp()
        for name, text in (("cert.pem", client[0]), ("key.pem", client[1])):
            with open(os.path.join(folder, name), "w") as f:
                f.write(text)
        context.load_cert_chain(os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem"))
    with urllib.request.urlopen(f"https://localhost:{port}/v1/models/half", context=context, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_rest_serves_https_from_the_ssl_config_and_no_clear_text(models_dir, tmp_path, make_server, pki):
    import urllib.error
    import urllib.request

    server = make_server(model_name="half", model_base_path=str(models_dir / "half"),
                         ssl_config_file=_ssl_config(tmp_path, pki, client_verify=False))
    status, body = _https(server.rest_port, pki)
    assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # what TF Serving would answer in clear
        urllib.request.urlopen(f"http://localhost:{server.rest_port}/v1/models/half", timeout=10)


def test_rest_mutual_tls_requires_a_client_certificate_from_custom_ca(models_dir, tmp_path, make_server, pki):
    import ssl
    import urllib.error

    server = make_server(model_name="half", model_base_path=str(models_dir / "half"),
                         ssl_config_file=_ssl_config(tmp_path, pki, client_verify=True))
    assert _https(server.rest_port, pki, client=(pki.client_cert, pki.client_key))[0] == 200
    for client in (None, (pki.rogue_cert, pki.rogue_key)):  # no certificate, or one from a stranger's CA
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _https(server.rest_port, pki, client)


def _self_signed(key, days: int) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)  # valid from a month ago for `days` from now (< 0: expired)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM).decode())


def test_unsafe_key_pairs_refuse_to_start_with_a_clear_message(models_dir, tmp_path, pki):
    """As a process: exit 1 and one line naming the problem, no traceback, no PEM text (before issue 25 a mismatched
    pair crashed with a traceback, and weak or expired pairs served)."""
    import subprocess
    import sys

    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from google.protobuf import text_format

    from serving.config import SSLConfig

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    good = ec.generate_private_key(ec.SECP256R1())
    cases = {
        "server_key does not match server_cert": (pki.client_key, pki.server_cert),
        "server_key is a 1024-bit RSA key; at least 2048 bits are needed": (_pem_key(weak), _self_signed(weak, 1)),
        "server_cert expired on": (_pem_key(good), _self_signed(good, -1)),
        "server_key is not an unencrypted PEM private key": ("-----BEGIN PRIVATE KEY-----\nnot base64\n"
                                                              "-----END PRIVATE KEY-----\n", pki.server_cert),
    }
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for words, (key, cert) in cases.items():
        config = write(tmp_path / "ssl.config", text_format.MessageToString(SSLConfig(server_key=key,
                                                                                      server_cert=cert)))
        result = subprocess.run([sys.executable, "-m", "serving", f"--port={free_port()}", "--model_name=half",
                                 f"--model_base_path={models_dir / 'half'}", f"--ssl_config_file={config}"],
                                capture_output=True, text=True, timeout=120, check=False, cwd=repo)
        assert result.returncode == 1 and words in result.stderr, (words, result.stderr[-2000:])
        assert "Traceback" not in result.stderr and "BEGIN" not in result.stderr, words
