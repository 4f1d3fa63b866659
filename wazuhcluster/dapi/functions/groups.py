"""Group functions of the framework (``wazuh.agent``): list, members, assignment, create,
delete.

A group exists when its directory ``etc/shared/<group>`` exists, as in Wazuh; assignments
live in the agent database (``belongs``) and are changed with ``IAgentDatabase``'s
``set_agent_groups``/``delete_groups`` with ``group_sync_status = syncreq``, so the periodic
agent-groups push carries them to the workers, and the group directories reach the workers
through integrity sync.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Awaitable, Callable
from typing import Any

from wazuhcluster.agents.merged import atomic_write
from wazuhcluster.agents.payloads import MAX_GROUPS_PER_AGENT, PayloadError, check_group_name
from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.functions.agents import get_agents
from wazuhcluster.dapi.functions.common import (
    agent_id_text,
    all_agent_ids,
    database,
    drop_codes,
    existing_agent_ids,
    group_dirs,
    requested,
    require_master,
    shared_dir,
    sort_ids,
)
from wazuhcluster.dapi.query import DATABASE_LIMIT, process_array
from wazuhcluster.dapi.results import (
    AffectedItemsWazuhResult,
    WazuhError,
    WazuhInternalError,
    WazuhResourceNotFound,
    WazuhResult,
)

GROUP_FIELDS = ["name", "mergedSum", "configSum", "count"]
GROUP_REQUIRED_FIELDS = ["name"]

#: agent.conf of a new group when ``etc/shared/agent-template.conf`` is absent.
_DEFAULT_AGENT_CONF = (b"<agent_config>\n\n  <!-- Shared agent configuration here -->\n\n"
                       b"</agent_config>\n")

_HASHES = {"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "blake2b", "blake2s",
           "sha3_224", "sha3_256", "sha3_384", "sha3_512"}


def valid_group_name(name: Any) -> bool:
    try:
        check_group_name(name)
    except PayloadError:
        return False
    return True


async def _groups(ctx: DapiContext) -> set[str]:
    result: set[str] = await ctx.run(group_dirs, shared_dir(ctx))
    return result


async def _agent_groups(ctx: DapiContext, agent_id: str) -> list[str]:
    rows = await database(ctx).select(
        "SELECT g.name AS name FROM belongs b JOIN `group` g ON g.id = b.id_group"
        " WHERE b.id_agent = ? ORDER BY b.priority", (int(agent_id),))
    return [r["name"] for r in rows]


def _file_hash(path: str, algorithm: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.new(algorithm, f.read()).hexdigest()
    except OSError:
        return None


def _group_sums(shared: str, names: list[str], algorithm: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name in names:
        sums = {}
        merged = _file_hash(os.path.join(shared, name, "merged.mg"), algorithm)
        if merged:
            sums["mergedSum"] = merged
        conf = _file_hash(os.path.join(shared, name, "agent.conf"), algorithm)
        if conf:
            sums["configSum"] = conf
        out[name] = sums
    return out


async def get_agent_groups(ctx: DapiContext, group_list: Any = None, offset: Any = 0,
                           limit: Any = None, sort_by: Any = None, sort_ascending: bool = True,
                           search_text: str | None = None, complementary_search: bool = False,
                           hash_algorithm: str = "md5", q: str | None = None, select: Any = None,
                           distinct: bool = False, **_: Any) -> AffectedItemsWazuhResult:
    """The groups with their agent count and the hashes of ``merged.mg``/``agent.conf``."""
    result = AffectedItemsWazuhResult(all_msg="All selected groups information was returned",
                                      some_msg="Some groups information was not returned",
                                      none_msg="No group information was returned")
    wanted = requested(group_list)
    if wanted is not None and not wanted:
        return result
    if hash_algorithm not in _HASHES:
        raise WazuhError(1723, extra_message=str(hash_algorithm))
    system = await _groups(ctx)
    if wanted is not None:
        for name in set(wanted) - system:
            result.add_failed_item(name, WazuhResourceNotFound(1710))
    names = sorted(system if wanted is None else system & set(wanted))
    rows = await database(ctx).select(
        "SELECT g.name AS name, COUNT(b.id_group) AS count FROM `group` g"
        " LEFT JOIN belongs b ON b.id_group = g.id GROUP BY g.name")
    counts = {r["name"]: r.get("count", 0) for r in rows}
    sums = await ctx.run(_group_sums, shared_dir(ctx), names, hash_algorithm)
    items = [{"name": n, "count": counts.get(n, 0), **sums.get(n, {})} for n in names]
    data = process_array(items, offset=offset, limit=limit, allowed_sort_fields=GROUP_FIELDS,
                         sort_by=sort_by, sort_ascending=sort_ascending, search_text=search_text,
                         complementary_search=complementary_search, q=q,
                         allowed_select_fields=GROUP_FIELDS, select=select, distinct=distinct,
                         required_fields=GROUP_REQUIRED_FIELDS)
    result.affected_items = data["items"]
    result.total_affected_items = data["totalItems"]
    drop_codes(result, [1710], wanted is not None)
    return result


async def get_agents_in_group(ctx: DapiContext, group_list: Any = None, offset: Any = 0,
                              limit: Any = DATABASE_LIMIT, sort: Any = None, search: Any = None,
                              select: Any = None, filters: dict[str, Any] | None = None,
                              q: str | None = None, distinct: bool = False,
                              **_: Any) -> AffectedItemsWazuhResult:
    """The agents of one group (1710 if the group does not exist)."""
    names = requested(group_list) or []
    if not names or names[0] not in await _groups(ctx):
        raise WazuhResourceNotFound(1710)
    group_q = f"group={names[0]}"
    return await get_agents(ctx, offset=offset, limit=limit, sort=sort, search=search,
                            select=select, filters=filters,
                            q=f"{group_q};({q})" if q else group_q, distinct=distinct)


async def create_group(ctx: DapiContext, group_id: Any = None, **_: Any) -> WazuhResult:
    """Create ``etc/shared/<group_id>`` with its ``agent.conf`` (from
    ``etc/shared/agent-template.conf`` when present) and the group in the database."""
    require_master(ctx)
    if not isinstance(group_id, str) or not valid_group_name(group_id):
        raise WazuhError(1722)
    shared = shared_dir(ctx)
    path = os.path.join(shared, group_id)

    def make() -> str | None:
        if group_id.lower() == "default" or os.path.lexists(path):
            return "file" if os.path.isfile(path) else "exists"
        os.makedirs(shared, mode=0o770, exist_ok=True)
        os.mkdir(path, 0o770)
        try:
            with open(os.path.join(shared, "agent-template.conf"), "rb") as f:
                template = f.read()
        except OSError:
            template = _DEFAULT_AGENT_CONF
        atomic_write(os.path.join(path, "agent.conf"), template, 0o660)
        return None

    try:
        problem = await ctx.run(make)
    except OSError as exc:
        raise WazuhInternalError(1005, extra_message=str(exc)) from exc
    if problem == "file":
        raise WazuhError(1713, extra_message=group_id)
    if problem == "exists":
        raise WazuhError(1711, extra_message=group_id)
    await database(ctx).create_groups([group_id])
    return WazuhResult({"message": f"Group '{group_id}' created."})


async def delete_groups(ctx: DapiContext, group_list: Any = None,
                        **_: Any) -> AffectedItemsWazuhResult:
    """Delete groups: their directory, and their assignments (agents left without groups go
    back to ``default``). ``default`` fails with 1712, unknown groups with 1710."""
    require_master(ctx)
    result = AffectedItemsWazuhResult(all_msg="All selected groups were deleted",
                                      some_msg="Some groups were not deleted",
                                      none_msg="No group was deleted")
    wanted = requested(group_list)
    system = await _groups(ctx)
    names = sorted(system) if wanted is None else wanted
    shared = shared_dir(ctx)
    for name in names:
        if name not in system:
            result.add_failed_item(name, WazuhResourceNotFound(1710))
            continue
        if name == "default":
            result.add_failed_item(name, WazuhError(1712))
            continue
        try:
            await ctx.run(shutil.rmtree, os.path.join(shared, name))
        except OSError as exc:
            result.add_failed_item(name, WazuhError(1907, extra_message=str(exc)))
            continue
        await database(ctx).delete_groups([name])
        result.affected_items.append(name)
    result.total_affected_items = len(result.affected_items)
    drop_codes(result, [1710, 1712], wanted is not None)
    return result


async def assign_agents_to_group(ctx: DapiContext, group_list: Any = None, agent_list: Any = None,
                                 replace: bool = False, replace_list: Any = None,
                                 **_: Any) -> AffectedItemsWazuhResult:
    """Add agents to a group (``replace``: make it their only group, allowed only for agents
    whose groups are all in ``replace_list``)."""
    require_master(ctx)
    group_id = (requested(group_list) or [""])[0]
    extra = " and removed from the other groups" if replace else ""
    result = AffectedItemsWazuhResult(
        all_msg=f"All selected agents were assigned to {group_id}{extra}",
        some_msg=f"Some agents were not assigned to {group_id}{extra}",
        none_msg=f"No agents were assigned to {group_id}")
    if not valid_group_name(group_id):
        raise WazuhError(1722)
    if group_id not in await _groups(ctx):
        raise WazuhResourceNotFound(1710)
    wanted = requested(agent_list)
    if wanted is None:
        known = ids = set(await all_agent_ids(ctx))
    else:
        ids = {agent_id_text(a) for a in wanted}
        known = await existing_agent_ids(ctx, ids)
    if "000" in ids:
        ids.discard("000")
        result.add_failed_item("000", WazuhError(1703))
    for agent_id in ids - known:
        result.add_failed_item(agent_id, WazuhResourceNotFound(1701))
    allowed = set(requested(replace_list) or [])
    db = database(ctx)
    for agent_id in sort_ids(list(ids & known)):
        current = await _agent_groups(ctx, agent_id)
        if replace and not set(current) <= allowed:
            result.add_failed_item(agent_id, WazuhError(1752))
            continue
        if not replace and group_id in current:
            result.add_failed_item(agent_id, WazuhError(1751))
            continue
        if len(current) >= MAX_GROUPS_PER_AGENT:
            result.add_failed_item(agent_id, WazuhError(1737))
            continue
        outcome = await db.set_agent_groups([(int(agent_id), [group_id])],
                                            mode="override" if replace else "append",
                                            sync_status="syncreq")
        if outcome.failed_agents:
            result.add_failed_item(agent_id, WazuhError(1751))
            continue
        result.affected_items.append(agent_id)
    result.affected_items = sort_ids(result.affected_items)
    result.total_affected_items = len(result.affected_items)
    drop_codes(result, [1701, 1703, 1751, 1752], wanted is not None)
    return result


async def _unset(ctx: DapiContext, agent_id: str, group_id: str) -> str:
    """Remove one agent from one group; the confirmation message (1734, 1745)."""
    current = await _agent_groups(ctx, agent_id)
    if group_id not in current:
        raise WazuhError(1734)
    set_default = len(current) == 1
    if set_default and group_id == "default":
        raise WazuhError(1745)
    await database(ctx).set_agent_groups([(int(agent_id), [group_id])], mode="remove",
                                         sync_status="syncreq")
    return (f"Agent '{agent_id}' removed from '{group_id}'."
            + (" Agent reassigned to group default." if set_default else ""))


async def remove_agent_from_group(ctx: DapiContext, group_list: Any = None,
                                  agent_list: Any = None, **_: Any) -> WazuhResult:
    """Remove one agent from one group."""
    require_master(ctx)
    group_id = (requested(group_list) or [""])[0]
    agent_id = agent_id_text((requested(agent_list) or [""])[0])
    if agent_id not in await existing_agent_ids(ctx, [agent_id]):
        raise WazuhResourceNotFound(1701)
    if agent_id == "000":
        raise WazuhError(1703)
    if group_id not in await _groups(ctx):
        raise WazuhResourceNotFound(1710)
    return WazuhResult({"message": await _unset(ctx, agent_id, group_id)})


async def remove_agent_from_groups(ctx: DapiContext, agent_list: Any = None,
                                   group_list: Any = None, **_: Any) -> AffectedItemsWazuhResult:
    """Remove one agent from several groups (all its groups when none are named)."""
    require_master(ctx)
    result = AffectedItemsWazuhResult(all_msg="Specified agent was removed from returned groups",
                                      some_msg="Specified agent was not removed from some groups",
                                      none_msg="Specified agent was not removed from any group")
    agent_id = agent_id_text((requested(agent_list) or [""])[0])
    if agent_id == "000":
        raise WazuhError(1703)
    if agent_id not in await existing_agent_ids(ctx, [agent_id]):
        raise WazuhResourceNotFound(1701)
    wanted = requested(group_list)
    system = await _groups(ctx)
    names = list(sorted(system) if wanted is None else wanted)
    if "default" in names:  # last, so removing the others does not bring it back first
        names.remove("default")
        names.append("default")
    for group_id in names:
        try:
            if group_id not in system:
                raise WazuhResourceNotFound(1710)
            await _unset(ctx, agent_id, group_id)
            result.affected_items.append(group_id)
        except WazuhError as exc:
            result.add_failed_item(group_id, exc)
    result.affected_items.sort()
    result.total_affected_items = len(result.affected_items)
    drop_codes(result, [1710, 1734, 1745], wanted is not None)
    return result


FUNCTIONS: dict[str, Callable[..., Awaitable[Any]]] = {
    "wazuh.agent.get_agent_groups": get_agent_groups,
    "wazuh.agent.get_agents_in_group": get_agents_in_group,
    "wazuh.agent.create_group": create_group,
    "wazuh.agent.delete_groups": delete_groups,
    "wazuh.agent.assign_agents_to_group": assign_agents_to_group,
    "wazuh.agent.remove_agent_from_group": remove_agent_from_group,
    "wazuh.agent.remove_agent_from_groups": remove_agent_from_groups,
}
