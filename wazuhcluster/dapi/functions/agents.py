"""Agent functions of the framework (``wazuh.agent`` and ``wazuh.core.agent.Agent``).

Read from the node's agent database through ``IAgentDatabase.select`` with queries built by
:mod:`wazuhcluster.dapi.query`; results, messages and error codes as Wazuh 4.7.5 gives them.
Agent lists given as None or ``"*"`` mean every agent (what the framework's permission layer
makes of them for an unrestricted user); failures the caller did not ask about are then
dropped, as that layer does.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable
from typing import Any

from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.functions.common import (
    agent_id_text,
    all_agent_ids,
    database,
    drop_codes,
    existing_agent_ids,
    home,
    now,
    requested,
    require_master,
    run_agent_query,
    sort_ids,
)
from wazuhcluster.dapi.query import DATABASE_LIMIT, Condition, compile_agent_query
from wazuhcluster.dapi.results import (
    AffectedItemsWazuhResult,
    WazuhError,
    WazuhInternalError,
    WazuhResourceNotFound,
    WazuhResult,
)

_NOT_MANAGER = Condition("id", "!=", "000")


async def get_agents_overview(ctx: DapiContext, offset: Any = 0, limit: Any = DATABASE_LIMIT,
                              sort: Any = None, search: Any = None, select: Any = None,
                              filters: dict[str, Any] | None = None, q: str | None = "",
                              count: bool = True, get_data: bool = True,
                              **_: Any) -> dict[str, Any]:
    """``{"items": [...], "totalItems": n}``: the agents matching the query (what
    ``cluster_control -a`` asks for)."""
    query = compile_agent_query(now=now(ctx), offset=offset, limit=limit, sort=sort,
                                search=search, select=select, filters=filters, q=q)
    items, total = await run_agent_query(ctx, query, count=count)
    out: dict[str, Any] = {"items": items} if get_data else {}
    if count:
        out["totalItems"] = total
    return out


async def get_agents(ctx: DapiContext, agent_list: Any = None, offset: Any = 0,
                     limit: Any = DATABASE_LIMIT, sort: Any = None, search: Any = None,
                     select: Any = None, filters: dict[str, Any] | None = None,
                     q: str | None = None, distinct: bool = False,
                     **_: Any) -> AffectedItemsWazuhResult:
    """Agents with their attributes; listed ids that do not exist fail with 1701."""
    result = AffectedItemsWazuhResult(all_msg="All selected agents information was returned",
                                      some_msg="Some agents information was not returned",
                                      none_msg="No agent information was returned")
    wanted = requested(agent_list)
    if wanted is not None and not wanted:
        return result
    ids = None
    if wanted is not None:
        ids = [agent_id_text(a) for a in wanted]
        known = await existing_agent_ids(ctx, ids)
        for agent_id in ids:
            if agent_id not in known:
                result.add_failed_item(agent_id, WazuhResourceNotFound(1701))
    query = compile_agent_query(now=now(ctx), offset=offset, limit=limit, sort=sort,
                                search=search, select=select, filters=filters, q=q,
                                distinct=distinct, agent_ids=ids)
    items, total = await run_agent_query(ctx, query)
    result.affected_items.extend(items)
    result.total_affected_items = total
    return result


async def get_agents_summary_status(ctx: DapiContext, agent_list: Any = None,
                                    **_: Any) -> WazuhResult:
    """Agents (000 excluded) counted by connection status and group configuration status.

    The database counts, in one pass over the agents without sorting them: with 200 000
    agents, reading every agent's row to count it cost a node about 0.1 CPU s per call."""
    connection = {"active": 0, "disconnected": 0, "never_connected": 0, "pending": 0, "total": 0}
    configuration = {"synced": 0, "not synced": 0, "total": 0}
    wanted = requested(agent_list)
    if wanted is None or wanted:
        ids = None if wanted is None else [agent_id_text(a) for a in wanted]
        query = compile_agent_query(now=now(ctx), limit=None,
                                    select=["status", "group_config_status"],
                                    extra=_NOT_MANAGER, agent_ids=ids)
        if not query.count_sql.startswith(_COUNT_PREFIX):
            raise WazuhInternalError(1000, extra_message="unexpected agent count query")
        base = query.count_sql[len(_COUNT_PREFIX):]
        sums = [f"SUM(status = '{s}') AS \"{s}\"" for s in connection if s != "total"]
        sums += [f"SUM(group_config_status = '{s}') AS \"{s}\"" for s in configuration
                 if s != "total"]
        rows = await database(ctx).select(
            f"SELECT {', '.join(sums)}, COUNT(*) AS total FROM ({base}", query.count_params)
        counted = rows[0] if rows else {}
        for counts in (connection, configuration):
            for status in counts:
                counts[status] = int(counted.get(status) or 0)
    configuration["not_synced"] = configuration.pop("not synced")
    return WazuhResult({"data": {"connection": connection, "configuration": configuration}})


#: How :func:`compile_agent_query`'s count query starts: ``SELECT COUNT(*) ... FROM (<base>)``.
_COUNT_PREFIX = "SELECT COUNT(*) AS total FROM ("


async def get_agents_summary_os(ctx: DapiContext, agent_list: Any = None,
                                **_: Any) -> AffectedItemsWazuhResult:
    """The distinct OS platforms of the agents (000 excluded)."""
    result = AffectedItemsWazuhResult(
        none_msg="Could not get the operative system of the agents",
        all_msg="Showing the operative system of all specified agents",
        some_msg="Could not get the operative system of some agents")
    wanted = requested(agent_list)
    if wanted is not None and not wanted:
        return result
    ids = None if wanted is None else [agent_id_text(a) for a in wanted]
    query = compile_agent_query(now=now(ctx), select=["os.platform"], distinct=True,
                                extra=_NOT_MANAGER, agent_ids=ids, min_select=())
    items, _total = await run_agent_query(ctx, query, count=False)
    result.affected_items = [i["os"]["platform"] for i in items if "platform" in i.get("os", {})]
    result.total_affected_items = len(result.affected_items)
    return result


async def get_agents_keys(ctx: DapiContext, agent_list: Any = None,
                          **_: Any) -> AffectedItemsWazuhResult:
    """The enrollment key of each agent (base64 of ``"<id> <name> <registration IP> <key>"``)."""
    result = AffectedItemsWazuhResult(all_msg="Obtained keys for all selected agents",
                                      some_msg="Some agent keys were not obtained",
                                      none_msg="No agent keys were obtained")
    wanted = requested(agent_list)
    rows = await database(ctx).select(
        "SELECT id, name, register_ip, internal_key FROM agent ORDER BY id")
    by_id = {agent_id_text(r["id"]): r for r in rows}
    ids = list(by_id) if wanted is None else [agent_id_text(a) for a in wanted]
    for agent_id in ids:
        row = by_id.get(agent_id)
        if row is None:
            result.add_failed_item(agent_id, WazuhResourceNotFound(1701))
        elif agent_id == "000":
            result.add_failed_item(agent_id, WazuhError(1703))
        else:
            text = f"{agent_id} {row.get('name', '')} {row.get('register_ip', '')} " \
                   f"{row.get('internal_key', '')}"
            result.affected_items.append(
                {"id": agent_id, "key": base64.b64encode(text.encode()).decode()})
    result.total_affected_items = len(result.affected_items)
    result.affected_items.sort(key=lambda i: i["id"])
    drop_codes(result, [1701, 1703], wanted is not None)
    return result


async def delete_agents(ctx: DapiContext, agent_list: Any = None, purge: bool = False,
                        filters: dict[str, Any] | None = None, q: str | None = None,
                        **_: Any) -> AffectedItemsWazuhResult:
    """Delete agents matching ``filters``/``q`` from ``client.keys`` and the database.

    000 fails with 1703, unknown ids with 1701, listed agents not matching the filters with
    1731. ``purge=False`` keeps the key lines marked removed (``!name``), as Wazuh does.
    """
    require_master(ctx)
    result = AffectedItemsWazuhResult(all_msg="All selected agents were deleted",
                                      some_msg="Some agents were not deleted",
                                      none_msg="No agents were deleted")
    wanted = requested(agent_list)
    if wanted is not None and not wanted:
        return result
    if wanted is None:
        known = targets = set(await all_agent_ids(ctx))
    else:
        targets = {agent_id_text(a) for a in wanted}
        known = await existing_agent_ids(ctx, targets)
    query = compile_agent_query(now=now(ctx), limit=None, select=["id"], filters=filters, q=q)
    items, _total = await run_agent_query(ctx, query, count=False)
    eligible = {i["id"] for i in items}
    if "000" in targets:
        targets.discard("000")
        result.add_failed_item("000", WazuhError(1703))
    missing = targets - known
    for agent_id in missing:
        result.add_failed_item(agent_id, WazuhResourceNotFound(1701))
    not_eligible = targets - missing - eligible
    if not_eligible:
        shown = ", ".join(f"{k}: {v}" for k, v in (filters or {}).items() if k != "rbac_ids")
        error = WazuhError(1731, extra_message="some of the requirements are not met -> "
                                               f"{shown}" + (f", q: {q}" if q else ""))
        for agent_id in not_eligible:
            result.add_failed_item(agent_id, error)
    to_delete = sorted(int(a) for a in targets & known & eligible)
    registrar = getattr(getattr(ctx.node, "enrolment", None), "registrar", None)
    if to_delete and registrar is not None:
        # the registration service owns client.keys on the master: one serialised writer
        outcomes = [await d for d in [registrar.remove(i, purge) for i in to_delete]]
        deleted = [o.line.agent_id for o in outcomes if o.line is not None]
        result.affected_items = sort_ids([agent_id_text(a) for a in deleted])
    elif to_delete:
        deleted = await database(ctx).delete_agents(
            to_delete, os.path.join(home(ctx), "etc", "client.keys"), purge)
        result.affected_items = sort_ids([agent_id_text(a) for a in deleted])
    result.total_affected_items = len(result.affected_items)
    drop_codes(result, [1701, 1703, 1731], wanted is not None)
    return result


FUNCTIONS: dict[str, Callable[..., Awaitable[Any]]] = {
    "wazuh.core.agent.Agent.get_agents_overview": get_agents_overview,
    "wazuh.agent.get_agents": get_agents,
    "wazuh.agent.get_agents_summary_status": get_agents_summary_status,
    "wazuh.agent.get_agents_summary_os": get_agents_summary_os,
    "wazuh.agent.get_agents_keys": get_agents_keys,
    "wazuh.agent.delete_agents": delete_agents,
}
