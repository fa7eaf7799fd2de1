"""--ssl_config_file's key pair, checked once at start and served on both ports.

TF Serving hands the PEM text to gRPC and serves REST in clear, so mutual TLS on gRPC is bypassed through REST; a
key that does not match the certificate only fails at the first handshake. Here the pair is checked before anything
binds (the key matches the certificate, RSA keys have at least 2048 bits, the certificate is valid now, the PEM
blocks parse) with messages that name the problem and never the PEM text, and the REST port serves HTTPS from the
same pair, requiring client certificates from custom_ca when client_verify is set, as gRPC does.
"""
from __future__ import annotations

import datetime
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from serving.errors import ConfigError

MIN_RSA_BITS = 2048


def check_ssl_config(config, path: str) -> None:
    """Raises ConfigError when the SSLConfig read from `path` cannot serve TLS safely."""
    try:
        key = serialization.load_pem_private_key(config.server_key.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"SSL config file {path}: server_key is not an unencrypted PEM private key") from None
    try:
        certificate = x509.load_pem_x509_certificates(config.server_cert.encode())[0]
    except ValueError:
        raise ConfigError(f"SSL config file {path}: server_cert is not a PEM certificate") from None
    if config.custom_ca:
        try:
            x509.load_pem_x509_certificates(config.custom_ca.encode())
        except ValueError:
            raise ConfigError(f"SSL config file {path}: custom_ca is not a PEM certificate") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != certificate.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise ConfigError(f"SSL config file {path}: server_key does not match server_cert (the certificate "
                          f"of {certificate.subject.rfc4514_string()} holds another public key)")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise ConfigError(f"SSL config file {path}: server_key is a {key.key_size}-bit RSA key; at least "
                          f"{MIN_RSA_BITS} bits are needed")
    now = datetime.datetime.now(datetime.timezone.utc)
    if certificate.not_valid_after_utc < now:
        raise ConfigError(f"SSL config file {path}: server_cert expired on {certificate.not_valid_after_utc:%Y-%m-%d}")
    if certificate.not_valid_before_utc > now:
        raise ConfigError(f"SSL config file {path}: server_cert is not valid before "
                          f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")


def rest_ssl_context(config) -> ssl.SSLContext:
    """The REST port's TLS from the SSLConfig gRPC serves: client certificates required and verified against
    custom_ca with client_verify."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # ssl reads a key pair from files only: anonymous in-memory files keep the key off every file system.
    cert_fd, key_fd = os.memfd_create("server_cert"), os.memfd_create("server_key")
    try:
        os.write(cert_fd, config.server_cert.encode())
        os.write(key_fd, config.server_key.encode())
        context.load_cert_chain(f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}")
    finally:
        os.close(cert_fd)
        os.close(key_fd)
    if config.client_verify:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=config.custom_ca)
    return context
