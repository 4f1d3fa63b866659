"""The API's TLS material: a self-signed certificate made at first start, and the context."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from wazuhcluster.api.config import APIConfig
from wazuhcluster.api.files import write_atomic

#: Suffix of a generated key or certificate written but not yet in place.
PENDING = ".pending"


def complete_pending_pair(key_path: str, cert_path: str) -> None:
    """Put in place the half of a self-signed pair that a start killed between the two
    renames left pending (``<path>.pending``): the pair is both files of one generation,
    written in full before either is renamed, so the pending one belongs to the one in
    place."""
    for path, pair in ((key_path, cert_path), (cert_path, key_path)):
        if (not os.path.exists(path) and os.path.exists(path + PENDING)
                and os.path.exists(pair)):
            os.replace(path + PENDING, path)


def ensure_certificate(config: APIConfig) -> bool:
    """Create a self-signed key and certificate where api.yaml points when neither exists.

    Both are written in full under ``.pending`` names, then renamed: a node killed in
    between leaves a pair that the next start completes (:func:`complete_pending_pair`).
    Blocking (key generation): run it off the reactor. Returns True when it created them.
    """
    complete_pending_pair(config.key_path, config.cert_path)
    have_key, have_cert = os.path.exists(config.key_path), os.path.exists(config.cert_path)
    if have_key and have_cert:
        return False
    if have_key != have_cert:
        missing = config.cert_path if have_key else config.key_path
        raise FileNotFoundError(f"{missing} is missing while its pair exists: restore it, or "
                                "remove both to have a new self-signed pair made")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wazuhcluster"),
                      x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname() or "wazuh")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    os.makedirs(os.path.dirname(config.key_path), mode=0o750, exist_ok=True)
    os.makedirs(os.path.dirname(config.cert_path), mode=0o750, exist_ok=True)
    write_atomic(config.key_path + PENDING, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()), mode=0o600)
    write_atomic(config.cert_path + PENDING, cert.public_bytes(serialization.Encoding.PEM),
                 mode=0o640)
    os.replace(config.key_path + PENDING, config.key_path)
    os.replace(config.cert_path + PENDING, config.cert_path)
    return True
