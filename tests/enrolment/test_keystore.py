"""client.keys planning (authd's duplicate and replacement rules) and the atomic write."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.enrolment.authconfig import ForceOptions
from wazuhcluster.enrolment.keystore import (
    AddOp,
    AgentStatus,
    KeyLine,
    Outcome,
    RemoveOp,
    conflicts,
    parse_lines,
    plan_batch,
    read_keys,
    render,
    write_keys,
)
from wazuhcluster.enrolment.messages import key_hash

NOW = 1_000_000
NO_FORCE = ForceOptions(enabled=False)
FORCE_NOW = ForceOptions(enabled=True, key_mismatch=True, disconnected_time_enabled=False,
                         disconnected_time=0, after_registration_time=0)


def plan(lines: list[KeyLine], *ops: AddOp | RemoveOp, statuses: dict[int, AgentStatus] | None
         = None, force: ForceOptions = NO_FORCE, purge: bool = False
         ) -> tuple[list[KeyLine], list[Outcome]]:
    keys = iter(f"{i:064x}" for i in range(1, 1000))
    result = plan_batch(lines, ops, statuses=statuses or {}, default_force=force, purge=purge,
                        manager_name="manager-host", now=NOW, make_key=lambda: next(keys))
    return result.lines, list(result.outcomes)


class ParseTests(SynchronousTestCase):
    """Reading and rendering keep removed agents."""

    def test_round_trip(self) -> None:
        """Active and removed lines survive; comments and bad lines are dropped."""
        text = "001 a any k1\n002 !b 10.0.0.2 k2\n# comment\nbad\n003 #c any k3\n"
        lines = parse_lines(text)
        self.assertEqual([ln.removed for ln in lines], [False, True, True])
        self.assertEqual(render(lines), "001 a any k1\n002 !b 10.0.0.2 k2\n003 !c any k3\n")


class PlanTests(SynchronousTestCase):
    """plan_batch follows authd."""

    def test_ids_follow_the_highest_ever_given(self) -> None:
        """Removed agents keep their ids; new ids are above every id in the file."""
        lines = [KeyLine(1, "a", "any", "k"), KeyLine(7, "b", "any", "k", removed=True)]
        new, outcomes = plan(lines, AddOp("c", "any"), AddOp("d", "any"))
        self.assertEqual([o.line.agent_id for o in outcomes if o.line], [8, 9])
        self.assertEqual(len(new), 4)

    def test_duplicate_name_and_ip(self) -> None:
        """Without force, a known name or IP is refused with authd's texts."""
        lines = [KeyLine(1, "a", "10.0.0.1", "k")]
        _, outcomes = plan(lines, AddOp("a", "any"), AddOp("b", "10.0.0.1"),
                           AddOp("manager-host", "any"))
        self.assertEqual([(o.code, o.agent_error) for o in outcomes], [
            (9008, "Duplicate agent name: a"), (9007, "Duplicate IP: 10.0.0.1"),
            (9008, "Invalid agent name: manager-host")])
        self.assertIn("force option is disabled", outcomes[0].log)

    def test_duplicate_within_one_batch(self) -> None:
        """Two enrolments of one name in a batch: the second is refused."""
        _, outcomes = plan([], AddOp("a", "any"), AddOp("a", "any"))
        self.assertIsNotNone(outcomes[0].line)
        self.assertEqual(outcomes[1].agent_error, "Duplicate agent name: a")

    def test_force_replaces(self) -> None:
        """With force, the old agent is removed (kept marked) and a new id given."""
        lines = [KeyLine(1, "a", "any", "old")]
        status = {1: AgentStatus("disconnected", NOW - 10, NOW - 10)}
        new, outcomes = plan(lines, AddOp("a", "any"), statuses=status, force=FORCE_NOW)
        self.assertEqual(outcomes[0].replaced, (1,))
        self.assertEqual([(ln.agent_id, ln.removed) for ln in new], [(1, True), (2, False)])

    def test_ip_replaced_before_name_refused(self) -> None:
        """As authd: the agent holding the IP is replaced before the name check refuses."""
        lines = [KeyLine(1, "old-ip", "10.0.0.1", "k1"), KeyLine(2, "a", "any", "k2")]
        status = {1: AgentStatus("never_connected", 0, NOW - 7200),
                  2: AgentStatus("active", 0, NOW - 7200)}
        new, outcomes = plan(lines, AddOp("a", "10.0.0.1"), statuses=status,
                             force=ForceOptions())
        self.assertEqual(outcomes[0].agent_error, "Duplicate agent name: a")
        self.assertEqual([(ln.agent_id, ln.removed) for ln in new], [(1, True), (2, False)])

    def test_force_rules(self) -> None:
        """Each replacement condition with its explanation."""
        line = KeyLine(1, "a", "any", "old")
        cases = [
            (ForceOptions(), None, "Failed to get agent-info"),
            (ForceOptions(), AgentStatus("disconnected", NOW - 10, 0), "not been disconnected"
                                                                        " long enough"),
            (ForceOptions(), AgentStatus("active", 0, 0), "not disconnected"),
            (ForceOptions(disconnected_time_enabled=False), AgentStatus("active", 0, NOW - 5),
             "registration time"),
            (FORCE_NOW, AgentStatus("active", 0, 0), "key already exists"),
        ]
        for force, status, why in cases:
            op = AddOp("a", "any", key_hash=key_hash("001", "a", "old"))
            _, outcomes = plan([line], op, statuses={1: status} if status else {}, force=force)
            self.assertIsNone(outcomes[0].line)
            self.assertIn(why, outcomes[0].log)
        never = AgentStatus("never_connected", 0, NOW - 7200)
        _, outcomes = plan([line], AddOp("a", "any"), statuses={1: never}, force=ForceOptions())
        self.assertIsNotNone(outcomes[0].line)

    def test_replay_with_same_key(self) -> None:
        """An add carrying the key an agent of that name and IP holds answers that agent."""
        lines = [KeyLine(4, "a", "any", "secret")]
        new, outcomes = plan(lines, AddOp("a", "any", key="secret"))
        self.assertTrue(outcomes[0].replayed)
        self.assertEqual(new, lines)
        _, outcomes = plan(lines, AddOp("a", "any", key="other"))
        self.assertEqual(outcomes[0].code, 9008)

    def test_explicit_id(self) -> None:
        """An explicit id is used; a taken one is a duplicate id."""
        lines = [KeyLine(4, "a", "any", "k")]
        _, outcomes = plan(lines, AddOp("b", "any", agent_id=20), AddOp("c", "any", agent_id=4))
        self.assertEqual(outcomes[0].line, KeyLine(20, "b", "any", f"{1:064x}"))
        self.assertEqual(outcomes[1].code, 9012)

    def test_remove_and_purge(self) -> None:
        """Removal marks the line, purge drops it, unknown ids are 9011."""
        lines = [KeyLine(1, "a", "any", "k"), KeyLine(2, "b", "any", "k")]
        new, outcomes = plan(lines, RemoveOp(1, False), RemoveOp(2, True), RemoveOp(9, False))
        self.assertEqual(new, [KeyLine(1, "a", "any", "k", removed=True)])
        self.assertEqual(outcomes[2].code, 9011)
        new, _ = plan(lines, RemoveOp(1, False), purge=True)
        self.assertEqual([ln.agent_id for ln in new], [2])

    def test_conflicts(self) -> None:
        """Only active agents matching a name, IP or id need a status."""
        lines = [KeyLine(1, "a", "10.0.0.1", "k"), KeyLine(2, "b", "any", "k"),
                 KeyLine(3, "c", "any", "k", removed=True)]
        self.assertEqual(conflicts(lines, [AddOp("a", "any"), AddOp("x", "10.0.0.1"),
                                           AddOp("c", "any")]), {1})


class WriteTests(SynchronousTestCase):
    """The file is replaced atomically."""

    def test_write_and_read(self) -> None:
        """Content, mode, and no temporary file left behind."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "client.keys")
        with open(path, "w") as f:
            f.write("001 old any k\n")
        inode = os.stat(path).st_ino
        lines = [KeyLine(1, "a", "any", "k1"), KeyLine(2, "b", "any", "k2", removed=True)]
        write_keys(path, lines)
        self.assertEqual(read_keys(path), lines)
        self.assertNotEqual(os.stat(path).st_ino, inode)  # replaced, not rewritten in place
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o640)
        self.assertEqual(os.listdir(directory), ["client.keys"])
        self.assertEqual(read_keys(os.path.join(directory, "missing")), [])

    def test_failed_write_keeps_old_file(self) -> None:
        """A failure before the rename leaves the old file and no temporary file."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "client.keys")
        with open(path, "w") as f:
            f.write("001 old any k\n")
        bad = [KeyLine(1, "a\ud800", "any", "k")]  # cannot be encoded
        self.assertRaises(UnicodeEncodeError, write_keys, path, bad)
        self.assertEqual(read_keys(path), [KeyLine(1, "old", "any", "k")])
        self.assertEqual(os.listdir(directory), ["client.keys"])
