"""``twistd wazuhcluster``: command line -> configuration -> service tree."""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.python import usage


class Options(usage.Options):
    """Command line of ``twistd wazuhcluster``."""

    synopsis = ("--role=(master|worker) --home=DIR [--config=FILE] [--cluster-json=FILE] "
                "[--log-format=plain|json] [-d|-dd]")
    optParameters = [
        ["role", "r", None, "Node role: master or worker (must agree with <node_type>)."],
        ["home", "H", None, "Wazuh-style home directory (etc/, logs/, queue/, var/)."],
        ["config", "c", None, "File with the <cluster> block (default HOME/etc/ossec.conf)."],
        ["cluster-json", "j", None, "cluster.json whose values override the shipped ones."],
        ["log-format", None, None, "plain (logs/cluster.log, Wazuh's format) or json "
                                   "(logs/cluster.json, one object per line)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["debug"] = 0

    def opt_debug(self) -> None:
        """Debug logging; repeat (-dd) for DEBUG2."""
        self["debug"] = min(2, self["debug"] + 1)

    opt_d = opt_debug

    def postOptions(self) -> None:
        if self["log-format"] not in (None, "plain", "json"):
            raise usage.UsageError("--log-format must be 'plain' or 'json'")
        if self["role"] not in (None, "master", "worker"):
            raise usage.UsageError("--role must be 'master' or 'worker'")
        if self["home"] is None:
            raise usage.UsageError("--home is required (the node's Wazuh-style home directory)")


def makeService(options: Options) -> IService:
    """Read the configuration, check the home and port, and build the node's service tree.

    Any problem ends ``twistd`` with one line and exit status 1, before it daemonizes.
    """
    from twisted.internet import reactor  # the one sanctioned global-reactor import

    from wazuhcluster.startup import build

    parent = getattr(options, "parent", None)
    daemon = parent is not None and not parent.get("nodaemon", False)
    service: Any = build(options["home"], role=options["role"], config_path=options["config"],
                         cluster_json=options["cluster-json"], debug=options["debug"],
                         reactor=reactor, daemon=daemon, log_format=options["log-format"])
    return service  # type: ignore[no-any-return]
