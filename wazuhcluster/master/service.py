"""make_master_service(): the master subtree."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError

from wazuhcluster.config import ClusterConfig
from wazuhcluster.interfaces import IBlockingRunner
from wazuhcluster.master.factory import ClusterServerFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.periodic import periodic


class ClusterListenerService(StreamServerEndpointService):
    """The master's TCP listener; a busy or forbidden port stops start-up with one line."""

    _raiseSynchronously = True
    address = ""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise self._explain(e) from None

    def startService(self) -> None:
        try:
            super().startService()
        except CannotListenError as e:
            raise self._explain(e) from None

    def _explain(self, error: CannotListenError) -> SystemExit:
        return SystemExit(f"wazuhcluster: cannot listen on {self.address} ({error.socketError}):"
                          " stop the process using it or change <cluster><port>/<bind_addr>")


def make_master_service(config: ClusterConfig, reactor: Any,
                        runner: IBlockingRunner) -> MasterNode:
    """Build ``master``: listener and keepalive check (features add their loops)."""
    node = MasterNode(config, reactor, runner)
    from wazuhcluster.tls.feature import install_master as install_tls
    listener = ClusterListenerService(
        TCP4ServerEndpoint(reactor, config.port, interface=config.bind_addr),
        install_tls(node, reactor, ClusterServerFactory(node)))
    listener.address = f"{config.bind_addr}:{config.port}"
    listener.setName("cluster-listener")
    listener.setServiceParent(node)
    check_every = min(config.ext.reaper_check_interval,
                      config.intervals.check_worker_lastkeepalive)
    periodic("keepalive-check", check_every, node.check_keepalives,
             reactor).setServiceParent(node)
    from wazuhcluster.agents.master_side import install as install_agents
    install_agents(node, reactor)
    from wazuhcluster.integrity.master_side import install as install_integrity
    install_integrity(node, reactor)
    from wazuhcluster.enrolment.service import install as install_enrolment
    install_enrolment(node, reactor)
    from wazuhcluster.dapi.wire import install as install_dapi
    install_dapi(node, reactor)
    from wazuhcluster.sendsync.extension import install as install_sendsync
    install_sendsync(node, reactor)
    return node
