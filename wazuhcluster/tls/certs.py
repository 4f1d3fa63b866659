"""A small certificate authority for the cluster link, on ``cryptography``'s x509.

Pure functions that build keys, certificates and CRLs in memory, and :func:`write_private`
/ :func:`write_public` that store PEM files atomically (keys with mode 0600). Used by the
``wazuhcluster-certs`` command and by the tests, which make throwaway CAs with them.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wazuhcluster import atomicfile

PrivateKey = ec.EllipticCurvePrivateKey

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
CRL_FILE = "crl.pem"


def new_key() -> PrivateKey:
    """A fresh P-256 private key (fast to make, accepted by every TLS 1.2/1.3 stack)."""
    return ec.generate_private_key(ec.SECP256R1())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(common_name: str = "wazuhcluster CA", days: int = 3650, *,
            key: PrivateKey | None = None,
            not_before: datetime.datetime | None = None) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed CA certificate and its key."""
    key = key or new_key()
    start = not_before or _now() - datetime.timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public = key.public_key()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca_cert: x509.Certificate, ca_key: PrivateKey, node_name: str, *,
          ips: Sequence[str] = (), dns: Sequence[str] = (), days: int = 825,
          key: PrivateKey | None = None, not_before: datetime.datetime | None = None,
          ) -> tuple[x509.Certificate, PrivateKey]:
    """A certificate for one node, usable as TLS server *and* client.

    The node name is the subject CN and the first DNS name of the subjectAltName (the master
    checks it against the name the worker gives in ``hello``); ``ips`` and ``dns`` add the
    addresses a worker dials to reach this node when it is the master.

    :raises ValueError: for an IP address that does not parse.
    """
    key = key or new_key()
    start = not_before or _now() - datetime.timedelta(minutes=5)
    sans: list[x509.GeneralName] = [x509.DNSName(node_name)]
    sans += [x509.DNSName(d) for d in dns if d != node_name]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def make_crl(ca_cert: x509.Certificate, ca_key: PrivateKey, revoked_serials: Iterable[int],
             days: int = 30) -> x509.CertificateRevocationList:
    """A CRL signed by the CA listing ``revoked_serials``."""
    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now - datetime.timedelta(minutes=5))
               .next_update(now + datetime.timedelta(days=days)))
    for serial in revoked_serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(now - datetime.timedelta(minutes=5)).build())
    return builder.sign(ca_key, hashes.SHA256())


# -- PEM ------------------------------------------------------------------------------------
def cert_pem(cert: x509.Certificate) -> bytes:
    """PEM of a certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of a private key."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    """PEM of a CRL."""
    return crl.public_bytes(serialization.Encoding.PEM)


def write_atomic(path: str, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically, ``mode`` set before any byte is written."""
    atomicfile.write_atomic(path, data, mode)


def write_private(path: str, key: PrivateKey) -> None:
    """Store a private key with mode 0600."""
    write_atomic(path, key_pem(key), 0o600)


def write_public(path: str, data: bytes) -> None:
    """Store a certificate or CRL (PEM bytes) with mode 0644."""
    write_atomic(path, data, 0o644)


def load_cert(path: str) -> x509.Certificate:
    """Read one PEM certificate."""
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def load_key(path: str) -> PrivateKey:
    """Read an unencrypted PEM private key (an EC key, as :func:`new_key` makes)."""
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key made by wazuhcluster-certs init-ca")
    return key
