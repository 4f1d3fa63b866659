"""Configuration loading and validation."""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from tests.support import short_tempdir
from wazuhcluster.config import (
    ClusterConfig,
    ClusterDisabled,
    Extensions,
    Intervals,
    Role,
    load_config,
)
from wazuhcluster.errors import ConfigError

BLOCK = """<ossec_config><global><x>1</x></global></ossec_config>
<ossec_config>
  <cluster>
    <name>wazuh</name>
    <node_name>worker1</node_name>
    <node_type>worker</node_type>
    <key>abcdefghijklmnopqrstuvwxyz012345</key>
    <port>1516</port>
    <bind_addr>0.0.0.0</bind_addr>
    <nodes><node>10.0.0.1</node></nodes>
    <hidden>no</hidden>
    <disabled>no</disabled>
  </cluster>
</ossec_config>
"""


class LoadConfigTests(SynchronousTestCase):
    """load_config() turns ossec.conf + cluster.json into one ClusterConfig."""

    def setUp(self) -> None:
        self.home = short_tempdir(self)
        os.makedirs(os.path.join(self.home, "etc"))
        self.path = os.path.join(self.home, "etc", "ossec.conf")

    def write(self, text: str) -> None:
        """Write ossec.conf."""
        with open(self.path, "w") as f:
            f.write(text)

    def error(self, **kwargs: object) -> str:
        """The ConfigError message load_config raises."""
        with self.assertRaises(ConfigError) as ctx:
            load_config(self.home, **kwargs)  # type: ignore[arg-type]
        message = str(ctx.exception)
        self.assertNotIn("\n", message)
        return message

    def test_whole_parsed_result(self) -> None:
        """A complete block parses to exactly this configuration."""
        self.write(BLOCK)
        config = load_config(self.home)
        self.assertEqual(config, ClusterConfig(
            home=self.home, role=Role.WORKER, name="wazuh", node_name="worker1",
            key=b"abcdefghijklmnopqrstuvwxyz012345", port=1516, bind_addr="0.0.0.0",
            nodes=("10.0.0.1",), hidden=False, intervals=Intervals(), ext=Extensions(),
            files={}, config_path=self.path))
        self.assertIn("etc/shared/", config.files)

    def test_defaults_for_missing_and_empty_elements(self) -> None:
        """Missing or empty elements take Wazuh's defaults."""
        self.write("<ossec_config><cluster><key>abcdefghijklmnopqrstuvwxyz012345</key>"
                   "<name></name><nodes><node>10.0.0.1</node></nodes></cluster></ossec_config>")
        config = load_config(self.home)
        self.assertEqual((config.name, config.node_name, config.role, config.port,
                          config.bind_addr), ("wazuh", "node01", Role.MASTER, 1516, "0.0.0.0"))

    def test_key_is_redacted_everywhere(self) -> None:
        """Neither repr() nor get_config's dict shows the key."""
        self.write(BLOCK)
        config = load_config(self.home)
        self.assertNotIn("abcdefghijklmnopqrstuvwxyz012345", repr(config))
        self.assertNotIn("abcdefghijklmnopqrstuvwxyz012345", json.dumps(config.public_dict()))

    def test_bad_values_name_the_key_value_and_fix(self) -> None:
        """Each invalid value stops loading with one line naming key, value and fix."""
        cases = {
            ("<port>1516</port>", "<port>1024</port>"): ("<port>", "'1024'", "1025"),
            ("<port>1516</port>", "<port>abc</port>"): ("<port>", "'abc'", "integer"),
            ("<node_type>worker</node_type>", "<node_type>boss</node_type>"):
                ("<node_type>", "'boss'", "'master' or 'worker'"),
            ("<disabled>no</disabled>", "<disabled>maybe</disabled>"):
                ("<disabled>", "'maybe'", "'yes' or 'no'"),
            ("<node>10.0.0.1</node>", "<node>localhost</node>"):
                ("<node>", "'localhost'", "master's IP"),
            ("<node_name>worker1</node_name>", "<node_name>a b</node_name>"):
                ("<node_name>", "'a b'", "no spaces"),
            ("<hidden>no</hidden>", "<hidden>x</hidden>"): ("<hidden>", "'x'", "'yes' or 'no'"),
        }
        for (old, new), fragments in cases.items():
            self.write(BLOCK.replace(old, new))
            message = self.error()
            for fragment in fragments:
                self.assertIn(fragment, message, message)

    def test_bad_key_does_not_echo_the_key(self) -> None:
        """A wrong-length key is refused without printing it."""
        self.write(BLOCK.replace("abcdefghijklmnopqrstuvwxyz012345", "shortsecret"))
        message = self.error()
        self.assertIn("<key>", message)
        self.assertNotIn("shortsecret", message)

    def test_missing_key(self) -> None:
        """A block without a key says how to make one."""
        self.write(BLOCK.replace("<key>abcdefghijklmnopqrstuvwxyz012345</key>", ""))
        self.assertIn("32-character", self.error())

    def test_unknown_element_is_refused(self) -> None:
        """An element Wazuh's C daemons would reject is refused here too."""
        self.write(BLOCK.replace("<hidden>no</hidden>", "<hiden>no</hiden>"))
        self.assertIn("<hiden>", self.error())

    def test_role_must_agree_with_node_type(self) -> None:
        """--role master on a worker's config is refused, naming both."""
        self.write(BLOCK)
        message = self.error(role="master")
        self.assertIn("--role master", message)
        self.assertIn("'worker'", message)

    def test_disabled_and_absent_cluster(self) -> None:
        """<disabled>yes</disabled> or no <cluster> block means the cluster is disabled."""
        self.write(BLOCK.replace("<disabled>no</disabled>", "<disabled>yes</disabled>"))
        self.assertRaises(ClusterDisabled, load_config, self.home)
        self.write("<ossec_config><global/></ossec_config>")
        self.assertRaises(ClusterDisabled, load_config, self.home)

    def test_unreadable_and_malformed_files(self) -> None:
        """A missing or malformed ossec.conf is one clear line."""
        self.assertIn("cannot be read", self.error())
        self.write("<ossec_config><cluster>")
        self.assertIn("not well-formed", self.error())

    def test_cluster_json_overrides_are_merged_and_validated(self) -> None:
        """--cluster-json overrides single values; bad ones name the setting."""
        self.write(BLOCK)
        override = os.path.join(self.home, "c.json")
        with open(override, "w") as f:
            json.dump({"intervals": {"worker": {"keep_alive": 5}},
                       "wazuhcluster": {"compatibility_version": "4.7.4"}}, f)
        config = load_config(self.home, cluster_json=override)
        self.assertEqual((config.intervals.keep_alive, config.intervals.sync_integrity,
                          config.version), (5, 9, "4.7.4"))
        with open(override, "w") as f:
            json.dump({"intervals": {"worker": {"keep_alive": -1}}}, f)
        self.assertIn("intervals.worker.keep_alive", self.error(cluster_json=override))
        with open(override, "w") as f:
            json.dump({"wazuhcluster": {"bogus": 1}}, f)
        self.assertIn("wazuhcluster.bogus", self.error(cluster_json=override))
        with open(override, "w") as f:
            f.write("{nope")
        self.assertIn("not valid JSON", self.error(cluster_json=override))

    def test_bad_cluster_items_are_one_line(self) -> None:
        """A broken ``files`` item in cluster.json stops loading with one line naming it."""
        self.write(BLOCK)
        override = os.path.join(self.home, "c.json")
        for files in ({"etc/": {"permissions": "0o999"}}, {"etc/": {"recursive": "yes"}},
                      {"../../": {"permissions": "0o640"}}):
            with open(override, "w") as f:
                json.dump({"files": files}, f)
            message = self.error(cluster_json=override)
            self.assertIn("cluster.json: files:", message)

    def test_min_zip_size_above_max(self) -> None:
        """min_zip_size larger than max_zip_size is refused."""
        self.write(BLOCK)
        override = os.path.join(self.home, "c.json")
        with open(override, "w") as f:
            json.dump({"intervals": {"communication": {"min_zip_size": 10, "max_zip_size": 5}}}, f)
        self.assertIn("min_zip_size", self.error(cluster_json=override))

    def test_dot_names_are_refused(self) -> None:
        """'.' and '..' are not node names (they would be directories outside the queue)."""
        self.write(BLOCK.replace("<node_name>worker1</node_name>", "<node_name>..</node_name>"))
        self.assertIn("<node_name>", self.error())

    def test_too_long_home_for_the_socket(self) -> None:
        """A home whose socket path would exceed the UNIX limit is refused up front."""
        deep = os.path.join(self.home, "x" * 100)
        os.makedirs(os.path.join(deep, "etc"))
        with open(os.path.join(deep, "etc", "ossec.conf"), "w") as f:
            f.write(BLOCK)
        with self.assertRaises(ConfigError) as ctx:
            load_config(deep)
        self.assertIn("too long", str(ctx.exception))
