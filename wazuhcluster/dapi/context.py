"""DapiContext: what a native DAPI function is given besides its keyword arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from wazuhcluster.config import ClusterConfig


@attrs.frozen
class DapiContext:
    """The node a function runs on and the caller it runs for.

    :ivar node: the role node (MasterNode or WorkerNode) the function runs on.
    :ivar config: that node's configuration.
    :ivar agent_db: the node's IAgentDatabase (``node.agent_db``), or None if it has none.
    :ivar run: runs a blocking callable off the reactor (the node's runner).
    :ivar current_user: the API user the request is made for ("" for internal callers).
    :ivar rbac_permissions: the caller's RBAC policies as Wazuh sends them.
    :ivar nodes: names of every node of the cluster, as the request carries them.
    :ivar broadcasting: the request targets every node or every agent.
    """

    node: Any
    config: ClusterConfig
    agent_db: Any
    run: Callable[..., Deferred[Any]]
    current_user: str = ""
    rbac_permissions: dict[str, Any] = attrs.field(factory=dict)
    nodes: tuple[str, ...] = ()
    broadcasting: bool = False

    @classmethod
    def for_node(cls, node: Any, **caller: Any) -> DapiContext:
        """The context of ``node`` for one caller (keyword fields as above)."""
        return cls(node=node, config=node.config, agent_db=getattr(node, "agent_db", None),
                   run=node.run, **caller)
