"""A fake IDistributedAPI for the REST API tests: runs registered functions in-process."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from zope.interface import implementer

from wazuhcluster.config import ClusterConfig
from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.results import WazuhInternalError
from wazuhcluster.interfaces import IDistributedAPI


class FakeNode:
    """What the API and DAPI functions use of a role node: config, run and dapi."""

    def __init__(self, config: ClusterConfig, agent_db: Any = None, clock: Any = None) -> None:
        self.config = config
        self.agent_db = agent_db
        self.clock = clock
        self.dapi: FakeDAPI | None = None
        #: Names of the callables given to ``run`` (work the node would do off the reactor).
        self.ran: list[str] = []

    def run(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        self.ran.append(getattr(f, "__name__", repr(f)))
        return maybeDeferred(f, *args, **kwargs)


@implementer(IDistributedAPI)
class FakeDAPI:
    """Runs functions of this node only; records every call."""

    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.functions: dict[str, Any] = {}
        self.calls: list[dict[str, Any]] = []

    def register(self, function: str, implementation: Any) -> None:
        self.functions[function] = implementation

    def call(self, function: str, f_kwargs: Mapping[str, Any] | None = None,
             request_type: str = "local_master", *, wait_for_complete: bool = False,
             current_user: str = "", rbac_permissions: Mapping[str, Any] | None = None,
             broadcasting: bool = False, api_timeout: float | None = None) -> Deferred[Any]:
        self.calls.append({"function": function, "f_kwargs": dict(f_kwargs or {}),
                           "request_type": request_type, "current_user": current_user,
                           "broadcasting": broadcasting, "wait": wait_for_complete})
        implementation = self.functions.get(function)
        if implementation is None:
            return Deferred.fromCoroutine(_raise(WazuhInternalError(
                1000, f"function {function} is not registered")))
        ctx = DapiContext.for_node(self.node, current_user=current_user,
                                   broadcasting=broadcasting)
        return ensureDeferred(implementation(ctx, **dict(f_kwargs or {})))

    def last(self, function: str) -> dict[str, Any]:
        return [c for c in self.calls if c["function"] == function][-1]


async def _raise(exc: Exception) -> Any:
    raise exc
