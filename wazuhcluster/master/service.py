"""make_master_service(): the master subtree."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import TCP4ServerEndpoint

from wazuhcluster.config import ClusterConfig
from wazuhcluster.interfaces import IBlockingRunner
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.periodic import periodic


def make_master_service(config: ClusterConfig, reactor: Any,
                        runner: IBlockingRunner) -> MasterNode:
    """Build ``master``: listener and keepalive check (features add their loops)."""
    node = MasterNode(config, reactor, runner)
    listener = StreamServerEndpointService(
        TCP4ServerEndpoint(reactor, config.port, interface=config.bind_addr),
        ClusterServerFactory(node))
    listener._raiseSynchronously = True  # a busy port stops start-up with a clear error
    listener.setName("cluster-listener")
    listener.setServiceParent(node)
    periodic("keepalive-check", config.ext.reaper_check_interval, node.check_keepalives,
             reactor).setServiceParent(node)
    return node
