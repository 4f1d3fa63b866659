"""How the REST API joins a node's service tree (called by wazuhcluster.node)."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from wazuhcluster.api.config import check_tls_files, load_api_config
from wazuhcluster.api.functions import register_functions
from wazuhcluster.config import ClusterConfig
from wazuhcluster.settings import section


def add_api(config: ClusterConfig, node: Any, reactor: Any, root: MultiService) -> None:
    """Register the API's DAPI functions on ``node`` and, unless ``api.enabled`` is false in
    ``etc/wazuhcluster.yaml``, add the ``api`` service under ``root``.

    :raises ConfigError: a bad api.yaml or settings section (one line).
    """
    if getattr(node, "dapi", None) is None:
        # The node was built without the Distributed API: answer from this node only.
        from wazuhcluster.api.localdapi import LocalOnlyDAPI
        from wazuhcluster.dapi.functions import ALL_FUNCTIONS

        node.dapi = LocalOnlyDAPI(node)
        for name, implementation in ALL_FUNCTIONS.items():
            node.dapi.register(name, implementation)
    register_functions(node.dapi)
    settings = section(config.settings, "api", {"enabled": True})
    if not isinstance(settings["enabled"], bool):
        from wazuhcluster.errors import ConfigError

        raise ConfigError("etc/wazuhcluster.yaml: api.enabled must be true or false")
    api_config = load_api_config(config.home)  # checked even when disabled
    if settings["enabled"]:
        # Imported only here: the REST API's web stack is a sixth of a node's start-up CPU
        # (about 0.1 s), which a node with the API disabled need not spend.
        from wazuhcluster.api.service import APIService

        check_tls_files(api_config)
        APIService(api_config, reactor, node).setServiceParent(root)


def api_listen_problem(config: ClusterConfig) -> str | None:
    """Why the REST API could not listen on its address (checked before twistd forks), or
    None. Blocking; start-up only."""
    import socket

    if not section(config.settings, "api", {"enabled": True})["enabled"]:
        return None
    api_config = load_api_config(config.home)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((api_config.host, api_config.port))
        except OSError as e:
            return (f"wazuhcluster: the REST API cannot listen on {api_config.host}:"
                    f"{api_config.port} ({e.strerror or e}): stop the process using it or change "
                    f"host/port in {api_config.path}")
    return None
