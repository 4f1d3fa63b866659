"""How the metrics join a node's service tree (called by wazuhcluster.node)."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from wazuhcluster.config import ClusterConfig
from wazuhcluster.metrics.config import load_metrics_config
from wazuhcluster.metrics.registry import NodeMetrics
from wazuhcluster.metrics.service import MetricsService


def add_metrics(config: ClusterConfig, node: Any, reactor: Any,
                root: MultiService) -> NodeMetrics:
    """Observe ``node``'s events with a NodeMetrics and, unless ``metrics.enabled`` is false
    in api.yaml, add the ``metrics`` service (its listener and loops) under ``root``.

    :raises ConfigError: a bad ``metrics`` section (one line).
    """
    metrics_config = load_metrics_config(config.home)
    metrics = NodeMetrics(node, reactor)
    node.events.add(metrics)
    if metrics_config.enabled:
        MetricsService(metrics_config, metrics, node, reactor).setServiceParent(root)
    return metrics
