"""Throwaway PKIs for the TLS tests: made in memory per test run, never stored in the repository."""

from __future__ import annotations

import datetime
import functools
import os

from cryptography import x509

from wazuhcluster.tls import certs
from wazuhcluster.tls.settings import TlsMaterial


class Pki:
    """A CA with node certificates for ``master`` (127.0.0.1), ``w1``, ``w2``, ``w3``."""

    def __init__(self, name: str = "test CA") -> None:
        self.ca, self.ca_key = certs.make_ca(name, days=30)
        self.nodes: dict[str, tuple[x509.Certificate, certs.PrivateKey]] = {}
        for node in ("master", "w1", "w2", "w3"):
            self.nodes[node] = certs.issue(self.ca, self.ca_key, node,
                                           ips=["127.0.0.1"] if node == "master" else [],
                                           days=30)

    def expired(self, node: str) -> tuple[x509.Certificate, certs.PrivateKey]:
        """A certificate for ``node`` that expired yesterday."""
        start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
        return certs.issue(self.ca, self.ca_key, node, days=9, not_before=start)

    def crl(self, *revoked: str) -> x509.CertificateRevocationList:
        """A CRL revoking the certificates of ``revoked`` nodes."""
        return certs.make_crl(self.ca, self.ca_key,
                              [self.nodes[n][0].serial_number for n in revoked])

    def material(self, node: str, *, revoked: tuple[str, ...] = (),
                 cert: tuple[x509.Certificate, certs.PrivateKey] | None = None,
                 trust: Pki | None = None) -> TlsMaterial:
        """What ``node`` loads: its certificate, the CA (or ``trust``'s), an optional CRL."""
        c, k = cert or self.nodes[node]
        ca = (trust or self).ca
        crls = (self.crl(*revoked),) if revoked else ()
        return TlsMaterial(cas=(ca,), chain=(c,), key=k, crls=crls)

    def write_node(self, directory: str, node: str, *, as_node: str | None = None,
                   revoked: tuple[str, ...] = ()) -> None:
        """Write ca.pem, NODE.pem/.key (``as_node``'s files, if given) and crl.pem."""
        os.makedirs(directory, exist_ok=True)
        c, k = self.nodes[as_node or node]
        certs.write_public(os.path.join(directory, "ca.pem"), certs.cert_pem(self.ca))
        certs.write_public(os.path.join(directory, "node.pem"), certs.cert_pem(c))
        certs.write_private(os.path.join(directory, "node.key"), k)
        certs.write_public(os.path.join(directory, "crl.pem"),
                           certs.crl_pem(self.crl(*revoked)))


@functools.cache
def shared_pki() -> Pki:
    """One PKI for the whole test run (key generation is cheap, but not free)."""
    return Pki()


@functools.cache
def other_pki() -> Pki:
    """An unrelated CA ("wrong CA" tests)."""
    return Pki("another CA")
