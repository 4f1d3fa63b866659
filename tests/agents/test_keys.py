"""Tests for wazuhcluster.agents.keys."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.agents.keys import (
    KeyEntry,
    StoredAgent,
    format_client_keys,
    parse_client_keys,
    plan_reconcile,
    read_client_keys,
    register_ip,
)

_KEYS = """\
001 web-01 any 6b2f0e51a3c64d0bbd2f9e2e0f7ad2a64c2b7ab3a2d9a1e3f8bb0e56f2d19c11
# a comment
002 !old-agent 10.0.0.2 0f2bd6c2e7a44d3fa1b5c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9
003 db-01 10.0.0.0/24 deadbeef with spaces
 004 indented any k
005 #removed any k
006 broken-line
000 manager any k
abc bad-id any k
007 win-01 192.168.1.7/32 k7\r
"""


class ParseTests(SynchronousTestCase):
    """client.keys parsing follows Wazuh's key reader."""

    def test_parse(self) -> None:
        """Active agents are returned; removed, comment, malformed and 000 lines skipped."""
        self.assertEqual(parse_client_keys(_KEYS), [
            KeyEntry(1, "web-01", "any",
                     "6b2f0e51a3c64d0bbd2f9e2e0f7ad2a64c2b7ab3a2d9a1e3f8bb0e56f2d19c11"),
            KeyEntry(3, "db-01", "10.0.0.0/24", "deadbeef with spaces"),
            KeyEntry(7, "win-01", "192.168.1.7/32", "k7"),
        ])

    def test_out_of_order_and_duplicates(self) -> None:
        """Entries come sorted by id; of two lines with one id the last wins."""
        self.assertEqual(parse_client_keys("005 a any k\n002 b any k\n005 c any k2\n"),
                         [KeyEntry(2, "b", "any", "k"), KeyEntry(5, "c", "any", "k2")])
        self.assertEqual(parse_client_keys("001 a any k\n001 b any k\n"),
                         [KeyEntry(1, "b", "any", "k")])

    def test_format_round_trip(self) -> None:
        """Formatting then parsing gives the entries back."""
        entries = parse_client_keys(_KEYS)
        self.assertEqual(parse_client_keys(format_client_keys(entries)), entries)

    def test_read_missing_file(self) -> None:
        """A missing file holds no agents."""
        self.assertEqual(read_client_keys(self.mktemp()), [])

    def test_register_ip(self) -> None:
        """A /32 suffix is dropped; networks and ``any`` are kept."""
        self.assertEqual([register_ip(i) for i in ("1.2.3.4/32", "10.0.0.0/8", "any")],
                         ["1.2.3.4", "10.0.0.0/8", "any"])


class PlanTests(SynchronousTestCase):
    """Reconciliation plans."""

    def test_plan(self) -> None:
        """Inserts, updates and removals are computed; 000 is never removed."""
        stored = {0: StoredAgent("localhost", "127.0.0.1", None),
                  1: StoredAgent("a", "any", "k1"),
                  2: StoredAgent("b", "any", "k2"),
                  3: StoredAgent("c", "any", "k3")}
        entries = [KeyEntry(1, "a", "any", "k1"), KeyEntry(2, "b2", "any", "k2"),
                   KeyEntry(4, "d", "any", "k4")]
        plan = plan_reconcile(stored, entries)
        self.assertEqual(plan.insert, (KeyEntry(4, "d", "any", "k4"),))
        self.assertEqual(plan.update, (KeyEntry(2, "b2", "any", "k2"),))
        self.assertEqual(plan.remove, (3,))
        self.assertFalse(plan.empty)

    def test_plain_rows(self) -> None:
        """Stored agents may be the plain (name, register_ip, internal_key) rows."""
        plan = plan_reconcile({1: ("a", "1.2.3.4", "k"), 2: ("b", None, "k")},
                              [KeyEntry(1, "a", "1.2.3.4/32", "k"), KeyEntry(2, "b", "any", "k")])
        self.assertEqual(plan.update, (KeyEntry(2, "b", "any", "k"),))
        self.assertEqual((plan.insert, plan.remove), ((), ()))

    def test_no_change(self) -> None:
        """A database that agrees with the keys gives an empty plan."""
        plan = plan_reconcile({1: StoredAgent("a", "1.2.3.4", "k")},
                              [KeyEntry(1, "a", "1.2.3.4/32", "k")])
        self.assertTrue(plan.empty)
