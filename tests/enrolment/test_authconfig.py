"""The <auth> block: Wazuh's defaults, each option, one clear line per bad value."""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.enrolment.authconfig import (
    DEFAULT_CIPHERS,
    AuthConfig,
    ForceOptions,
    load_auth_config,
    parse_interval,
)
from wazuhcluster.errors import ConfigError


class AuthConfigTests(SynchronousTestCase):
    """load_auth_config."""

    def load(self, auth: str | None, settings: dict[str, Any] | None = None) -> AuthConfig:
        home = self.mktemp()
        os.makedirs(os.path.join(home, "etc"))
        path = os.path.join(home, "etc", "ossec.conf")
        with open(path, "w") as f:
            f.write("<ossec_config><cluster><name>x</name></cluster></ossec_config>\n")
            if auth is not None:
                f.write(f"<ossec_config><auth>{auth}</auth></ossec_config>\n")
        self.home = home
        return load_auth_config(path, home, settings)

    def error(self, auth: str, settings: dict[str, Any] | None = None) -> str:
        with self.assertRaises(ConfigError) as caught:
            self.load(auth, settings)
        text = str(caught.exception)
        self.assertNotIn("\n", text)
        return text

    def test_defaults(self) -> None:
        """Without <auth>, Wazuh's defaults."""
        config = self.load(None)
        self.assertEqual((config.disabled, config.port, config.use_source_ip, config.purge,
                          config.use_password, config.ssl_verify_host, config.ciphers),
                         (False, 1515, False, False, False, False, DEFAULT_CIPHERS))
        self.assertEqual(config.force, ForceOptions(True, True, True, 3600, 3600))
        self.assertEqual(config.ssl_manager_cert,
                         os.path.join(self.home, "etc", "sslmanager.cert"))

    def test_options(self) -> None:
        """Every option read."""
        config = self.load(
            "<disabled>no</disabled><port>1600</port><use_source_ip>yes</use_source_ip>"
            "<purge>yes</purge><use_password>yes</use_password><ciphers>HIGH</ciphers>"
            "<ssl_verify_host>yes</ssl_verify_host><ssl_manager_cert>/c.pem</ssl_manager_cert>"
            "<ssl_manager_key>k.pem</ssl_manager_key><ssl_auto_negotiate>yes"
            "</ssl_auto_negotiate><ipv6>no</ipv6><limit_maxagents>yes</limit_maxagents>"
            "<force><enabled>no</enabled><key_mismatch>no</key_mismatch>"
            "<disconnected_time enabled='no'>1h</disconnected_time>"
            "<after_registration_time>2d</after_registration_time></force>"
            "<agents><allow_higher_versions>yes</allow_higher_versions></agents>",
            {"enrolment": {"max_waiting": 7, "forward_deadline": 2.5}})
        self.assertEqual((config.port, config.use_source_ip, config.purge, config.use_password,
                          config.ciphers, config.ssl_verify_host, config.ssl_auto_negotiate,
                          config.allow_higher_versions, config.max_waiting,
                          config.forward_deadline),
                         (1600, True, True, True, "HIGH", True, True, True, 7, 2.5))
        self.assertEqual(config.ssl_manager_cert, "/c.pem")
        self.assertEqual(config.ssl_manager_key, os.path.join(self.home, "k.pem"))
        self.assertEqual(config.force, ForceOptions(False, False, False, 3600, 172800))

    def test_bad_values(self) -> None:
        """One line naming the element for each bad value."""
        cases = {
            "<port>0</port>": "<auth><port> = '0' is invalid",
            "<port>abc</port>": "<auth><port> = 'abc' is invalid",
            "<purge>maybe</purge>": "<auth><purge> = 'maybe' is invalid: expected 'yes' or 'no'",
            "<bogus>1</bogus>": "<auth><bogus> is not a valid element",
            "<ssl_agent_ca>/no/such/ca.pem</ssl_agent_ca>": "<auth><ssl_agent_ca>",
            "<force><enabled>1</enabled></force>": "<auth><force><enabled> = '1' is invalid",
            "<force><disconnected_time>1h</disconnected_time></force>":
                "needs the attribute enabled",
            "<force><disconnected_time enabled='yes'>soon</disconnected_time></force>":
                "<auth><force><disconnected_time> = 'soon' is invalid",
            "<force><after_registration_time>1y</after_registration_time></force>":
                "<auth><force><after_registration_time> = '1y' is invalid",
            "<force><later>1</later></force>": "<auth><force><later> is not a valid element",
            "<agents><x>1</x></agents>": "<auth><agents><x> is not a valid element",
        }
        for auth, expected in cases.items():
            self.assertIn(expected, self.error(auth), auth)
        self.assertIn("enrolment.max_waiting = 0 is invalid",
                      self.error("", {"enrolment": {"max_waiting": 0}}))
        self.assertIn("enrolment.forward_deadline = 'x' is invalid",
                      self.error("", {"enrolment": {"forward_deadline": "x"}}))
        self.assertIn("enrolment.nope is not a known setting",
                      self.error("", {"enrolment": {"nope": 1}}))

    def test_intervals(self) -> None:
        """Wazuh's time units."""
        self.assertEqual([parse_interval(t) for t in ("90", "90s", "10m", "1h", "2d", "x", "")],
                         [90, 90, 600, 3600, 172800, None, None])
