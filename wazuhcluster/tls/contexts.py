"""OpenSSL contexts for the cluster link, and the connection creators Twisted's TLS uses.

* Both sides: TLS 1.3 preferred, TLS 1.2 the minimum; the peer's chain is checked against
  ``tls.ca`` (and the CRL, when one is configured) by OpenSSL.
* Master (server): a client certificate from the CA is required. The name in it is checked
  against the ``hello`` node name later (:func:`certificate_matches_name`).
* Worker (client): after the handshake the master's certificate must name the address the
  worker dialled (service-identity: ``verify_ip_address`` / ``verify_hostname``).

The creators hold the *current* context; a reload swaps it, new connections use the new one and
existing ones keep theirs.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509, X509StoreFlags
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import verify_certificate_hostname
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.tls.settings import TlsMaterial

#: OpenSSL's X509_V_ERR_* codes we explain in log lines.
VERIFY_ERRORS: dict[int, str] = {
    2: "the issuer certificate is not known",
    3: "no CRL for the CA is loaded",
    7: "the certificate signature is invalid",
    9: "the certificate is not yet valid",
    10: "the certificate has expired",
    11: "the CRL is not yet valid",
    12: "the CRL has expired: publish a fresh CRL",
    18: "the certificate is self-signed and not trusted",
    19: "the chain ends in a CA that is not trusted (wrong CA?)",
    20: "the certificate is not signed by the configured CA (wrong CA?)",
    21: "the certificate is not signed by the configured CA (wrong CA?)",
    23: "the certificate has been revoked",
    24: "the certificate is not allowed to sign",
    26: "the certificate is not meant for this purpose (serverAuth/clientAuth)",
}


class LinkInfo:
    """What one TLS connection learned during its handshake (the connection's app data)."""

    def __init__(self, tls_protocol: Any) -> None:
        self.tls_protocol = tls_protocol
        self.verify_error: str | None = None
        self.handshake_done = False


def conn_info(conn: SSL.Connection) -> LinkInfo | None:
    """The LinkInfo of an OpenSSL connection (kept on Twisted's TLS protocol, its app data)."""
    data = conn.get_app_data()
    if isinstance(data, LinkInfo):
        return data
    info = getattr(data, "wzc_link", None)
    return info if isinstance(info, LinkInfo) else None


def new_connection(context: SSL.Context, tls_protocol: Any) -> SSL.Connection:
    """An OpenSSL connection for ``tls_protocol``, with a fresh LinkInfo."""
    connection = SSL.Connection(context, None)
    info = LinkInfo(tls_protocol)
    if tls_protocol is not None:
        tls_protocol.wzc_link = info
    connection.set_app_data(info)  # Twisted replaces it with tls_protocol
    return connection


def _verify_callback(conn: SSL.Connection, cert: X509, errnum: int, depth: int,
                     ok: int) -> bool:
    if not ok:
        info = conn_info(conn)
        if info is not None and info.verify_error is None:
            subject = cert.to_cryptography().subject.rfc4514_string()
            reason = VERIFY_ERRORS.get(errnum, f"verification error {errnum}")
            info.verify_error = f"{reason} ({subject})"
    return bool(ok)


def _info_callback(conn: SSL.Connection, where: int, ret: int) -> None:
    if where & SSL.SSL_CB_HANDSHAKE_DONE:
        info = conn_info(conn)
        if info is not None:
            info.handshake_done = True


def make_context(material: TlsMaterial, *, server: bool,
                 max_version: int | None = None) -> SSL.Context:
    """An OpenSSL context with our certificate, the CA store, the CRL and TLS >= 1.2."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    if max_version is not None:
        ctx.set_max_proto_version(max_version)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    ctx.use_certificate(material.chain[0])
    for extra in material.chain[1:]:
        ctx.add_extra_chain_cert(extra)
    ctx.use_privatekey(material.key)
    ctx.check_privatekey()
    store = ctx.get_cert_store()
    assert store is not None
    for ca in material.cas:
        store.add_cert(X509.from_cryptography(ca))
    if material.crls:
        for crl in material.crls:
            store.add_crl(crl)
        store.set_flags(X509StoreFlags.CRL_CHECK)
    mode = SSL.VERIFY_PEER
    if server:
        mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        ctx.set_session_id(b"wazuhcluster")
    ctx.set_verify(mode, _verify_callback)
    ctx.set_info_callback(_info_callback)
    return ctx


@implementer(IOpenSSLServerConnectionCreator)
class ServerCreator:
    """The master's side: a connection from the current server context."""

    def __init__(self, material: TlsMaterial) -> None:
        self.material = material
        self.context = make_context(material, server=True)

    def reload(self, material: TlsMaterial) -> None:
        """Use ``material`` for new connections."""
        self.context = make_context(material, server=True)
        self.material = material

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return new_connection(self.context, tlsProtocol)


@implementer(IOpenSSLClientConnectionCreator)
class ClientCreator:
    """The worker's side: a connection that checks the master's certificate names ``host``.

    :param host: the address the worker dials (``<nodes><node>``): an IP address or a name.
    """

    def __init__(self, material: TlsMaterial, host: str, max_version: int | None = None) -> None:
        self.host = host
        self._max_version = max_version
        try:
            ipaddress.ip_address(host)
            self.host_is_ip = True
        except ValueError:
            self.host_is_ip = False
        self.material = material
        self.context = self._context(material)

    def _context(self, material: TlsMaterial) -> SSL.Context:
        ctx = make_context(material, server=False, max_version=self._max_version)
        ctx.set_info_callback(self._identity)
        return ctx

    def reload(self, material: TlsMaterial) -> None:
        """Use ``material`` for new connections."""
        self.context = self._context(material)
        self.material = material

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = new_connection(self.context, tlsProtocol)
        if not self.host_is_ip:
            connection.set_tlsext_host_name(self.host.encode("idna"))
        connection.set_connect_state()
        return connection

    def _identity(self, conn: SSL.Connection, where: int, ret: int) -> None:
        if not where & SSL.SSL_CB_HANDSHAKE_DONE:
            return
        info = conn_info(conn)
        if info is None:
            return
        info.handshake_done = True
        try:
            if self.host_is_ip:
                verify_ip_address(conn, self.host)
            else:
                verify_hostname(conn, self.host)
        except (VerificationError, CertificateError) as e:
            info.verify_error = (f"the master's certificate does not name {self.host}, the "
                                 f"address we dialled ({e})")
            info.tls_protocol.failVerification(Failure(e))


def certificate_matches_name(cert: x509.Certificate, name: str) -> bool:
    """True if ``cert`` names node ``name`` (service-identity DNS-ID match on subjectAltName).

    Node names that are not valid DNS names (Wazuh allows e.g. ``_`` and ``!``) are compared
    exactly with the certificate's DNS names instead.
    """
    try:
        verify_certificate_hostname(cert, name)
        return True
    except (VerificationError, CertificateError):
        return False
    except ValueError:
        pass
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return name in sans.get_values_for_type(x509.DNSName)


def describe_failure(reason: Failure | BaseException | None, info: LinkInfo | None,
                     side: str) -> str:
    """One human line for why a TLS connection ended before or during the handshake.

    :param side: ``master`` or ``worker``: who is describing (names the other side).
    """
    if info is not None and info.verify_error:
        return info.verify_error
    error = reason.value if isinstance(reason, Failure) else reason
    text = str(error) if error is not None else "connection closed"
    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list):
        parts = [str(item[2]) for item in error.args[0] if len(item) >= 3]
        text = "; ".join(p for p in parts if p) or text
    other = "worker" if side == "master" else "master"
    lowered = text.lower()
    hints = (
        ("certificate revoked", f"the {other} says our certificate is revoked"),
        ("certificate expired", f"the {other} says our certificate has expired"),
        ("unknown ca", f"the {other} does not trust the CA of our certificate (wrong CA?)"),
        ("certificate required", f"the {other} requires a client certificate"),
        ("peer did not return a certificate", "the peer sent no client certificate"),
        ("unsupported protocol", "no common TLS version (TLS 1.2 is the minimum)"),
        ("protocol version", "no common TLS version (TLS 1.2 is the minimum)"),
        ("bad certificate", f"the {other} refused our certificate"),
        ("wrong version number", f"the {other} does not speak TLS on this port"),
        ("packet length too long", f"the {other} does not speak TLS on this port"),
    )
    for needle, explanation in hints:
        if needle in lowered:
            return f"{explanation} ({text})"
    return text
