"""The TLS link in memory (iosim): what is accepted and what is refused, with which reason."""

from __future__ import annotations

from typing import Any

import attrs
from OpenSSL import SSL
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.support import connected_pair
from tests.tls.pki import Pki, other_pki, shared_pki
from wazuhcluster.errors import ClusterError
from wazuhcluster.protocol import messages
from wazuhcluster.tls.contexts import ClientCreator, ServerCreator, certificate_matches_name
from wazuhcluster.tls.feature import MasterLinkSecurity
from wazuhcluster.tls.link import SNIFF_BYTES, TlsTap, link_info, looks_like_tls
from wazuhcluster.tls.settings import Mode, TlsMaterial, TlsSettings


class Recorder(Protocol):
    """The cluster protocol's stand-in: records bytes and the end."""

    def __init__(self) -> None:
        self.data = b""
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


@attrs.define
class Outcome:
    server: TLSMemoryBIOProtocol
    client: TLSMemoryBIOProtocol
    server_app: Recorder
    client_app: Recorder
    server_reports: list[str]
    client_reports: list[str]


def handshake(server_material: TlsMaterial, client_material: TlsMaterial, *,
              host: str = "127.0.0.1", client_context: SSL.Context | None = None) -> Outcome:
    """Connect a master-side and a worker-side TLS protocol in memory and pump until idle."""
    server_reports: list[str] = []
    client_reports: list[str] = []
    server_app, client_app = Recorder(), Recorder()
    server_creator = ServerCreator(server_material)
    client_creator = ClientCreator(client_material, host)
    if client_context is not None:
        client_context.set_info_callback(client_creator._identity)
        client_creator.context = client_context

    def server() -> TLSMemoryBIOProtocol:
        return TLSMemoryBIOProtocol(TLSMemoryBIOFactory(server_creator, False, Factory()),
                                    TlsTap(server_app, server_reports.append, "master"))

    def client() -> TLSMemoryBIOProtocol:
        return TLSMemoryBIOProtocol(TLSMemoryBIOFactory(client_creator, True, Factory()),
                                    TlsTap(client_app, client_reports.append, "worker"))

    s, c, pump = connected_pair(server, client, Clock())
    c.write(b"hello from the worker")
    pump.flush()
    return Outcome(s, c, server_app, client_app, server_reports, client_reports)


class HandshakeTests(SynchronousTestCase):
    """Mutual TLS between a master and a worker certificate of the same or another CA."""

    def setUp(self) -> None:
        self.pki: Pki = shared_pki()

    def test_good_pair_speaks_tls13(self) -> None:
        """Certificates of the cluster CA: TLS 1.3, both sides verified, bytes flow."""
        out = handshake(self.pki.material("master"), self.pki.material("w1"))
        self.assertEqual(out.server_app.data, b"hello from the worker")
        self.assertEqual(out.server._tlsConnection.get_protocol_version_name(), "TLSv1.3")
        self.assertEqual(out.server_reports, [])
        self.assertEqual(out.client_reports, [])
        cert = out.server.getPeerCertificate().to_cryptography()
        self.assertEqual(cert.serial_number, self.pki.nodes["w1"][0].serial_number)

    def test_wrong_ca_worker_refused(self) -> None:
        """A worker certificate from another CA is refused by the master, with the reason."""
        stranger = other_pki()
        out = handshake(self.pki.material("master"),
                        stranger.material("w1", trust=self.pki))
        self.assertEqual(out.server_app.data, b"")
        self.assertIsNotNone(out.server_app.lost)
        self.assertEqual(len(out.server_reports), 1, out.server_reports)
        self.assertIn("not signed by the configured CA", out.server_reports[0])
        self.assertEqual(len(out.client_reports), 1, out.client_reports)
        self.assertIn("does not trust the CA", out.client_reports[0])

    def test_wrong_ca_master_refused_by_worker(self) -> None:
        """A master certificate from another CA is refused by the worker."""
        stranger = other_pki()
        out = handshake(stranger.material("master", trust=self.pki),
                        self.pki.material("w1"))
        self.assertEqual(out.server_app.data, b"")
        self.assertIn("not signed by the configured CA", out.client_reports[0])

    def test_expired_worker_refused(self) -> None:
        """An expired worker certificate is refused: 'has expired' on the master, 'says our
        certificate has expired' on the worker."""
        out = handshake(self.pki.material("master"),
                        self.pki.material("w1", cert=self.pki.expired("w1")))
        self.assertEqual(out.server_app.data, b"")
        self.assertIn("has expired", out.server_reports[0])
        self.assertIn("says our certificate has expired", out.client_reports[0])

    def test_revoked_worker_refused(self) -> None:
        """A worker whose certificate the master's CRL lists is refused; w1 is not."""
        master = self.pki.material("master", revoked=("w2",))
        out = handshake(master, self.pki.material("w2"))
        self.assertEqual(out.server_app.data, b"")
        self.assertIn("revoked", out.server_reports[0])
        self.assertIn("says our certificate is revoked", out.client_reports[0])
        ok = handshake(master, self.pki.material("w1"))
        self.assertEqual(ok.server_app.data, b"hello from the worker")

    def test_missing_client_certificate_refused(self) -> None:
        """A worker without a certificate is refused."""
        bare = SSL.Context(SSL.TLS_METHOD)
        bare.set_verify(SSL.VERIFY_NONE)
        out = handshake(self.pki.material("master"), self.pki.material("w1"),
                        client_context=bare)
        self.assertEqual(out.server_app.data, b"")
        self.assertEqual(len(out.server_reports), 1, out.server_reports)
        self.assertIn("no client certificate", out.server_reports[0])
        self.assertIn("requires a client certificate", out.client_reports[0])

    def test_tls11_refused(self) -> None:
        """A client that speaks TLS 1.1 at most gets no connection."""
        old = SSL.Context(SSL.TLS_METHOD)
        old.set_min_proto_version(SSL.TLS1_VERSION)
        old.set_max_proto_version(SSL.TLS1_1_VERSION)
        old.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        old.set_verify(SSL.VERIFY_NONE)
        out = handshake(self.pki.material("master"), self.pki.material("w1"),
                        client_context=old)
        self.assertEqual(out.server_app.data, b"")
        self.assertEqual(len(out.server_reports), 1, out.server_reports)
        self.assertIn("no common TLS version", out.server_reports[0])

    def test_master_must_name_dialled_address(self) -> None:
        """The worker refuses a master certificate that does not name the address it dialled
        (service-identity), even when the CA is right."""
        out = handshake(self.pki.material("master"), self.pki.material("w1"),
                        host="127.0.0.2")
        self.assertIsNotNone(out.client_app.lost)
        self.assertIn("does not name 127.0.0.2", out.client_reports[0])
        named = handshake(self.pki.material("master"), self.pki.material("w1"),
                          host="master")
        self.assertEqual(named.client_reports, [])
        self.assertEqual(named.server_app.data, b"hello from the worker")
        info = link_info(named.client)
        assert info is not None
        self.assertTrue(info.handshake_done)


class _Registry(list[Any]):
    pass


class _Node:
    def __init__(self) -> None:
        self.registry = _Registry()


class _Security:
    def __init__(self, mode: Mode, material: TlsMaterial | None) -> None:
        self.tls = TlsSettings(mode=mode)
        self.material = material

    def revoked_or_expired(self, cert: Any) -> str | None:
        if self.material is not None and self.material.revoked(cert.serial_number):
            return "the certificate has been revoked"
        return None


class _Peer:
    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.peer_address = "127.0.0.1"


class HelloCheckTests(SynchronousTestCase):
    """The master compares the certificate with the name given in ``hello``."""

    def setUp(self) -> None:
        self.pki = shared_pki()

    def check(self, name: str, *, cert_of: str = "w1", mode: Mode = Mode.PREFER,
              revoked: tuple[str, ...] = (), tls: bool = True) -> None:
        material = self.pki.material("master", revoked=revoked)
        extension = MasterLinkSecurity(_Node(), _Security(mode, material))  # type: ignore[arg-type]
        if tls:
            out = handshake(self.pki.material("master"), self.pki.material(cert_of))
            transport: Any = out.server
        else:
            transport = object()
        hello = messages.Hello(name, "wazuh", "worker", "4.7.5")
        extension.check_hello(hello, _Peer(transport))  # type: ignore[arg-type]

    def test_matching_name_accepted(self) -> None:
        self.check("w1")

    def test_name_mismatch_refused(self) -> None:
        """w1's certificate saying it is w2: Error 3061."""
        with self.assertRaises(ClusterError) as caught:
            self.check("w2", cert_of="w1")
        self.assertEqual(caught.exception.code, 3061)
        self.assertIn("CN=w1", str(caught.exception))
        self.assertIn("not for w2", str(caught.exception))

    def test_revoked_at_hello_refused(self) -> None:
        with self.assertRaises(ClusterError) as caught:
            self.check("w2", cert_of="w2", revoked=("w2",))
        self.assertEqual(caught.exception.code, 3062)

    def test_plain_peer_in_require_refused(self) -> None:
        with self.assertRaises(ClusterError) as caught:
            self.check("w3", mode=Mode.REQUIRE, tls=False)
        self.assertEqual(caught.exception.code, 3060)
        self.assertIn("configure tls on w3", str(caught.exception))

    def test_plain_peer_in_prefer_accepted(self) -> None:
        self.check("w3", mode=Mode.PREFER, tls=False)

    def test_certificate_names(self) -> None:
        cert = self.pki.nodes["master"][0]
        self.assertTrue(certificate_matches_name(cert, "master"))
        self.assertFalse(certificate_matches_name(cert, "w1"))
        from wazuhcluster.tls import certs
        odd, _ = certs.issue(self.pki.ca, self.pki.ca_key, "node_1!")
        self.assertTrue(certificate_matches_name(odd, "node_1!"))
        self.assertFalse(certificate_matches_name(odd, "node_2!"))


class SniffTests(SynchronousTestCase):
    """The first eleven bytes tell a TLS ClientHello from a plain Wazuh ``hello`` frame."""

    def test_client_hello_is_tls(self) -> None:
        pki = shared_pki()
        creator = ClientCreator(pki.material("w1"), "127.0.0.1")
        connection = creator.clientConnectionForTLS(None)
        with self.assertRaises(SSL.WantReadError):
            connection.do_handshake()
        first = connection.bio_read(65536)
        self.assertTrue(looks_like_tls(first[:SNIFF_BYTES]))

    def test_plain_hello_is_not_tls(self) -> None:
        import struct
        for counter in (0, 0x16030000, 0x16030101, 0xFFFFFFFF):
            frame = struct.pack("!II12s", counter, 0x01000000 | 120, b"hello -----")
            self.assertFalse(looks_like_tls(frame[:SNIFF_BYTES]), hex(counter))


class SniffingFactoryTests(SynchronousTestCase):
    """The master's listener: plain peers go straight to the cluster protocol; silent ones
    are closed after the deadline."""

    def setUp(self) -> None:
        from twisted.internet.testing import StringTransport

        from wazuhcluster.tls.link import SniffingFactory

        self.clock = Clock()
        self.inner = Recorder()
        self.plain: list[Any] = []
        wrapped = Factory.forProtocol(lambda: self.inner)
        factory = SniffingFactory(wrapped, ServerCreator(shared_pki().material("master")),
                                  self.clock, 5.0, self.plain.append)
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def test_plain_hello_passes_through(self) -> None:
        import struct
        frame = struct.pack("!II12s", 7, 27, b"hello -----") + b"w3 wazuh worker 4.7.5 ...."
        self.proto.dataReceived(frame[:5])
        self.assertEqual(self.inner.data, b"")
        self.proto.dataReceived(frame[5:])
        self.assertEqual(self.inner.data, frame)
        self.assertEqual(self.plain, [self.inner])
        self.clock.advance(10)
        self.assertFalse(self.transport.disconnecting)

    def test_silent_peer_closed(self) -> None:
        self.proto.dataReceived(b"\x16\x03")
        self.clock.advance(5)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.plain, [])
