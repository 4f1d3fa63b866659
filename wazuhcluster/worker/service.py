"""make_worker_service(): the worker subtree."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet.endpoints import TCP4ClientEndpoint

from wazuhcluster.config import ClusterConfig
from wazuhcluster.interfaces import IBlockingRunner
from wazuhcluster.periodic import periodic
from wazuhcluster.worker.factory import WorkerClientFactory
from wazuhcluster.worker.link import QuietClientService, ReportingEndpoint
from wazuhcluster.worker.node import WorkerNode


def make_worker_service(config: ClusterConfig, reactor: Any,
                        runner: IBlockingRunner) -> WorkerNode:
    """Build ``worker``: the master link (with backoff and jitter) and the keepalive loop."""
    node = WorkerNode(config, reactor, runner)
    node.auto_hello = True
    policy = backoffPolicy(initialDelay=config.ext.reconnect_initial_delay,
                           maxDelay=config.ext.reconnect_max_delay, factor=1.5)
    from wazuhcluster.tls.feature import install_worker as install_tls
    factory = WorkerClientFactory(node)
    link = QuietClientService(
        ReportingEndpoint(
            install_tls(node, reactor, factory,
                        TCP4ClientEndpoint(reactor, config.master_address, config.port,
                                           timeout=config.ext.connect_timeout)),
            f"{config.master_address}:{config.port}", node),
        factory,
        retryPolicy=lambda attempt: node.retry_delay(policy, attempt),
        clock=reactor,
    )
    node.retry_policy = policy
    link.setName("master-link")
    link.setServiceParent(node)
    node.link = link
    periodic("keepalive", min(config.intervals.keep_alive, 1.0), node.send_keepalive,
             reactor).setServiceParent(node)
    from wazuhcluster.agents.worker_side import install as install_agents
    install_agents(node, reactor)
    from wazuhcluster.integrity.worker_side import install as install_integrity
    install_integrity(node, reactor)
    from wazuhcluster.enrolment.service import install as install_enrolment
    install_enrolment(node, reactor)
    from wazuhcluster.dapi.wire import install as install_dapi
    install_dapi(node, reactor)
    from wazuhcluster.sendsync.extension import install as install_sendsync
    install_sendsync(node, reactor)
    return node
