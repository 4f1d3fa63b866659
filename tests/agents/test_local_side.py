"""Local agent commands (list, keepalive, set-group, the master's list from a worker), the
client.keys watcher and the place of the agents feature in both service trees."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.agents.memory import AgentsCluster, inline_database, keys, raw
from tests.support import connected_pair, node_config, short_tempdir
from wazuhcluster.agents.keys import format_client_keys
from wazuhcluster.agents.keyswatch import ClientKeysWatcher
from wazuhcluster.agents.listing import (
    WZC_AG_GRP,
    WZC_AG_KAL,
    WZC_AG_LIST,
    WZC_AG_MLST,
    KeepaliveRequest,
    encode_groups_request,
    encode_keepalive_request,
    encode_list_request,
)
from wazuhcluster.agents.local_side import AgentsLocal
from wazuhcluster.agents.worker_side import PROMPT_DELAY
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.errors import RemoteCommandError
from wazuhcluster.interfaces import ILocalExtension
from wazuhcluster.localapi.client import LocalClientCommands
from wazuhcluster.localapi.commands import SENT_TO_MASTER
from wazuhcluster.localapi.factory import LocalAPIFactory
from wazuhcluster.master.service import make_master_service
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.worker.service import make_worker_service


class LocalCommandsTests(SynchronousTestCase):
    """Local clients of a master and of a worker, with the agents feature."""

    backend = "embedded"  # a subclass below runs the same tests over wazuh-db

    def setUp(self) -> None:
        """A linked master and worker, each with the agent local commands."""
        self.c = AgentsCluster(short_tempdir(self), agents=5, backend=self.backend)
        self.addCleanup(self.c.close)
        self.c.master.local_extensions.append(
            AgentsLocal(self.c.master, self.c.mdb, self.c.magents.groups_changed))
        self.c.worker.local_extensions.append(AgentsLocal(self.c.worker, self.c.wdb))

    def ask(self, node: Any, command: bytes, payload: bytes) -> Any:
        """One local request, following a worker's relay; decoded JSON."""
        commands = LocalClientCommands(self.c.clock)
        _, client, pump = connected_pair(
            lambda: LocalAPIFactory(node).buildProtocol(None),
            lambda: ClusterProtocol(commands, self.c.clock, codec=None,
                                    accept_reply_requests=True), self.c.clock)
        d = client.request(command, payload)
        for _ in range(4):
            pump.flush()
            self.c.flush(2)
        reply = self.successResultOf(d)
        if reply == SENT_TO_MASTER:
            for _ in range(4):
                self.c.flush(2)
                pump.flush()
            reply = self.successResultOf(commands.final)
        return json.loads(reply)

    def refused(self, node: Any, command: bytes, payload: bytes) -> str:
        """The error text of a refused local request."""
        commands = LocalClientCommands(self.c.clock)
        _, client, pump = connected_pair(
            lambda: LocalAPIFactory(node).buildProtocol(None),
            lambda: ClusterProtocol(commands, self.c.clock, codec=None,
                                    accept_reply_requests=True), self.c.clock)
        d = client.request(command, payload)
        pump.flush()
        return str(self.failureResultOf(d, RemoteCommandError).value)

    def test_extension_provides_interface(self) -> None:
        """AgentsLocal provides ILocalExtension."""
        self.assertTrue(verifyObject(ILocalExtension, AgentsLocal(self.c.master, self.c.mdb)))

    def test_keepalive_then_list(self) -> None:
        """Keepalives recorded on a worker show in its own listing with this node's name."""
        answer = self.ask(self.c.worker, WZC_AG_KAL, encode_keepalive_request(
            KeepaliveRequest((1, 2, 99), "Ubuntu", "22.04", "Wazuh v4.7.5")))
        self.assertEqual(answer, {"updated": 2, "unknown": 1})
        agents = self.ask(self.c.worker, WZC_AG_LIST, encode_list_request("worker1"))
        self.assertEqual([a["id"] for a in agents], ["001", "002"])
        self.assertEqual({k for k in agents[0]}, {"id", "name", "ip", "status", "node_name",
                                                  "last_keepalive", "version", "groups"})
        self.assertEqual(agents[0]["status"], "active")

    def test_set_group_on_master_creates_the_group_directory(self) -> None:
        """set-group on the master assigns, marks for push and creates etc/shared/<group>."""
        answer = self.ask(self.c.master, WZC_AG_GRP, encode_groups_request(3, ["web", "db"]))
        self.assertEqual(answer, {"updated": 1})
        self.assertEqual(raw(self.c.mdb).agent_row(3)["group_sync_status"], "syncreq")
        self.assertTrue(os.path.exists(os.path.join(self.c.master.config.home, "etc", "shared",
                                                    "web", "agent.conf")))

    def test_set_group_on_worker_says_master_only(self) -> None:
        """A worker refuses set-group with an explicit error."""
        self.assertIn("only works on the master", self.refused(
            self.c.worker, WZC_AG_GRP, encode_groups_request(3, ["web"])))

    def test_set_group_validates(self) -> None:
        """Invalid group names and unknown agents are refused."""
        for payload in (encode_groups_request(3, ["../x"]), encode_groups_request(77, ["a"])):
            self.assertIn("Error 3", self.refused(self.c.master, WZC_AG_GRP, payload))

    def test_master_list_from_worker_is_the_masters_view(self) -> None:
        """wzc_ag_mlst on a worker relays to the master and returns the master's database."""
        raw(self.c.mdb).set_agent_groups([(2, ["only-on-master"])])
        agents = self.ask(self.c.worker, WZC_AG_MLST, encode_list_request(None))
        self.assertEqual([a["groups"] for a in agents if a["id"] == "002"],
                         [["only-on-master"]])
        self.assertEqual(agents, self.ask(self.c.master, WZC_AG_MLST, encode_list_request(None)))

    def test_master_list_needs_the_capability(self) -> None:
        """A worker whose master did not announce 'agents' says so instead of relaying."""
        self.c.worker.master_capabilities = frozenset()
        self.assertIn("not a wazuhcluster master",
                      self.refused(self.c.worker, WZC_AG_MLST, b"{}"))


class KeysWatcherInotifyTests(SynchronousTestCase):
    """The inotify callback reacts to client.keys as Twisted's inotify names it (bytes)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.home = short_tempdir(self)
        self.db = inline_database(self.clock, self.home, "embedded")
        self.db.startService()
        self.addCleanup(self.db.stopService)
        self.path = os.path.join(self.home, "client.keys")

    def test_an_event_for_client_keys_reconciles(self) -> None:
        from twisted.internet import inotify
        from twisted.python.filepath import FilePath

        clock, home, db, path = self.clock, self.home, self.db, self.path
        watcher = ClientKeysWatcher(db, clock, path, "Worker w1")
        watcher.startService()
        self.addCleanup(watcher.stopService)
        self.assertEqual(watcher.reconciliations, 1)  # at start
        with open(path, "w") as f:
            f.write(format_client_keys(keys(2)))
        watcher._notified(None, FilePath(os.fsencode(home)).child(b".client.keys.tmp"),
                          inotify.IN_CLOSE_WRITE)
        self.assertEqual(watcher.reconciliations, 1)  # another file: nothing
        watcher._notified(None, FilePath(os.fsencode(path)), inotify.IN_MOVED_TO)
        self.assertEqual(watcher.reconciliations, 2)
        self.assertEqual([a.name for a in raw(db).list_agents() if a.agent_id],
                         ["agent1", "agent2"])

    def test_stat_checks_every_10_s_with_inotify(self) -> None:
        """With inotify watching the directory, the stat() check is a slower safety net."""
        from twisted.internet.epollreactor import EPollReactor

        from wazuhcluster.agents import keyswatch

        reactor = EPollReactor()  # not run: inotify only registers its descriptor with it
        self.addCleanup(reactor.waker.connectionLost, None)  # type: ignore[attr-defined]
        self.addCleanup(reactor._poller.close)
        clock, db, path = self.clock, self.db, self.path
        with_inotify = ClientKeysWatcher(db, clock, path, "Master", inotify_reactor=reactor)
        with_inotify.startService()
        self.addCleanup(with_inotify.stopService)
        stat_only = ClientKeysWatcher(db, clock, path, "Master")
        stat_only.startService()
        self.addCleanup(stat_only.stopService)
        assert with_inotify._loop is not None and stat_only._loop is not None
        self.assertEqual(with_inotify._loop.interval, keyswatch.INOTIFY_STAT_INTERVAL)
        self.assertEqual(stat_only._loop.interval, keyswatch.STAT_INTERVAL)


class KeysWatcherTests(SynchronousTestCase):
    """ClientKeysWatcher reconciles at start and after changes seen by stat()."""

    backend = "embedded"  # a subclass below runs the same tests over wazuh-db

    def setUp(self) -> None:
        """A database and a watcher on a temporary client.keys (stat only)."""
        self.clock = Clock()
        self.home = short_tempdir(self)
        self.db = inline_database(self.clock, self.home, self.backend)
        self.addCleanup(self.db.stopService)
        self.path = os.path.join(self.home, "client.keys")
        self.write(keys(3))
        self.watcher = ClientKeysWatcher(self.db, self.clock, self.path, "Master")
        self.watcher.startService()
        self.addCleanup(self.watcher.stopService)

    def write(self, entries: Any) -> None:
        """Replace client.keys atomically (as integrity sync does)."""
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(format_client_keys(entries))
        os.replace(tmp, self.path)

    def names(self) -> list[str]:
        """Agent names in the database (000 excluded)."""
        return [a.name for a in raw(self.db).list_agents() if a.agent_id]

    def test_reconciles_at_start(self) -> None:
        """The agents of client.keys are in the database once the service started."""
        self.assertEqual(self.names(), ["agent1", "agent2", "agent3"])

    def test_change_is_seen_by_the_stat_loop(self) -> None:
        """A replaced file is reconciled within one interval; unchanged files are not."""
        self.write(keys(5)[1:])
        self.clock.advance(2)
        self.assertEqual(self.names(), ["agent2", "agent3", "agent4", "agent5"])
        self.assertEqual(self.watcher.reconciliations, 2)
        self.clock.advance(2)
        self.assertEqual(self.watcher.reconciliations, 2)

    def test_inotify_notification_triggers_reconcile(self) -> None:
        """A notification for client.keys reconciles at once; other names are ignored."""
        from twisted.python.filepath import FilePath

        self.write(keys(1))
        self.watcher._notified(None, FilePath(self.path + ".other"), 0)
        self.assertEqual(len(self.names()), 3)
        self.watcher._notified(None, FilePath(self.path), 0)
        self.assertEqual(self.names(), ["agent1"])

    def test_hold_and_release(self) -> None:
        """While held, changes are ignored; release with the writer's signature skips that
        file; a later change is reconciled again."""
        from wazuhcluster.agents.keyswatch import keys_signature

        self.watcher.hold()
        self.write(keys(4))
        self.clock.advance(2)
        self.assertEqual(self.watcher.reconciliations, 1)
        self.watcher.release(keys_signature(self.path))
        self.assertEqual(self.watcher.reconciliations, 1)
        self.watcher.hold()
        self.write(keys(2))
        self.watcher.release(None)  # unknown: reconcile as usual
        self.assertEqual(self.watcher.reconciliations, 2)
        self.assertEqual(self.names(), ["agent1", "agent2"])


class TreeTests(SynchronousTestCase):
    """install() puts agent-db first in both role nodes and the loops after it."""

    def test_master_and_worker_trees(self) -> None:
        """Both trees start and stop with the agents services, agent-db first."""
        base = short_tempdir(self)
        reactor = MemoryReactorClock()
        master = make_master_service(node_config(base), reactor, SynchronousRunner())
        worker = make_worker_service(node_config(base, node_name="w1", role="worker"),
                                     reactor, SynchronousRunner())
        names = {"master": [s.name for s in master], "worker": [s.name for s in worker]}
        self.assertEqual(names["master"][0], "agent-db")
        self.assertEqual(names["worker"][0], "agent-db")
        self.assertLessEqual({"client-keys-watch", "local-agent-groups", "merged-mg"},
                             set(names["master"]))
        self.assertLessEqual({"client-keys-watch", "agent-info-sync"}, set(names["worker"]))
        for node in (master, worker):
            node.startService()
            self.assertTrue(node.getServiceNamed("agent-db").running)
            node.stopService()
        self.assertTrue(os.path.exists(os.path.join(base, "master-node", "queue", "db",
                                                    "wazuhcluster-agents.db")))
        self.assertIsNotNone(master.active_agents_by_node)



class PromptAgentInfoTests(SynchronousTestCase):
    """Keepalives that make agents active on a worker reach the master within
    PROMPT_DELAY, not at the next periodic agent-info round."""

    backend = "embedded"

    def setUp(self) -> None:
        """A linked master and worker; the worker's keepalive command tells its agents
        feature when agents became active (as worker_side.install wires it)."""
        self.c = AgentsCluster(short_tempdir(self), agents=5, backend=self.backend)
        self.addCleanup(self.c.close)
        self.c.worker.local_extensions.append(
            AgentsLocal(self.c.worker, self.c.wdb, on_activated=self.c.wagents.agents_activated))

    def keepalive(self, *ids: int) -> Any:
        """The local keepalive command on the worker."""
        return LocalCommandsTests.ask(self, self.c.worker, WZC_AG_KAL,  # type: ignore[arg-type]
                                      encode_keepalive_request(KeepaliveRequest(
                                          ids, "Ubuntu", "22.04", "Wazuh v4.7.5")))

    def on_master(self, agent: int) -> tuple[Any, Any]:
        row = raw(self.c.mdb).agent_row(agent)
        assert row is not None
        return row["connection_status"], row["node_name"]

    def prompts(self) -> list[Any]:
        """The worker's scheduled prompt syncs."""
        return [c for c in self.c.clock.getDelayedCalls()
                if c.func == self.c.wagents._prompt_sync]

    def settle(self) -> None:
        """The prompt delay passes and the sync it starts runs to its end."""
        self.c.clock.advance(PROMPT_DELAY)
        for _ in range(4):
            self.c.flush()

    def test_new_agents_reach_the_master_promptly(self) -> None:
        """Agents that were never connected: one sync after the delay, none before."""
        self.assertEqual(self.keepalive(1, 2), {"updated": 2, "unknown": 0})
        self.c.clock.advance(PROMPT_DELAY / 2)
        self.c.flush()
        self.assertEqual(self.on_master(1), ("never_connected", "unknown"))
        self.keepalive(3)  # within the delay: the same sync
        self.settle()
        self.assertEqual([self.on_master(i) for i in (1, 2, 3)], [("active", "worker1")] * 3)
        self.assertEqual(self.c.wagents.synced_rounds, 1)
        self.assertEqual(self.c.pending_on_worker(), [])

    def test_keepalives_of_active_agents_wait_for_the_round(self) -> None:
        """Agents already active: no prompt sync (the periodic round carries them)."""
        self.keepalive(1)
        self.settle()
        self.keepalive(1)
        self.settle()
        self.assertEqual(self.c.wagents.synced_rounds, 1)
        self.assertEqual(self.c.pending_on_worker(), [1])
        self.assertEqual(self.prompts(), [])

    def test_agents_activated_during_a_sync_get_one_more(self) -> None:
        """A sync is running when more agents become active: none starts beside it, one
        more is scheduled after it."""
        self.keepalive(1)
        self.c.clock.advance(PROMPT_DELAY)  # the sync starts; the link is not pumped yet
        self.assertTrue(self.c.wagents._syncing)
        self.c.keepalive([4])
        self.c.wagents.agents_activated()  # what the keepalive command does
        self.assertEqual(self.prompts(), [])
        for _ in range(4):
            self.c.flush()
        self.assertFalse(self.c.wagents._syncing)
        self.assertEqual(len(self.prompts()), 1)
        self.settle()
        self.assertEqual(self.on_master(4), ("active", "worker1"))
        self.assertEqual(self.c.pending_on_worker(), [])

    def test_no_prompt_sync_without_the_master(self) -> None:
        """A link that goes away drops the scheduled sync; none is scheduled without one."""
        self.keepalive(1)
        self.c.disconnect()
        self.assertEqual(self.prompts(), [])
        self.c.wagents.agents_activated()
        self.assertEqual(self.prompts(), [])

    def test_install_wires_the_worker_keepalive_command(self) -> None:
        """worker_side.install gives the worker's keepalive command the prompt sync."""
        from wazuhcluster.agents.worker_side import AgentsWorker
        worker = make_worker_service(node_config(short_tempdir(self), node_name="w1",
                                                 role="worker"),
                                     MemoryReactorClock(), SynchronousRunner())
        [local] = [e for e in worker.local_extensions if isinstance(e, AgentsLocal)]
        [agents] = [e for e in worker.extensions if isinstance(e, AgentsWorker)]
        self.assertEqual(local._on_activated, agents.agents_activated)


# -- the same tests over the wazuh-db backend (drop-in mode), served by a stand-in wazuh-db --
class LocalCommandsWazuhDbTests(LocalCommandsTests):
    backend = "wazuh-db"


class KeysWatcherWazuhDbTests(KeysWatcherTests):
    backend = "wazuh-db"


class PromptAgentInfoWazuhDbTests(PromptAgentInfoTests):
    backend = "wazuh-db"
