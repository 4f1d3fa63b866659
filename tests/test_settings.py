"""etc/wazuhcluster.yaml: optional, sections checked, one-line errors."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.errors import ConfigError
from wazuhcluster.settings import load_settings, section


class LoadSettingsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = self.mktemp()
        os.makedirs(os.path.join(self.home, "etc"))

    def write(self, text: str) -> None:
        with open(os.path.join(self.home, "etc", "wazuhcluster.yaml"), "w") as f:
            f.write(text)

    def test_missing_file_is_empty(self) -> None:
        self.assertEqual(load_settings(self.home), {})

    def test_sections_read(self) -> None:
        self.write("tls:\n  mode: prefer\nagent_db:\n")
        self.assertEqual(load_settings(self.home), {"tls": {"mode": "prefer"}, "agent_db": {}})

    def test_unknown_section_named(self) -> None:
        self.write("tsl:\n  mode: prefer\n")
        e = self.assertRaises(ConfigError, load_settings, self.home)
        self.assertIn("'tsl' is not a known section", str(e))
        self.assertNotIn("\n", str(e))

    def test_invalid_yaml_names_line(self) -> None:
        self.write("tls:\n  mode: [prefer\n")
        e = self.assertRaises(ConfigError, load_settings, self.home)
        self.assertIn("not valid YAML at line", str(e))

    def test_top_level_and_section_must_be_mappings(self) -> None:
        self.write("- tls\n")
        self.assertRaises(ConfigError, load_settings, self.home)
        self.write("tls: on\n")
        e = self.assertRaises(ConfigError, load_settings, self.home)
        self.assertIn("section 'tls' must be a mapping", str(e))

    def test_section_defaults_and_unknown_key(self) -> None:
        settings = {"tls": {"mode": "require"}}
        self.assertEqual(section(settings, "tls", {"mode": "off", "ca": None}),
                         {"mode": "require", "ca": None})
        e = self.assertRaises(ConfigError, section, {"tls": {"mdoe": 1}}, "tls", {"mode": "off"})
        self.assertIn("tls.mdoe is not a known setting", str(e))
