"""LinkSecurity.reload: certificates, CRL and key re-read; a bad file changes nothing."""

from __future__ import annotations

import os
from typing import Any

import attrs
import yaml
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support import node_config, short_tempdir
from tests.tls.pki import shared_pki
from wazuhcluster.errors import ConfigError
from wazuhcluster.homes import make_home
from wazuhcluster.settings import load_settings
from wazuhcluster.tls import certs
from wazuhcluster.tls.feature import LinkSecurity
from wazuhcluster.tls.keyring import key_id

NEW_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA987654"


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = short_tempdir(self)
        config = node_config(base, node_name="master")
        self.home = config.home
        self.certs = os.path.join(self.home, "etc", "certs")
        shared_pki().write_node(self.certs, "master")
        self.write_settings(mode="prefer", key_overlap=30)
        self.config = attrs.evolve(config, settings=load_settings(self.home))
        self.clock = Clock()
        self.security = LinkSecurity(self.config, self.clock, "Master")
        self.hooks: list[bool] = []
        self.security.on_reload.append(self.hooks.append)

    def write_settings(self, **tls: Any) -> None:
        section = {"ca": "etc/certs/ca.pem", "cert": "etc/certs/node.pem",
                   "key": "etc/certs/node.key", "crl": "etc/certs/crl.pem", **tls}
        with open(os.path.join(self.home, "etc", "wazuhcluster.yaml"), "w") as f:
            yaml.safe_dump({"tls": section}, f)

    def test_key_and_crl_reloaded(self) -> None:
        old_id = self.security.ring.current_id
        make_home(self.home, node_name="master", node_type="master", key=NEW_KEY, port=15160)
        certs.write_public(os.path.join(self.certs, "crl.pem"),
                           certs.crl_pem(shared_pki().crl("w2")))
        answer = self.successResultOf(Deferred.fromCoroutine(self.security.reload()))
        self.assertEqual(answer, {"tls": "prefer", "key_changed": True, "keys_held": 2})
        self.assertEqual(self.hooks, [True])
        self.assertEqual(self.security.ring.ids(), [key_id(NEW_KEY.encode()), old_id])
        w2 = shared_pki().nodes["w2"][0]
        self.assertEqual(self.security.revoked_or_expired(w2), "the certificate has been revoked")
        self.assertIsNone(self.security.revoked_or_expired(shared_pki().nodes["w1"][0]))
        self.clock.advance(31)
        self.assertEqual(self.security.ring.ids(), [key_id(NEW_KEY.encode())])

    def test_bad_file_keeps_previous(self) -> None:
        before = self.security.material
        with open(os.path.join(self.certs, "crl.pem"), "w") as f:
            f.write("garbage")
        answer = self.successResultOf(Deferred.fromCoroutine(self.security.reload_logged()))
        self.assertIn("tls.crl", answer["error"])
        self.assertIs(self.security.material, before)
        self.assertEqual(self.hooks, [])

    def test_mode_change_needs_restart(self) -> None:
        self.write_settings(mode="require")
        failure = self.failureResultOf(Deferred.fromCoroutine(self.security.reload()),
                                       ConfigError)
        self.assertIn("needs a restart", str(failure.value))


class AfterReloadTests(SynchronousTestCase):
    """After a reload, links whose peer certificate is now revoked are closed."""

    def test_worker_closes_link_to_revoked_master(self) -> None:
        from tests.tls.test_handshake import handshake
        from wazuhcluster.tls.feature import WorkerLinkSecurity

        pki = shared_pki()
        out = handshake(pki.material("master"), pki.material("w1"))
        closed: list[str] = []

        class Peer:
            transport = out.client

            def disconnect(self, reason: str) -> None:
                closed.append(reason)

        class Node:
            peer = Peer()
            tag = "Worker w1"

        class Security:
            material = pki.material("w1", revoked=("master",))

            def revoked_or_expired(self, cert: Any) -> str | None:
                return LinkSecurity.revoked_or_expired(self, cert)  # type: ignore[arg-type]

            clock = Clock()

        extension = WorkerLinkSecurity(Node(), Security())
        extension.after_reload(False)
        self.assertEqual(closed, ["the certificate has been revoked"])
        Security.material = pki.material("w1")
        closed.clear()
        extension.after_reload(False)
        self.assertEqual(closed, [])


class StartupTests(SynchronousTestCase):
    """A bad tls setting or file stops start-up with one line."""

    def test_bad_mode_and_missing_file(self) -> None:
        from wazuhcluster.tls.feature import _security

        config = node_config(short_tempdir(self), node_name="master")
        for tls, needle in (({"mode": "bogus"}, "tls.mode = 'bogus' is invalid"),
                            ({"mode": "require", "ca": "nope.pem", "cert": "n.pem",
                              "key": "n.key"}, "tls.ca")):
            bad = attrs.evolve(config, settings={"tls": tls})
            with self.assertRaises(SystemExit) as caught:
                _security(bad, Clock(), "Master", lambda f, *a: f(*a))
            text = str(caught.exception)
            self.assertTrue(text.startswith("wazuhcluster: configuration error: "), text)
            self.assertIn(needle, text)
            self.assertNotIn("\n", text)
