"""Cluster and manager functions of the framework (``wazuh.cluster``, ``wazuh.manager``).

They describe the node they run on (its name, configuration, daemons) or ask the master for the
cluster's node list and health, with the result shapes and messages of Wazuh 4.7.5.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from wazuhcluster.config import Role
from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.functions.common import now
from wazuhcluster.dapi.results import (
    AffectedItemsWazuhResult,
    WazuhClusterError,
    WazuhError,
    WazuhResourceNotFound,
    WazuhResult,
)
from wazuhcluster.errors import ClusterError, RemoteCommandError
from wazuhcluster.protocol.commands import GET_HEALTH, GET_NODES

#: Daemons whose state manager.get_status reports (Wazuh 4.7's list).
DAEMONS = ("wazuh-agentlessd", "wazuh-analysisd", "wazuh-authd", "wazuh-csyslogd",
           "wazuh-dbd", "wazuh-monitord", "wazuh-execd", "wazuh-integratord",
           "wazuh-logcollector", "wazuh-maild", "wazuh-remoted", "wazuh-reportd",
           "wazuh-syscheckd", "wazuh-clusterd", "wazuh-modulesd", "wazuh-db",
           "wazuh-apid")


def _is_master(ctx: DapiContext) -> bool:
    return bool(ctx.config.role is Role.MASTER)


def _as_wazuh_error(e: ClusterError) -> WazuhClusterError | WazuhError:
    if e.class_name == "WazuhResourceNotFound":
        return WazuhResourceNotFound(e.code, extra_message=e.extra_message)
    if e.class_name == "WazuhError":
        return WazuhError(e.code, extra_message=e.extra_message)
    return WazuhClusterError(e.code, extra_message=e.extra_message)


async def _ask(ctx: DapiContext, command: bytes, payload: Any) -> Any:
    """The master's get_nodes/get_health answer (asked over the link on a worker)."""
    node = ctx.node
    try:
        if _is_master(ctx):
            if command == GET_NODES:
                return node.get_nodes(payload)
            return await node.get_health(payload)
        raw = await node.request_master(command, json.dumps(payload).encode())
        return json.loads(raw)
    except RemoteCommandError as e:
        raise _as_wazuh_error(e) from None
    except ClusterError as e:
        raise _as_wazuh_error(e) from None


def get_node(ctx: DapiContext) -> dict[str, Any]:
    """``{"node", "cluster", "type"}`` of the node this runs on."""
    return {"node": ctx.config.node_name, "cluster": ctx.config.name,
            "type": ctx.config.role.value}


async def get_node_wrapper(ctx: DapiContext, **_: Any) -> AffectedItemsWazuhResult:
    """Basic information about the node this runs on."""
    result = AffectedItemsWazuhResult(all_msg="All selected information was returned",
                                      none_msg="No information was returned")
    result.affected_items.append(get_node(ctx))
    result.total_affected_items = len(result.affected_items)
    return result


async def read_config_wrapper(ctx: DapiContext, **_: Any) -> AffectedItemsWazuhResult:
    """The node's ``<cluster>`` configuration (the key redacted)."""
    result = AffectedItemsWazuhResult(all_msg="All selected information was returned",
                                      none_msg="No information was returned")
    result.affected_items.append(ctx.config.public_dict())
    result.total_affected_items = len(result.affected_items)
    return result


async def get_nodes_info(ctx: DapiContext, filter_node: Any = None,
                         **kwargs: Any) -> AffectedItemsWazuhResult:
    """The cluster's nodes (as get_nodes answers them)."""
    result = AffectedItemsWazuhResult(none_msg="No node information was returned",
                                      some_msg="Could not read basic information in some nodes",
                                      all_msg="All selected nodes information was returned")
    wanted = [filter_node] if isinstance(filter_node, str) else filter_node
    arguments = {"filter_node": wanted, "offset": kwargs.get("offset", 0),
                 "limit": kwargs.get("limit"), "sort": kwargs.get("sort"),
                 "search": kwargs.get("search"), "select": kwargs.get("select"),
                 "filter_type": kwargs.get("filter_type", "all") or "all"}
    data = await _ask(ctx, GET_NODES, arguments)
    result.affected_items.extend(data["items"])
    result.total_affected_items = int(data["totalItems"])
    return result


async def get_health_nodes(ctx: DapiContext, filter_node: Any = None,
                           **_: Any) -> AffectedItemsWazuhResult:
    """The health of the cluster's nodes, sorted by name."""
    result = AffectedItemsWazuhResult(
        all_msg="All selected nodes healthcheck information was returned",
        some_msg="Some nodes healthcheck information was not returned",
        none_msg="No healthcheck information was returned")
    wanted = [filter_node] if isinstance(filter_node, str) else filter_node
    data = await _ask(ctx, GET_HEALTH, wanted)
    result.affected_items = sorted(data["nodes"].values(), key=lambda i: i["info"]["name"])
    result.total_affected_items = len(result.affected_items)
    return result


async def get_status_json(ctx: DapiContext, **_: Any) -> WazuhResult:
    """Whether the cluster is enabled and running (it is, since this node answers), as
    Wazuh 4.7.5 answers it: a WazuhResult ``{"data": {...}}``."""
    return WazuhResult({"data": {"enabled": "yes", "running": "yes"}})


async def get_node_ruleset_integrity(ctx: DapiContext, **_: Any) -> dict[str, str]:
    """``{relative path: blake2b}`` of this node's rules, decoders and CDB lists."""
    from wazuhcluster.dapi.wire import ruleset_hashes
    hashes: dict[str, str] = await ctx.run(ruleset_hashes, ctx.config.home)
    return hashes


async def get_ruleset_sync_status(ctx: DapiContext, master_md5: Any = None,
                                  **_: Any) -> AffectedItemsWazuhResult:
    """Whether this node's ruleset equals the master's (``master_md5``: the master's
    get_node_ruleset_integrity answer)."""
    result = AffectedItemsWazuhResult(
        all_msg="Nodes ruleset synchronization status was successfully read",
        some_msg="Could not read ruleset synchronization status in some nodes",
        none_msg="Could not read ruleset synchronization status in any node")
    mine = await get_node_ruleset_integrity(ctx)
    result.affected_items.append({"name": ctx.config.node_name,
                                  "synced": isinstance(master_md5, dict) and mine == master_md5})
    result.total_affected_items = len(result.affected_items)
    return result


def _pid_running(home: str, daemon: str) -> bool:
    run_dir = os.path.join(home, "var", "run")
    try:
        names = os.listdir(run_dir)
    except OSError:
        return False
    for name in names:
        if name.startswith(daemon + "-") and name.endswith(".pid"):
            pid = name[len(daemon) + 1:-4]
            if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
                return True
    return False


def daemons_status(home: str) -> dict[str, str]:
    """``{daemon: running|stopped}`` from ``var/run/<daemon>-<pid>.pid`` (blocking)."""
    return {d: "running" if _pid_running(home, d) else "stopped" for d in DAEMONS}


async def get_status(ctx: DapiContext, **_: Any) -> AffectedItemsWazuhResult:
    """The state of the manager's daemons on this node."""
    where = " in specified node" if ctx.config.node_name else ""
    result = AffectedItemsWazuhResult(all_msg=f"Processes status was successfully read{where}",
                                      some_msg="Could not read basic information in some nodes",
                                      none_msg="Could not read processes status")
    result.affected_items.append(await ctx.run(daemons_status, ctx.config.home))
    result.total_affected_items = len(result.affected_items)
    return result


async def get_basic_info(ctx: DapiContext, **_: Any) -> AffectedItemsWazuhResult:
    """Version, installation path and time zone of the manager on this node."""
    where = " in specified node" if ctx.config.node_name else ""
    result = AffectedItemsWazuhResult(all_msg=f"Basic information was successfully read{where}",
                                      some_msg="Could not read basic information in some nodes",
                                      none_msg=f"Could not read basic information{where}")
    offset = -time.timezone if not time.daylight else -time.altzone
    sign = "+" if offset >= 0 else "-"
    installed = await ctx.run(installation_date, ctx.config.home)
    result.affected_items.append({
        "path": ctx.config.home, "version": f"v{ctx.config.version}",
        "compilation_date": installed or datetime.fromtimestamp(now(ctx), UTC),
        "type": "server", "max_agents": "unlimited", "openssl_support": "yes",
        "tz_offset": f"{sign}{abs(offset) // 3600:02d}{abs(offset) % 3600 // 60:02d}",
        "tz_name": time.tzname[0]})
    result.total_affected_items = len(result.affected_items)
    return result


#: Where a Wazuh manager records its installation date (drop-in mode).
WAZUH_METADATA = os.path.join("framework", "wazuh", "core", "wazuh.json")


def installation_date(home: str) -> datetime | None:
    """The ``installation_date`` of a Wazuh manager installed at ``home`` (its
    ``wazuh.json``, e.g. "Thu Apr 25 10:43:27 UTC 2024"), or None without one. Wazuh 4.7.5
    reports it as ``compilation_date`` and the current time when it has none."""
    try:
        with open(os.path.join(home, WAZUH_METADATA), encoding="utf-8") as f:
            text = json.load(f).get("installation_date", "")
        return datetime.strptime(str(text), "%a %b %d %H:%M:%S %Z %Y").replace(tzinfo=UTC)
    except (OSError, ValueError, AttributeError):
        return None


FUNCTIONS: dict[str, Callable[..., Awaitable[Any]]] = {
    "wazuh.cluster.get_node_wrapper": get_node_wrapper,
    "wazuh.cluster.read_config_wrapper": read_config_wrapper,
    "wazuh.cluster.get_nodes_info": get_nodes_info,
    "wazuh.cluster.get_health_nodes": get_health_nodes,
    "wazuh.cluster.get_status_json": get_status_json,
    "wazuh.cluster.get_node_ruleset_integrity": get_node_ruleset_integrity,
    "wazuh.cluster.get_ruleset_sync_status": get_ruleset_sync_status,
    "wazuh.manager.get_basic_info": get_basic_info,
    "wazuh.manager.get_status": get_status,
}
