"""Tests for wazuhcluster.agents.merged."""

from __future__ import annotations

import hashlib
import os

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.agents import merged


def _write(path: str, content: bytes) -> None:
    """Create a file and its directories."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


class MergedTests(SynchronousTestCase):
    """merged.mg files have Wazuh's layout and are written atomically."""

    def setUp(self) -> None:
        """A Wazuh home with ar.conf and two groups."""
        self.home = self.mktemp()
        shared = os.path.join(self.home, "etc", "shared")
        _write(os.path.join(shared, "ar.conf"), b"restart-ossec0 - restart-ossec.sh - 0\n")
        _write(os.path.join(shared, "default", "agent.conf"), b"<agent_config/>\n")
        _write(os.path.join(shared, "default", "b.txt"), b"bee")
        _write(os.path.join(shared, "default", "sub", "a.txt"), b"sub-a\n")
        _write(os.path.join(shared, "default", ".hidden"), b"no")
        _write(os.path.join(shared, "default", "merged.mg.old"), b"no")
        _write(os.path.join(shared, "default", "bin.dat"), b"x\0y\nz")
        _write(os.path.join(shared, "g2", "agent.conf"), b"<g2/>\n")
        _write(os.path.join(shared, "g2", "b.txt"), b"bee2")

    def test_group_layout(self) -> None:
        """Header, ar.conf, then sorted files with ``!size name`` records."""
        self.assertEqual(merged.group_merged(self.home, "default"), (
            b"#default\n"
            b"!38 ar.conf\nrestart-ossec0 - restart-ossec.sh - 0\n"
            b"!16 agent.conf\n<agent_config/>\n"
            b"!3 b.txt\nbee"
            b"!6 sub/a.txt\nsub-a\n"))

    def test_without_ar_conf(self) -> None:
        """Without etc/shared/ar.conf there is no ar.conf record."""
        os.unlink(os.path.join(self.home, "etc", "shared", "ar.conf"))
        self.assertTrue(merged.group_merged(self.home, "g2").startswith(b"#g2\n!6 agent.conf\n"))

    def test_binary_test(self) -> None:
        """NUL inside a newline-terminated line is binary; in the unterminated tail it is not."""
        self.assertTrue(merged.is_binary(b"a\0\n"))
        self.assertFalse(merged.is_binary(b"a\nb\0"))

    def test_multigroup_hash(self) -> None:
        """The multi-group directory is the SHA-256 prefix of the group CSV."""
        self.assertEqual(merged.multigroup_hash(["default", "g2"]),
                         hashlib.sha256(b"default,g2").hexdigest()[:8])

    def test_multigroup_layout(self) -> None:
        """agent.conf parts are concatenated with source comments; other files: last wins."""
        name = merged.multigroup_hash(["default", "g2"])
        self.assertEqual(merged.multigroup_merged(self.home, ["default", "g2"]), (
            b"#" + name.encode() + b"\n"
            b"!38 ar.conf\nrestart-ossec0 - restart-ossec.sh - 0\n"
            b"!99 agent.conf\n<!-- Source file: default/agent.conf -->\n<agent_config/>\n"
            b"<!-- Source file: g2/agent.conf -->\n<g2/>\n"
            b"!4 b.txt\nbee2"
            b"!6 sub/a.txt\nsub-a\n"))

    def test_write_group(self) -> None:
        """The file is written in the group directory, once; no temp file stays."""
        self.assertTrue(merged.write_group_merged(self.home, "default"))
        self.assertFalse(merged.write_group_merged(self.home, "default"))
        directory = os.path.join(self.home, "etc", "shared", "default")
        with open(os.path.join(directory, "merged.mg"), "rb") as f:
            self.assertEqual(f.read(), merged.group_merged(self.home, "default"))
        self.assertFalse(os.path.exists(os.path.join(directory, ".merged.mg.tmp")))

    def test_merged_file_not_merged_into_itself(self) -> None:
        """Writing twice does not include the previous merged.mg."""
        merged.write_group_merged(self.home, "default")
        self.assertNotIn(b"merged.mg", merged.group_merged(self.home, "default"))

    def test_write_multigroup(self) -> None:
        """Multi-group files go to var/multigroups/<hash>/merged.mg."""
        name, changed = merged.write_multigroup_merged(self.home, ["default", "g2"])
        self.assertTrue(changed)
        self.assertTrue(os.path.isfile(
            os.path.join(self.home, "var", "multigroups", name, "merged.mg")))

    def test_a_removed_group_is_not_brought_back(self) -> None:
        """A group directory removed after the check that found it changed stays removed:
        its merged.mg is not written (the directory would be pushed to every worker)."""
        import shutil
        group = os.path.join(self.home, "etc", "shared", "gone")
        os.makedirs(group)
        with open(os.path.join(group, "agent.conf"), "wb") as f:
            f.write(b"<agent_config/>\n")
        shutil.rmtree(group)
        self.assertFalse(merged.write_group_merged(self.home, "gone"))
        self.assertFalse(os.path.exists(group))
