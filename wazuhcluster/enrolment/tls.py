"""TLS of the registration port: the manager certificate, the server context, host checks.

As authd: the manager certificate and key (``ssl_manager_cert``/``ssl_manager_key``) are created
self-signed at first start when missing; TLS 1.2 only unless ``ssl_auto_negotiate``; the cipher
list of ``<ciphers>``; with ``ssl_agent_ca`` agents must present a certificate signed by that CA,
and with ``ssl_verify_host`` as well the certificate must name the address the agent connects
from (checked with service-identity: an IP subjectAltName; a common name equal to the address is
accepted too, as authd accepts it).
"""

from __future__ import annotations

import datetime
import os
import tempfile
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

from wazuhcluster.enrolment.authconfig import AuthConfig


def _write_private(path: str, data: bytes) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=directory)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


def ensure_manager_certificate(cert_path: str, key_path: str, days: int = 365) -> bool:
    """Create a self-signed manager certificate and key when either is missing (blocking).

    :returns: True when they were created.
    """
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Wazuh"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "wazuhcluster-enrolment")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256()))
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption()))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return True


@implementer(IOpenSSLContextFactory)
class ServerContextFactory:
    """The registration port's TLS context (built once, at start)."""

    def __init__(self, auth: AuthConfig) -> None:
        ctx = SSL.Context(SSL.TLS_METHOD)
        if not auth.ssl_auto_negotiate:
            ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
            ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        else:
            ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        ctx.set_cipher_list(auth.ciphers.encode())
        ctx.use_certificate_chain_file(auth.ssl_manager_cert)
        ctx.use_privatekey_file(auth.ssl_manager_key)
        ctx.check_privatekey()
        if auth.ssl_agent_ca:
            ctx.load_verify_locations(auth.ssl_agent_ca)
            ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                           lambda conn, cert, errno, depth, ok: bool(ok))
        self._ctx = ctx

    def getContext(self) -> SSL.Context:
        """Twisted's context-factory interface."""
        return self._ctx


def certificate_names_host(cert: Any, address: str) -> bool:
    """True when the peer certificate names ``address`` (service-identity IP check, or CN)."""
    if cert is None:
        return False
    from service_identity import VerificationError
    from service_identity.cryptography import verify_certificate_ip_address

    x509cert = cert.to_cryptography() if isinstance(cert, crypto.X509) else cert
    try:
        verify_certificate_ip_address(x509cert, address)
        return True
    except (VerificationError, ValueError):
        pass
    from cryptography.x509.oid import NameOID

    names = x509cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return any(n.value == address for n in names)


def client_context(ca: str | None = None, cert: str | None = None,
                   key: str | None = None) -> SSL.Context:
    """An agent's TLS context (agent side: CLI, simulator, tests). The manager certificate
    is checked only when ``ca`` is given, as agent-auth does with ``-v``."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    if cert and key:
        ctx.use_certificate_chain_file(cert)
        ctx.use_privatekey_file(key)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.set_verify(SSL.VERIFY_PEER, lambda conn, c, errno, depth, ok: bool(ok))
    return ctx
