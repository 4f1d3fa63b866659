"""RoleNode: what the master and worker role nodes share."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from wazuhcluster.config import ClusterConfig
from wazuhcluster.events import EventFanout
from wazuhcluster.interfaces import (
    IAgentDatabase,
    IBlockingRunner,
    IDistributedAPI,
    ILocalExtension,
)
from wazuhcluster.protocol.budget import MemoryBudget


class RoleNode(MultiService):
    """A role node: configuration, clock, blocking runner and local-API extensions.

    :param config: the node configuration.
    :param clock: the reactor's time.
    :param runner: runs blocking work off the reactor.
    :param name: the service name (``master`` or ``worker``).
    """

    def __init__(self, config: ClusterConfig, clock: IReactorTime, runner: IBlockingRunner,
                 name: str) -> None:
        super().__init__()
        self.setName(name)
        self.config = config
        self.clock = clock
        self.runner = runner
        self.local_extensions: list[ILocalExtension] = []  # extra local-socket commands
        self.agent_db: IAgentDatabase | None = None  # set by the agents feature
        self.dapi: IDistributedAPI | None = None  # set by the dapi feature
        #: bytes peers make this node hold, shared by all connections (cluster and local)
        self.memory = MemoryBudget(config.ext.memory_budget, config.ext.memory_per_connection)
        #: what happens in this node, for observers (metrics, the status page's history)
        self.events = EventFanout()

    def run(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Run blocking ``f`` off the reactor."""
        return self.runner.run(f, *args, **kwargs)
