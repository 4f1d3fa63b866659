"""How the status page joins a node (called by wazuhcluster.node): the sync history observes
the node's events, the DAPI answers ``wazuhcluster.ui.get_status``, and the REST API (when
enabled) serves the page at ``/ui``."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService

from wazuhcluster.ui.history import SyncHistory
from wazuhcluster.ui.status import GET_STATUS, make_get_status


def add_ui(node: Any, reactor: Any, root: MultiService) -> SyncHistory:
    """Plug the status page into ``node``; call it after ``add_api``."""
    history = SyncHistory(reactor)
    node.events.add(history)
    if getattr(node, "dapi", None) is not None:
        node.dapi.register(GET_STATUS, make_get_status(history))
    api = next((s for s in root if getattr(s, "name", None) == "api"), None)
    if api is not None:
        from wazuhcluster.ui.resource import StatusPage  # the web stack: only with the API

        api.resource.mount(StatusPage(node, reactor, api.config.auth_token_exp_timeout))
    return history
