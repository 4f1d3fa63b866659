"""``wazuhcluster-certs``: CA, node certificates with their names and addresses, 0600 keys."""

from __future__ import annotations

import io
import ipaddress
import os
import stat
from contextlib import redirect_stderr, redirect_stdout

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from tests.support import short_tempdir
from wazuhcluster.cli.certs import main
from wazuhcluster.tls import certs
from wazuhcluster.tls.contexts import certificate_matches_name


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(argv))
        except SystemExit as e:
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


class CertsCliTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = os.path.join(short_tempdir(self), "pki")

    def mode(self, name: str) -> int:
        return stat.S_IMODE(os.stat(os.path.join(self.dir, name)).st_mode)

    def test_init_issue_revoke(self) -> None:
        code, out, err = run("--dir", self.dir, "init-ca", "--days", "10")
        self.assertEqual(code, 0, err)
        self.assertEqual(self.mode("ca.key"), 0o600)
        ca = certs.load_cert(os.path.join(self.dir, "ca.pem"))
        code, _, err = run("--dir", self.dir, "issue", "master", "--ip", "127.0.0.1",
                           "--dns", "manager.example", "--days", "5")
        self.assertEqual(code, 0, err)
        self.assertEqual(self.mode("master.key"), 0o600)
        cert = certs.load_cert(os.path.join(self.dir, "master.pem"))
        self.assertEqual(cert.issuer, ca.subject)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(sans.get_values_for_type(x509.DNSName), ["master", "manager.example"])
        self.assertEqual(sans.get_values_for_type(x509.IPAddress),
                         [ipaddress.ip_address("127.0.0.1")])
        self.assertTrue(certificate_matches_name(cert, "master"))
        days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
        self.assertEqual(days, 5)
        code, out, err = run("--dir", self.dir, "revoke", "master")
        self.assertEqual(code, 0, err)
        self.assertIn("revoked", out)
        with open(os.path.join(self.dir, "crl.pem"), "rb") as f:
            crl = x509.load_pem_x509_crl(f.read())
        self.assertIsNotNone(crl.get_revoked_certificate_by_serial_number(cert.serial_number))

    def test_errors_are_one_line(self) -> None:
        code, _, err = run("--dir", self.dir, "issue", "w1")
        self.assertEqual(code, 1)
        self.assertIn("init-ca", err)
        self.assertEqual(err.count("\n"), 1)
        run("--dir", self.dir, "init-ca")
        code, _, err = run("--dir", self.dir, "init-ca")
        self.assertEqual(code, 1)
        self.assertIn("already exists", err)
        code, _, err = run("--dir", self.dir, "issue", "w1", "--ip", "not-an-ip")
        self.assertEqual(code, 1)
        self.assertIn("--ip", err)
        code, _, err = run("--dir", self.dir, "issue", "../evil")
        self.assertEqual(code, 1)
