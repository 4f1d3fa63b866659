"""Mutual TLS, verified node names, reload and key rotation with real processes on 127.0.0.1.

Certificates come from a throwaway CA made by the test run (tests/tls/pki.py); nothing with a
private key is stored in the repository.
"""

from __future__ import annotations

import json
import os
import signal
import struct
from typing import Any

import yaml
from twisted.trial.unittest import TestCase

from tests.integration.harness import Cluster, NodeProcess, random_key
from tests.integration.test_integrity_processes import FAST_INTEGRITY, tree, write
from tests.tls.pki import shared_pki
from wazuhcluster.homes import make_home
from wazuhcluster.protocol.chunks import encode_message
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.tls import certs

HEADER = struct.Struct("!II12s")
CONNECTED = r"\[Main\] Successfully connected to master\."
KEEPALIVE_OK = r"\[Keep Alive\] Successful response from master: keepalive"
LOST = r"Disconnected from master|Dropping connection|could not decrypt|Could not connect"


def configure(node: NodeProcess, mode: str | None, *, cert_of: str | None = None,
              key_overlap: float | None = None) -> None:
    """Write the node's certificates (``cert_of``'s, if given) and etc/wazuhcluster.yaml."""
    section: dict[str, Any] = {}
    if mode is not None:
        shared_pki().write_node(os.path.join(node.home, "etc", "certs"), node.name,
                                as_node=cert_of)
        section = {"mode": mode, "ca": "etc/certs/ca.pem", "cert": "etc/certs/node.pem",
                   "key": "etc/certs/node.key", "crl": "etc/certs/crl.pem"}
    if key_overlap is not None:
        section["key_overlap"] = key_overlap
    with open(os.path.join(node.home, "etc", "wazuhcluster.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump({"tls": section}, f)


def tls_cluster(case: TestCase) -> Cluster:
    """A Cluster whose master certificate names 127.0.0.1 (the address workers dial)."""
    return Cluster(case)


class TlsProcessTests(TestCase):
    """Master and workers as processes, TLS per node."""

    timeout = 90

    async def start(self, c: Cluster, master_mode: str,
                    workers: dict[str, tuple[str | None, str | None]]
                    ) -> tuple[NodeProcess, dict[str, NodeProcess]]:
        """Start the master, then ``workers`` (name -> (mode, certificate of))."""
        m = c.add_node("master", "master", tunables=FAST_INTEGRITY)
        configure(m, master_mode)
        m.start()
        await c.wait_ready(m)
        nodes = {}
        for name, (mode, cert_of) in workers.items():
            w = c.add_node(name, tunables=FAST_INTEGRITY)
            configure(w, mode, cert_of=cert_of)
            nodes[name] = w.start()
        return m, nodes

    async def test_prefer_mixes_tls_and_plain_workers(self) -> None:
        """prefer: two TLS workers and one plain worker on the same port all join and all
        receive the master's files; the TLS links drop Fernet, the plain one keeps it; a peer
        speaking exactly as a Wazuh 4.7.5 worker joins too."""
        c = Cluster(self)
        m, ws = await self.start(c, "prefer", {"w1": ("prefer", None), "w2": ("require", None),
                                               "w3": (None, None)})
        await c.wait_listed(m, {"master", "w1", "w2", "w3"})
        write(m, {"etc/rules/local_rules.xml": b"<group name='local'/>\n",
                  "etc/lists/tls-list": b"k:v\n"})
        def same() -> bool:
            wanted = tree(m)
            return "etc/lists/tls-list" in wanted and all(tree(w) == wanted
                                                          for w in ws.values())
        await c.wait_for("every worker to receive the master's files", same, 30)
        for name in ("w1", "w2"):
            await c.wait_log(m, rf"Worker {name} from 127\.0\.0\.1: TLSv1\.3, certificate "
                                r"verified")
            await c.wait_log(m, rf"\[Worker {name}\] \[Main\] Fernet switched off inside TLS")
        self.assertEqual(m.grep(r"Worker w3 from .*certificate verified"), [])
        self.assertEqual(m.grep(r"\[Worker w3\] \[Main\] Fernet switched off"), [])
        for w in ws.values():
            await c.wait_log(w, KEEPALIVE_OK)
            self.assertEqual(w.grep(LOST), [], w.describe())
        # A peer speaking exactly as a Wazuh 4.7.5 worker (plain TCP, Fernet, no wzc_caps)
        # joins the same port while the TLS workers are connected.
        raw = await c.raw_connect()
        fernet = FernetCodec(c.key.encode())
        hello = fernet.encrypt(b"w4 wazuh worker 4.7.5")
        for frame in encode_message(42, b"hello", len(hello), hello):
            raw.send(frame)
        await c.wait_for("the master's answer to a plain hello", lambda: len(raw.received) > 20)
        counter, length, command = HEADER.unpack(bytes(raw.received[:20]))
        await c.wait_for("the whole answer", lambda: len(raw.received) >= 20 + length)
        self.assertEqual((counter, command.rstrip(b"-").strip()), (42, b"ok"))
        self.assertEqual(fernet.decrypt(bytes(raw.received[20:20 + length])),
                         b"Client w4 added")
        await c.wait_listed(m, {"master", "w1", "w2", "w3", "w4"})

    async def test_require_refuses_plain_worker(self) -> None:
        """require: the plain worker is refused with Error 3060 on both sides (a Wazuh-style
        peer gets it as an err it can decrypt); the TLS one joins."""
        c = Cluster(self)
        m, ws = await self.start(c, "require", {"w1": ("require", None), "w3": (None, None)})
        await c.wait_log(ws["w3"], r"Could not connect to master: Error 3060 - TLS is required "
                                   r"on the cluster link")
        await c.wait_log(m, r"Refused worker w3 from 127\.0\.0\.1: Error 3060")
        await c.wait_listed(m, {"master", "w1"})
        await c.wait_log(ws["w1"], CONNECTED)
        # A Wazuh 4.7.5-style peer reads the reason too: an err it can decrypt, code 3060.
        raw = await c.raw_connect()
        fernet = FernetCodec(c.key.encode())
        hello = fernet.encrypt(b"w4 wazuh worker 4.7.5")
        for frame in encode_message(7, b"hello", len(hello), hello):
            raw.send(frame)
        await c.wait_for("the master's answer to a plain hello", lambda: len(raw.received) > 20)
        counter, length, command = HEADER.unpack(bytes(raw.received[:20]))
        await c.wait_for("the whole answer", lambda: len(raw.received) >= 20 + length)
        self.assertEqual((counter, command.rstrip(b"-").strip()), (7, b"err"))
        error = json.loads(fernet.decrypt(bytes(raw.received[20:20 + length])))
        self.assertEqual(error["__wazuh_exception__"]["__object__"]["code"], 3060)

    async def test_worker_with_another_workers_certificate_refused(self) -> None:
        """w2 presenting w1's (valid) certificate is refused with Error 3061; w1 joins."""
        c = Cluster(self)
        m, ws = await self.start(c, "require", {"w1": ("require", None),
                                                "w2": ("require", "w1")})
        await c.wait_log(ws["w2"], r"Could not connect to master: Error 3061 - Node name does "
                                   r"not match its certificate: .*CN=w1.*not for w2")
        await c.wait_log(m, r"Refused worker w2 from 127\.0\.0\.1: Error 3061")
        await c.wait_listed(m, {"master", "w1"})

    async def test_sighup_with_crl_drops_revoked_worker_only(self) -> None:
        """A CRL revoking w2 and SIGHUP on the master: w2's link is closed and its reconnects
        are refused at the handshake; w1 stays connected throughout."""
        c = Cluster(self)
        m, ws = await self.start(c, "require", {"w1": ("require", None),
                                                "w2": ("require", None)})
        await c.wait_listed(m, {"master", "w1", "w2"})
        w1_mark, m_mark = ws["w1"].log_size(), m.log_size()
        pki = shared_pki()
        certs.write_public(os.path.join(m.home, "etc", "certs", "crl.pem"),
                           certs.crl_pem(pki.crl("w2")))
        m.send_signal(signal.SIGHUP)
        await c.wait_log(m, r"\[Main\] Reloaded: certificates re-read, CRL 1 revoked",
                         since=m_mark)
        await c.wait_log(m, r"\[Worker w2\] \[Main\] Closing the connection: the certificate "
                            r"has been revoked \(Error 3062\)", since=m_mark)
        await c.wait_listed(m, {"master", "w1"})
        await c.wait_log(m, r"Refused TLS connection from 127\.0\.0\.1: Error 3062 - TLS "
                            r"certificate refused: the certificate has been revoked",
                         since=m_mark)
        await c.wait_log(ws["w2"], r"TLS connection to master 127\.0\.0\.1:\d+ failed: Error "
                                   r"3062 .*says our certificate is revoked")
        await c.wait_log(ws["w1"], KEEPALIVE_OK, since=w1_mark, count=2)
        self.assertEqual(ws["w1"].grep(LOST, w1_mark), [])
        self.assertEqual(await c.node_names(m), {"master", "w1"})

    async def test_rolling_key_rotation_keeps_every_link(self) -> None:
        """Three nodes get a new cluster key one by one (edit ossec.conf, --reload): no link
        is lost at any step, keepalives keep working, and after the overlap the old key is
        forgotten everywhere while the links stay up."""
        c = Cluster(self)
        m = c.add_node("master", "master")
        configure(m, None, key_overlap=12)
        m.start()
        await c.wait_ready(m)
        workers = []
        for name in ("w1", "w2"):
            w = c.add_node(name)
            configure(w, None, key_overlap=12)
            workers.append(w.start())
        await c.wait_listed(m, {"master", "w1", "w2"})
        for w in workers:
            await c.wait_log(w, CONNECTED)
        new_key = random_key()
        for node in (workers[0], m, workers[1]):
            marks = {w.name: w.log_size() for w in workers}
            make_home(node.home, node_name=node.name, node_type=node.role, key=new_key,
                      port=c.port)
            out, err, code = await c.control(node, "--reload")
            self.assertEqual(code, 0, err)
            self.assertIn('"key_changed": true', out)
            for w in workers:
                await c.wait_log(w, KEEPALIVE_OK, since=marks[w.name])
        for node in (m, *workers):
            await c.wait_log(node, r"The previous cluster key is no longer accepted", timeout=30)
        marks = {w.name: w.log_size() for w in workers}
        for w in workers:
            await c.wait_log(w, KEEPALIVE_OK, since=marks[w.name], count=2)
        for w in workers:
            self.assertEqual(w.grep(CONNECTED + "|" + LOST), w.grep(CONNECTED)[:1],
                             f"{w.name} lost its link:\n{w.describe()}")
        self.assertEqual(m.grep(r"Worker disconnected|Dropping connection"), [])
        self.assertEqual(await c.node_names(m), {"master", "w1", "w2"})
        self.assertNotIn(new_key, "\n".join(m.log_lines()))
