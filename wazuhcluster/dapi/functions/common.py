"""Helpers shared by the native DAPI functions: agent-list handling and database access."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.query import CompiledQuery, format_agent_row, id_condition
from wazuhcluster.dapi.results import (
    AffectedItemsWazuhResult,
    WazuhClusterError,
    WazuhInternalError,
)


def database(ctx: DapiContext) -> Any:
    """The node's agent database, or WazuhInternalError(1000) when the node has none."""
    if ctx.agent_db is None:
        raise WazuhInternalError(1000, extra_message="this node has no agent database")
    return ctx.agent_db


def now(ctx: DapiContext) -> int:
    """Current POSIX time from the node's clock."""
    clock = getattr(ctx.node, "clock", None)
    if clock is not None:
        return int(clock.seconds())
    import time

    return int(time.time())


def home(ctx: DapiContext) -> str:
    return str(ctx.config.home)


def is_master(ctx: DapiContext) -> bool:
    role = getattr(ctx.config, "role", None)
    return getattr(role, "value", role) == "master"


def require_master(ctx: DapiContext) -> None:
    """Functions that change the cluster's shared state (keys, groups, ruleset files) run on
    the master only: on a worker their changes would be undone by the next sync."""
    if not is_master(ctx):
        raise WazuhClusterError(3000, extra_message="this function runs only on the master node")


def agent_id_text(value: Any) -> str:
    """An agent id as the framework writes it (``"001"``); non-numeric ids kept as given."""
    text = str(value)
    return text.zfill(3) if text.isdigit() else text


def requested(value: Any) -> list[str] | None:
    """A ``*_list`` argument: None when not given or ``"*"`` (meaning every resource, as
    the framework's permission layer expands it), else the listed ids as text."""
    if value is None or value == "*" or value == ["*"]:
        return None
    if isinstance(value, (str, int)):
        return [str(value)]
    return [str(v) for v in value]


async def all_agent_ids(ctx: DapiContext) -> list[str]:
    """Every agent id of the database (000 included), as ``"001"`` text, ascending."""
    rows = await database(ctx).select("SELECT id FROM agent ORDER BY id")
    return [agent_id_text(r["id"]) for r in rows]


async def existing_agent_ids(ctx: DapiContext, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` exist in the database (as ``"001"`` text)."""
    params: list[Any] = []
    condition = id_condition(ids, params)
    rows = await database(ctx).select(f"SELECT id FROM agent WHERE {condition}", params)
    return {agent_id_text(r["id"]) for r in rows}


async def run_agent_query(ctx: DapiContext, query: CompiledQuery,
                          count: bool = True) -> tuple[list[dict[str, Any]], int]:
    """Run a compiled agent query: formatted items and the total before pagination."""
    db = database(ctx)
    rows = await db.select(query.sql, query.params)
    total = len(rows)
    if count:
        total = await db.count(query.count_sql, query.count_params)
    if len(rows) > _INLINE_ROWS:  # formatting is CPU work: keep the reactor free
        items: list[dict[str, Any]] = await ctx.run(_format_rows, ctx, rows, query.select)
        return items, total
    return _format_rows(ctx, rows, query.select), total


#: Up to this many rows are formatted in the reactor thread (cheaper than a thread hop).
_INLINE_ROWS = 50


def _format_rows(ctx: DapiContext, rows: list[dict[str, Any]], select: tuple[str, ...]
                 ) -> list[dict[str, Any]]:
    return [format_agent_row(_manager_row(ctx, r, select)) for r in rows]


def _manager_row(ctx: DapiContext, row: dict[str, Any], select: tuple[str, ...]
                 ) -> dict[str, Any]:
    """Agent 000 with this node's name and Wazuh version when the database has none (as
    wazuh-db keeps them for the manager)."""
    if row.get("id") not in (0, "0", "000"):
        return row
    row = dict(row)
    for key, value in (("node_name", ctx.config.node_name),
                       ("version", f"Wazuh v{ctx.config.version}")):
        if key in select and row.get(key) in (None, "", "unknown"):
            row[key] = value
    return row


def drop_codes(result: AffectedItemsWazuhResult, codes: Iterable[int], given: bool) -> None:
    """Forget failures with ``codes`` when the caller did not name the resources (the
    framework's permission layer does so for lists it expanded itself)."""
    if not given:
        result.remove_failed_items(codes)


def sort_ids(ids: Sequence[str]) -> list[str]:
    return sorted(ids, key=lambda i: (0, int(i)) if i.isdigit() else (1, 0))


def shared_dir(ctx: DapiContext) -> str:
    return os.path.join(home(ctx), "etc", "shared")


def group_dirs(shared: str) -> set[str]:
    """Names of the group directories under ``etc/shared`` (blocking)."""
    try:
        return {e.name for e in os.scandir(shared) if e.is_dir(follow_symlinks=False)}
    except FileNotFoundError:
        return set()
