"""The master's registrar and authd's local socket protocol."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.agents.test_threaded import InlinePool, InlineReactor
from wazuhcluster.agents.db import database_path
from wazuhcluster.agents.threaded import ThreadedAgentDatabase
from wazuhcluster.enrolment.authconfig import AuthConfig, ForceOptions
from wazuhcluster.enrolment.keystore import AddOp, KeyLine, Outcome, read_keys
from wazuhcluster.enrolment.localsock import READ_TIMEOUT, AuthLocalFactory
from wazuhcluster.enrolment.registrar import Registrar, keys_path
from wazuhcluster.interfaces import IBlockingRunner


@implementer(IBlockingRunner)
class QueuedRunner:
    """Runs blocking calls only when the test says so (to see batching)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def run(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((d, f, args))
        return d

    def flush(self) -> int:
        """Run queued calls (and those they queue) until none is left; returns how many."""
        count = 0
        while self.calls:
            d, f, args = self.calls.pop(0)
            count += 1
            try:
                result = f(*args)
            except Exception as e:  # noqa: BLE001 - handed to the waiter
                d.errback(e)
            else:
                d.callback(result)
        return count


class RegistrarTestBase(SynchronousTestCase):
    """A master home with a database and a registrar on a queued runner."""

    auth = AuthConfig()

    def setUp(self) -> None:
        self.home = self.mktemp()
        for sub in ("etc/shared/default", "etc/shared/web", "queue/db"):
            os.makedirs(os.path.join(self.home, sub))
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.db = ThreadedAgentDatabase(InlineReactor(), self.clock,  # type: ignore[arg-type]
                                        database_path(self.home),
                                        pool=InlinePool())  # type: ignore[arg-type]
        self.db.startService()
        self.addCleanup(self.db.stopService)
        self.runner = QueuedRunner()
        self.registrar = Registrar(self.home, self.auth, self.runner, self.db, self.clock,
                                   manager_name="the-manager")

    def add(self, *ops: AddOp) -> list[Outcome]:
        waiting = [self.registrar.add(op) for op in ops]
        self.runner.flush()
        return [self.successResultOf(d) for d in waiting]


class RegistrarTests(RegistrarTestBase):
    """Adds and removals reach client.keys and the database."""

    def test_fifty_concurrent_enrolments(self) -> None:
        """50 enrolments arriving together: the first starts a batch alone, the 49 others
        wait and go in one more batch; 50 distinct ids, one consistent file."""
        outcomes = self.add(*[AddOp(f"agent-{i}", "any") for i in range(50)])
        ids = [o.line.agent_id for o in outcomes if o.line is not None]
        self.assertEqual(sorted(ids), list(range(1, 51)))
        self.assertEqual(self.registrar.batches, 2)
        lines = read_keys(keys_path(self.home))
        self.assertEqual({(ln.agent_id, ln.name, ln.key) for ln in lines},
                         {(o.line.agent_id, o.line.name, o.line.key)
                          for o in outcomes if o.line is not None})
        self.assertTrue(all(len(ln.key) == 64 for ln in lines))
        agents = self.successResultOf(self.db.list_agents())
        self.assertEqual(len([a for a in agents if a.agent_id > 0]), 50)
        self.assertEqual({a.groups for a in agents if a.agent_id > 0}, {("default",)})

    def test_groups_and_invalid_group(self) -> None:
        """Given groups are stored; a group without a directory is refused."""
        good, bad = self.add(AddOp("a1", "any", groups=("web", "default")),
                             AddOp("a2", "any", groups=("nope",)))
        assert good.line is not None
        agents = {a.name: a for a in self.successResultOf(self.db.list_agents())}
        self.assertEqual(agents["a1"].groups, ("web", "default"))
        self.assertEqual((bad.code, bad.agent_error), (9014, "Invalid group: nope"))
        self.assertNotIn("a2", agents)

    def test_too_many_groups(self) -> None:
        """More than 128 groups (all existing)."""
        for i in range(129):
            os.makedirs(os.path.join(self.home, "etc", "shared", f"g{i}"))
        (outcome,) = self.add(AddOp("a1", "any", groups=tuple(f"g{i}" for i in range(129))))
        self.assertEqual(outcome.agent_error, "Maximum multigroup reached: Limit is 128")

    def test_external_edit_seen(self) -> None:
        """An operator's edit of client.keys between batches is read before the next one."""
        self.add(AddOp("a1", "any"))
        with open(keys_path(self.home), "a") as f:
            f.write("040 hand-made any " + "b" * 64 + "\n")
        (outcome,) = self.add(AddOp("a2", "any"))
        assert outcome.line is not None
        self.assertEqual(outcome.line.agent_id, 41)
        self.assertEqual([ln.name for ln in read_keys(keys_path(self.home))],
                         ["a1", "hand-made", "a2"])

    def test_watcher_told(self) -> None:
        """The client.keys watcher is held during a batch and released with the written
        file's signature; with None after a database failure."""
        calls: list[object] = []
        watcher = type("W", (), {"hold": lambda self: calls.append("hold"),
                                 "release": lambda self, sig: calls.append(sig)})()
        self.registrar._watcher = watcher
        self.add(AddOp("a1", "any"))
        st = os.stat(keys_path(self.home))
        self.assertEqual(calls, ["hold", (st.st_size, st.st_mtime_ns, st.st_ino)])
        self.db.stopService()
        calls.clear()
        self.add(AddOp("a2", "any"))
        self.assertEqual(calls, ["hold", None])
        self.assertEqual(len(self.flushLoggedErrors()), 1)

    def test_remove(self) -> None:
        """Removal marks the key (purge off) and deletes the row."""
        self.add(AddOp("a1", "any"))
        d = self.registrar.remove(1)
        self.runner.flush()
        self.assertIsNotNone(self.successResultOf(d).line)
        self.assertEqual(read_keys(keys_path(self.home))[0].removed, True)
        self.assertEqual([a.agent_id for a in self.successResultOf(self.db.list_agents())
                          if a.agent_id > 0], [])

    def test_failure_answers_everyone(self) -> None:
        """A file error answers every waiter with an internal error."""
        os.makedirs(keys_path(self.home))  # a directory where the file should be
        (outcome,) = self.add(AddOp("a1", "any"))
        self.assertEqual((outcome.code, outcome.line), (9001, None))
        self.assertEqual(len(self.flushLoggedErrors()), 1)


def frame(obj: Any) -> bytes:
    body = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return struct.pack("<I", len(body)) + body


class LocalSocketTests(RegistrarTestBase):
    """authd's local JSON protocol."""

    auth = AuthConfig(force=ForceOptions(enabled=False))

    def ask(self, data: bytes) -> Any:
        protocol = AuthLocalFactory(self.registrar, self.clock).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        self.runner.flush()
        raw = transport.value()
        if not raw:
            return None
        (size,) = struct.unpack_from("<I", raw)
        self.assertTrue(transport.disconnecting)
        return json.loads(raw[4:4 + size])

    def test_add(self) -> None:
        """Success answer with id, name, ip, key."""
        answer = self.ask(frame({"function": "add", "arguments": {
            "name": "ag1", "ip": "10.0.0.5", "groups": "web"}}))
        self.assertEqual(answer["error"], 0)
        self.assertEqual((answer["data"]["id"], answer["data"]["name"], answer["data"]["ip"]),
                         ("001", "ag1", "10.0.0.5"))
        self.assertEqual(len(answer["data"]["key"]), 64)

    def test_errors(self) -> None:
        """authd's codes for each bad request."""
        self.ask(frame({"function": "add", "arguments": {"name": "ag1", "ip": "10.0.0.5"}}))
        cases: list[tuple[Any, tuple[int, str]]] = [
            (b"{not json", (9002, "Parsing JSON input")),
            ({"arguments": {}}, (9003, "No such function")),
            ({"function": "add"}, (9004, "No such argument")),
            ({"function": "add", "arguments": {"ip": "any"}}, (9005, "No such name")),
            ({"function": "add", "arguments": {"name": "x1"}}, (9006, "No such IP")),
            ({"function": "add", "arguments": {"name": "ag1", "ip": "any"}},
             (9008, "Duplicate name")),
            ({"function": "add", "arguments": {"name": "ag2", "ip": "10.0.0.5"}},
             (9007, "Duplicate IP")),
            ({"function": "add", "arguments": {"name": "ag3", "ip": "any", "id": "001"}},
             (9012, "Duplicate ID")),
            ({"function": "add", "arguments": {"name": "ag3", "ip": "any", "groups": "x"}},
             (9014, "Invalid Group(s) Name(s)")),
            ({"function": "remove", "arguments": {"id": "042"}}, (9011, "Agent ID not found")),
            ({"function": "remove", "arguments": {}}, (9010, "No such agent ID")),
            ({"function": "launch", "arguments": {}}, (9001, "Internal error")),
        ]
        for request, (code, message) in cases:
            self.assertEqual(self.ask(frame(request)), {"error": code, "message": message},
                             request)

    def test_force_from_request(self) -> None:
        """A ``force`` object in the request overrides the configuration."""
        self.ask(frame({"function": "add", "arguments": {"name": "ag1", "ip": "any"}}))
        answer = self.ask(frame({"function": "add", "arguments": {
            "name": "ag1", "ip": "any", "force": {
                "enabled": True, "key_mismatch": True,
                "disconnected_time": {"enabled": False, "value": "1h"},
                "after_registration_time": "0"}}}))
        self.assertEqual((answer["error"], answer["data"]["id"]), (0, "002"))
        self.assertTrue(read_keys(keys_path(self.home))[0].removed)

    def test_remove_and_get(self) -> None:
        """Removal answer text; get returns the key."""
        added = self.ask(frame({"function": "add", "arguments": {"name": "ag1", "ip": "any"}}))
        got = self.ask(frame({"function": "get", "arguments": {"id": "001"}}))
        self.assertEqual(got, added)
        self.assertEqual(self.ask(frame({"function": "remove", "arguments": {"id": "001"}})),
                         {"error": 0, "data": "Agent deleted successfully."})
        self.assertEqual(read_keys(keys_path(self.home)),
                         [KeyLine(1, "ag1", "any", added["data"]["key"], removed=True)])

    def test_oversized_and_silent(self) -> None:
        """A length above 64 KiB is refused before reading; silence is cut after the timeout."""
        protocol = AuthLocalFactory(self.registrar, self.clock).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(struct.pack("<I", 10 * 1024 * 1024))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        protocol = AuthLocalFactory(self.registrar, self.clock).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.clock.advance(READ_TIMEOUT)
        self.assertTrue(transport.disconnecting)
