"""``twistd wazuhcluster``: command line -> configuration -> service tree."""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from wazuhcluster.config import ClusterDisabled, load_config
from wazuhcluster.errors import ConfigError


class Options(usage.Options):
    """Command line of ``twistd wazuhcluster``."""

    synopsis = "--role=(master|worker) --home=DIR [--config=FILE] [--cluster-json=FILE] [-d|-dd]"
    optParameters = [
        ["role", "r", None, "Node role: master or worker (must agree with <node_type>)."],
        ["home", "H", None, "Wazuh-style home directory (etc/, logs/, queue/, var/)."],
        ["config", "c", None, "File with the <cluster> block (default HOME/etc/ossec.conf)."],
        ["cluster-json", "j", None, "cluster.json whose values override the shipped ones."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["debug"] = 0

    def opt_debug(self) -> None:
        """Debug logging; repeat (-dd) for DEBUG2."""
        self["debug"] = min(2, self["debug"] + 1)

    opt_d = opt_debug

    def postOptions(self) -> None:
        if self["role"] not in (None, "master", "worker"):
            raise usage.UsageError("--role must be 'master' or 'worker'")
        if self["home"] is None:
            raise usage.UsageError("--home is required (the node's Wazuh-style home directory)")


def makeService(options: Options) -> IService:
    """Read the configuration and build the node's service tree."""
    from twisted.internet import reactor  # the one sanctioned global-reactor import

    try:
        config = load_config(options["home"], config_path=options["config"],
                             role=options["role"], cluster_json=options["cluster-json"],
                             debug=options["debug"])
    except ConfigError as e:
        raise SystemExit(f"wazuhcluster: configuration error: {e}") from None
    except ClusterDisabled as e:
        sys.stderr.write(f"wazuhcluster: cluster disabled ({e}); nothing to do.\n")
        raise SystemExit(0) from None
    from wazuhcluster.node import make_node_service

    try:
        service: Any = make_node_service(config, reactor)
    except ConfigError as e:
        raise SystemExit(f"wazuhcluster: configuration error: {e}") from None
    return service  # type: ignore[no-any-return]
