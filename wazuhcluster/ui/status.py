"""The status page's data: the DAPI function ``wazuhcluster.ui.get_status``, answered by the
master (a page served by a worker asks the master through the DAPI, as any API call)."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.results import WazuhResult
from wazuhcluster.metrics.registry import AGENTS_SQL
from wazuhcluster.ui.history import SyncHistory, SyncRecord

GET_STATUS = "wazuhcluster.ui.get_status"
#: How much of the end of cluster.log is read for its last ERROR/WARNING lines.
LOG_TAIL_BYTES = 256 * 1024
LOG_LINES = 15
#: At most this many syncs go to the page (the newest, plus the slowest of the hour, so that
#: the chart keeps its peaks): the page and its JSON stay small with many workers.
MAX_SYNCS = 2000
_PROBLEM = re.compile(r"^\S+ \S+ (ERROR|WARNING|CRITICAL): ")


def problem_lines(path: str, limit: int = LOG_LINES,
                  tail_bytes: int = LOG_TAIL_BYTES) -> list[str]:
    """The last ``limit`` ERROR/WARNING/CRITICAL lines in the last ``tail_bytes`` of the log
    at ``path`` (blocking: run it on the node's runner)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            data = f.read(tail_bytes)
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if size > tail_bytes and lines:
        lines = lines[1:]  # the first one is probably cut
    found = [line[:1000] for line in lines if _PROBLEM.match(line)]
    return found[-limit:]


def _nodes(health: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = []
    for name, entry in health.get("nodes", {}).items():
        info = entry.get("info", {})
        status = entry.get("status", {})
        check = status.get("last_check_integrity", {})
        sync = status.get("last_sync_integrity", {})
        files = sync.get("total_files", {})
        info_sync = status.get("last_sync_agentinfo", {})
        nodes.append({
            "name": str(name), "type": str(info.get("type", "")),
            "version": str(info.get("version", "")), "ip": str(info.get("ip", "")),
            "active_agents": int(info.get("n_active_agents") or 0),
            "connected_since": str(status.get("connected_since", "")),
            "last_keep_alive": str(status.get("last_keep_alive", "")),
            "last_check_integrity": {"start": str(check.get("date_start_master", "n/a")),
                                     "end": str(check.get("date_end_master", "n/a"))},
            "last_sync_integrity": {"start": str(sync.get("date_start_master", "n/a")),
                                    "end": str(sync.get("date_end_master", "n/a")),
                                    "created": int(files.get("missing", 0)),
                                    "updated": int(files.get("shared", 0)),
                                    "deleted": int(files.get("extra", 0))},
            "last_sync_agentinfo": {"start": str(info_sync.get("date_start_master", "n/a")),
                                    "end": str(info_sync.get("date_end_master", "n/a")),
                                    "chunks": int(info_sync.get("n_synced_chunks", 0))},
        })
    nodes.sort(key=lambda n: (n["type"] != "master", n["name"]))
    return nodes


def shown_syncs(records: list[SyncRecord], limit: int = MAX_SYNCS) -> list[SyncRecord]:
    """``records`` when they are few; else the newest ``limit - limit // 10`` and the slowest
    of the others, in time order."""
    if len(records) <= limit:
        return records
    newest = records[-(limit - limit // 10):]
    older = records[:-(limit - limit // 10)]
    slowest = sorted(older, key=lambda r: r.duration, reverse=True)[:limit // 10]
    return sorted(slowest, key=lambda r: r.ended) + newest


def status_json(data: dict[str, Any]) -> bytes:
    """``data`` (the answer of ``get_status``) as the JSON of ``/ui/data``. A sync that
    carries its own JSON text (a :class:`~wazuhcluster.ui.history.SyncView`, on the master)
    is not encoded again: the hour's syncs are most of the text."""
    rest = {key: value for key, value in data.items() if key != "syncs"}
    head = json.dumps(rest)
    if "syncs" not in data:
        return head.encode()
    syncs = ", ".join(getattr(s, "json", None) or json.dumps(s) for s in data["syncs"])
    return f'{head[:-1]}{", " if rest else ""}"syncs": [{syncs}]}}'.encode()


def make_get_status(history: SyncHistory) -> Any:
    """The DAPI function, bound to the node's sync history."""

    async def get_status(ctx: DapiContext, **_: Any) -> WazuhResult:
        """Nodes, last syncs, agents by status and node, recent syncs and log problems."""
        node = ctx.node
        health = await node.get_health(None) if hasattr(node, "get_health") else {}
        agents: dict[str, dict[str, int]] = {}
        if ctx.agent_db is not None:
            for row in await ctx.agent_db.select(AGENTS_SQL):
                per = agents.setdefault(str(row.get("node_name") or "unknown"), {})
                per[str(row.get("connection_status") or "unknown")] = int(row.get("n", 0))
        log = await ctx.run(problem_lines, ctx.config.log_path)
        return WazuhResult({"data": {
            "cluster": ctx.config.name, "node": ctx.config.node_name,
            "now": node.clock.seconds(), "history_seconds": history.keep,
            "nodes": _nodes(health), "agents": agents,
            # Each sync's dict is made once and shared by every page (read-only).
            "syncs": [r.view() for r in shown_syncs(history.recent())],
            "log": log}})

    return get_status
