"""Local-socket commands of the agents feature (an :class:`ILocalExtension`).

``wzc_ag_list`` lists this node's database, ``wzc_ag_kal`` records keepalives of agents
connected to this node (so they are marked for agent-info sync), ``wzc_ag_grp`` assigns groups
(master only), ``wzc_ag_mlst`` lists the agents as the master sees them: answered locally on
the master, relayed to the master on a worker (answer delivered later with ``control_res``, as
a worker relays ``get_nodes``). Payloads: :mod:`wazuhcluster.agents.listing`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from wazuhcluster.agents.db import Keepalive
from wazuhcluster.agents.listing import (
    AGENTS_CAPABILITY,
    WZC_AG_GRP,
    WZC_AG_KAL,
    WZC_AG_LIST,
    WZC_AG_MLST,
    agents_json,
    master_listing,
    parse_groups_request,
    parse_keepalive_request,
    parse_list_request,
)
from wazuhcluster.config import Role
from wazuhcluster.errors import ClusterError, RemoteCommandError
from wazuhcluster.interfaces import IAgentDatabase, ILocalExtension
from wazuhcluster.localapi.commands import SENT_TO_MASTER
from wazuhcluster.protocol import messages
from wazuhcluster.protocol.commands import CONTROL_RES, OK, Reply

#: Agent ids per statement when the keepalive command looks for agents not active yet.
_INACTIVE_BATCH = 5000

Responder = Callable[[bytes], Coroutine[Any, Any, Reply | None]]

#: What Wazuh writes in a new group's agent.conf.
DEFAULT_AGENT_CONF = (b"<agent_config>\n\n  <!-- Shared agent configuration here -->\n\n"
                      b"</agent_config>\n")


def ensure_group_dirs(home: str, groups: tuple[str, ...]) -> None:
    """Create ``etc/shared/<group>/agent.conf`` for groups that have no directory (blocking)."""
    for group in groups:
        directory = os.path.join(home, "etc", "shared", group)
        if os.path.isdir(directory):
            continue
        os.makedirs(directory, mode=0o770, exist_ok=True)
        with open(os.path.join(directory, "agent.conf"), "wb") as f:
            f.write(DEFAULT_AGENT_CONF)


@implementer(ILocalExtension)
class AgentsLocal:
    """The agent commands of the local API.

    :param node: the role node (MasterNode or WorkerNode).
    :param db: the node's agent database.
    :param on_groups_changed: called after a group assignment (the master rewrites merged.mg).
    :param on_activated: called after keepalives made agents active that were not (a worker
        then sends their agent-info promptly).
    """

    _log = Logger()

    def __init__(self, node: Any, db: IAgentDatabase,
                 on_groups_changed: Callable[[], None] | None = None,
                 on_activated: Callable[[], None] | None = None) -> None:
        self._node = node
        self._db = db
        self._on_groups_changed = on_groups_changed
        self._on_activated = on_activated

    @property
    def _is_master(self) -> bool:
        return bool(self._node.config.role is Role.MASTER)

    def local_responders(self, commands: Any) -> dict[bytes, Responder]:
        """The agent commands for one local client."""
        return {
            WZC_AG_LIST: self._list,
            WZC_AG_KAL: self._keepalive,
            WZC_AG_GRP: self._set_group,
            WZC_AG_MLST: lambda payload: self._master_list(commands, payload),
        }

    async def _list(self, payload: bytes) -> Reply:
        agents = await self._db.list_agents(parse_list_request(payload))
        return Reply.ok(await self._node.run(agents_json, agents))

    async def _keepalive(self, payload: bytes) -> Reply:
        request = parse_keepalive_request(payload)
        now = int(self._node.clock.seconds())
        name = self._node.config.node_name
        inactive = self._on_activated is not None and await self._any_inactive(request.ids)
        updated = await self._db.record_keepalives([
            Keepalive(i, name, now, request.os_name, request.os_version, request.version)
            for i in request.ids])
        if inactive and updated and self._on_activated is not None:
            self._on_activated()
        return Reply.ok(messages.encode_json({"updated": updated,
                                              "unknown": len(set(request.ids)) - updated}))

    async def _any_inactive(self, ids: Sequence[int]) -> bool:
        """Whether one of the agents ``ids`` is known and not active (the ids are integers
        written into the statement, in batches that fit any SQLite's limits, wazuh-db's
        included)."""
        unique = sorted({int(i) for i in ids if int(i) > 0})
        for start in range(0, len(unique), _INACTIVE_BATCH):
            listed = ",".join(map(str, unique[start:start + _INACTIVE_BATCH]))
            if await self._db.count(
                    "SELECT COUNT(*) FROM agent WHERE connection_status != 'active'"
                    f" AND id IN ({listed})"):
                return True
        return False

    async def _set_group(self, payload: bytes) -> Reply:
        if not self._is_master:
            raise ClusterError(3000, "set-group only works on the master node: group "
                                     "assignments are made on the master and pushed to the "
                                     "workers; run it with --home of the master")
        agent_id, groups = parse_groups_request(payload)
        await self._node.run(ensure_group_dirs, self._node.config.home, groups)
        result = await self._db.set_agent_groups([(agent_id, groups)], "override", "syncreq")
        if result.unknown_agents:
            raise ClusterError(3000, f"agent {agent_id:03d} does not exist")
        if result.failed_agents:
            raise ClusterError(3000, f"could not set the groups of agent {agent_id:03d}")
        if self._on_groups_changed is not None:
            self._on_groups_changed()
        return Reply.ok(messages.encode_json({"updated": result.updated_agents}))

    async def _master_list(self, commands: Any, payload: bytes) -> Reply:
        node_name = parse_list_request(payload)  # refuse bad requests before relaying
        if self._is_master:
            config = self._node.config
            agents = master_listing(await self._db.list_agents(None), node_name,
                                    config.node_name, config.version)
            return Reply.ok(await self._node.run(agents_json, agents))
        if self._node.peer is None:
            raise ClusterError(3023)
        if AGENTS_CAPABILITY not in self._node.master_capabilities:
            raise ClusterError(3000, "the master does not serve agent lists to workers (it is "
                                     "not a wazuhcluster master); run this on the master")
        d = Deferred.fromCoroutine(self._relay(commands, payload))
        d.addErrback(lambda f: self._log.failure("[{tag}] [Main] Relay failed", f,
                                                 tag=commands.tag))
        return Reply(OK, SENT_TO_MASTER)

    async def _relay(self, commands: Any, payload: bytes) -> None:
        """Ask the master; hand its answer (or its error object) to the local client."""
        try:
            answer = await self._node.request_master(WZC_AG_MLST, payload)
        except RemoteCommandError as e:
            answer = e.to_wire()
        except ClusterError as e:
            answer = e.to_wire()
        if commands.peer is not None:
            with contextlib.suppress(ClusterError):  # the client went away
                await commands.peer.request(CONTROL_RES, answer)
