"""The ``tls`` section: defaults, relative paths, and one clear line per bad value."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.support import short_tempdir
from tests.tls.pki import shared_pki
from wazuhcluster.errors import ConfigError
from wazuhcluster.tls import certs
from wazuhcluster.tls.settings import Mode, load_material, parse_settings


class SettingsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = short_tempdir(self)

    def parse(self, **tls: object) -> object:
        return parse_settings({"tls": tls}, self.home)

    def assertOneLine(self, error: ConfigError, *needles: str) -> None:
        text = str(error)
        self.assertNotIn("\n", text)
        for needle in needles:
            self.assertIn(needle, text)

    def test_default_is_off(self) -> None:
        tls = parse_settings({}, self.home)
        self.assertIs(tls.mode, Mode.OFF)
        self.assertFalse(tls.enabled)
        self.assertIs(parse_settings({"tls": {"mode": False}}, self.home).mode, Mode.OFF)

    def test_relative_paths(self) -> None:
        tls = parse_settings({"tls": {"mode": "prefer", "ca": "certs/ca.pem",
                                      "cert": "/abs/n.pem", "key": "certs/n.key"}}, self.home)
        self.assertEqual(tls.ca, os.path.join(self.home, "certs/ca.pem"))
        self.assertEqual(tls.cert, "/abs/n.pem")

    def test_bad_values(self) -> None:
        cases = [
            ({"mode": "maybe"}, ("tls.mode", "'maybe'", "prefer")),
            ({"mode": "require"}, ("tls.ca is missing",)),
            ({"mode": "off", "key_overlap": -1}, ("tls.key_overlap",)),
            ({"mode": "off", "key_overlap": "soon"}, ("tls.key_overlap",)),
            ({"mode": "off", "ca": 3}, ("tls.ca",)),
            ({"mode": "off", "verify": "no"}, ("tls.verify is not a known setting",)),
        ]
        for tls, needles in cases:
            with self.assertRaises(ConfigError, msg=repr(tls)) as caught:
                parse_settings({"tls": tls}, self.home)
            self.assertOneLine(caught.exception, *needles)

    def write(self, node: str = "w1") -> None:
        shared_pki().write_node(os.path.join(self.home, "certs"), node)

    def settings(self, **extra: object) -> object:
        base = {"mode": "prefer", "ca": "certs/ca.pem", "cert": "certs/node.pem",
                "key": "certs/node.key", "crl": "certs/crl.pem"}
        return parse_settings({"tls": {**base, **extra}}, self.home)

    def test_material_loads(self) -> None:
        self.write()
        material = load_material(self.settings())  # type: ignore[arg-type]
        self.assertEqual(material.cert.serial_number,
                         shared_pki().nodes["w1"][0].serial_number)
        self.assertFalse(material.revoked(material.cert.serial_number))

    def test_bad_files(self) -> None:
        self.write()
        other = os.path.join(self.home, "certs", "other.key")
        certs.write_private(other, certs.new_key())
        garbage = os.path.join(self.home, "certs", "garbage.pem")
        with open(garbage, "w") as f:
            f.write("not pem\n")
        cases = [
            ({"ca": "certs/missing.pem"}, ("tls.ca", "cannot be read")),
            ({"cert": "certs/garbage.pem"}, ("tls.cert", "not a valid PEM")),
            ({"key": "certs/other.key"}, ("does not belong to tls.cert",)),
        ]
        for extra, needles in cases:
            with self.assertRaises(ConfigError, msg=repr(extra)) as caught:
                load_material(self.settings(**extra))  # type: ignore[arg-type]
            self.assertOneLine(caught.exception, *needles)

    def test_crl_of_another_ca_refused(self) -> None:
        from tests.tls.pki import other_pki
        self.write()
        stranger = other_pki()
        certs.write_public(os.path.join(self.home, "certs", "crl.pem"),
                           certs.crl_pem(stranger.crl("w2")))
        with self.assertRaises(ConfigError) as caught:
            load_material(self.settings())  # type: ignore[arg-type]
        self.assertOneLine(caught.exception, "tls.crl", "not signed by the CA")
