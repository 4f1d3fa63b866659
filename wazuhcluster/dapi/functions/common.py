"""Helpers shared by the native DAPI functions: agent-list handling and database access."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.query import (
    CompiledQuery,
    agent_row_formatter,
    format_agent_row,
    id_condition,
)
from wazuhcluster.dapi.results import (
    AffectedItemsWazuhResult,
    WazuhClusterError,
    WazuhInternalError,
)
from wazuhcluster.interfaces import IAgentPageReader


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
    """Run a compiled agent query: formatted items and the total before pagination.

    With a database that reads pages as one job (:class:`IAgentPageReader`, the embedded
    one), the page, its count and the formatting of its rows run together on the database
    thread, rows formatted straight from SQLite's tuples; otherwise rows come as dicts and
    big pages are formatted in the node's pool."""
    db = database(ctx)
    if IAgentPageReader.providedBy(db):
        shape = partial(_shape_tuples, ctx.config.node_name, f"Wazuh v{ctx.config.version}",
                        query.select)
        items, total = await db.select_page(query.sql, query.params,
                                            query.count_sql if count else None,
                                            query.count_params, shape)
        return items, total
    rows = await db.select(query.sql, query.params)
    total = len(rows)
    if count:
        total = await db.count(query.count_sql, query.count_params)
    if len(rows) > _INLINE_ROWS:  # formatting is CPU work: keep the reactor free
        items = await ctx.run(_format_rows, ctx, rows, query.select)
        return items, total
    return _format_rows(ctx, rows, query.select), total


#: Up to this many rows are formatted in the reactor thread (cheaper than a thread hop).
_INLINE_ROWS = 50
_MANAGER_IDS = (0, "0", "000")


def _format_rows(ctx: DapiContext, rows: list[dict[str, Any]], select: tuple[str, ...]
                 ) -> list[dict[str, Any]]:
    node_name, version = ctx.config.node_name, f"Wazuh v{ctx.config.version}"
    return [format_agent_row(_manager_row(node_name, version, r, select)) for r in rows]


def _shape_tuples(node_name: str, version: str, select: tuple[str, ...], names: list[str],
                  rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """:func:`_format_rows` of the same rows given as SQLite tuples (runs on the database
    thread): the manager's row goes the dict way, every other row straight from its tuple."""
    format_row = agent_row_formatter(names)
    if "id" not in names:
        return [format_row(r) for r in rows]
    at = names.index("id")
    return [format_row(r) if r[at] not in _MANAGER_IDS else
            format_agent_row(_manager_row(node_name, version, {
                n: v for n, v in zip(names, r, strict=True) if v is not None}, select))
            for r in rows]


def _manager_row(node_name: str, version: str, row: dict[str, Any], select: tuple[str, ...]
                 ) -> dict[str, Any]:
    """Agent 000 with this node's name and Wazuh version when the database has none (as
    wazuh-db keeps them for the manager)."""
    if row.get("id") not in _MANAGER_IDS:
        return row
    row = dict(row)
    for key, value in (("node_name", node_name), ("version", version)):
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
