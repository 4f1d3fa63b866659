"""A stand-in IDistributedAPI for a node built without the Distributed API service.

It runs registered functions on this node only: ``local_any`` always, ``local_master`` on the
master. Anything that needs another node (``local_master`` on a worker, ``distributed_master``)
fails with a Wazuh cluster error saying so. The REST API installs it only when the node has no
``dapi``; the real DAPI (``wazuhcluster.dapi``) replaces it as soon as the node provides one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from wazuhcluster.config import Role
from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.results import WazuhClusterError, WazuhInternalError
from wazuhcluster.interfaces import IDistributedAPI


@implementer(IDistributedAPI)
class LocalOnlyDAPI:
    """Runs this node's registered functions in-process; never reaches another node."""

    def __init__(self, node: Any) -> None:
        self._node = node
        self._functions: dict[str, Any] = {}

    def register(self, function: str, implementation: Any) -> None:
        self._functions[function] = implementation

    def call(self, function: str, f_kwargs: Mapping[str, Any] | None = None,
             request_type: str = "local_master", *, wait_for_complete: bool = False,
             current_user: str = "", rbac_permissions: Mapping[str, Any] | None = None,
             broadcasting: bool = False, api_timeout: float | None = None) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._call(function, dict(f_kwargs or {}), request_type,
                                                 current_user, broadcasting))

    async def _call(self, function: str, f_kwargs: dict[str, Any], request_type: str,
                    current_user: str, broadcasting: bool) -> Any:
        implementation = self._functions.get(function)
        if implementation is None:
            raise WazuhInternalError(1000, f"function {function} is not available on this node")
        is_master = self._node.config.role is Role.MASTER
        if request_type == "distributed_master" or (request_type == "local_master"
                                                    and not is_master):
            raise WazuhClusterError(
                3000, f"{function} ({request_type}) needs the Distributed API, which this node "
                      "does not run: ask the master's API")
        ctx = DapiContext.for_node(self._node, current_user=current_user,
                                   broadcasting=broadcasting)
        return await implementation(ctx, **f_kwargs)
