"""get_nodes and get_health answers, as pure functions of node descriptions."""

from __future__ import annotations

import datetime
from typing import Any

from wazuhcluster.errors import ClusterError

NODE_FIELDS = ("name", "type", "version", "ip")


def format_date(seconds: float) -> str:
    """Wazuh's health date format; never-set dates (0) are ``n/a``."""
    if not seconds:
        return "n/a"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def get_nodes(nodes: list[dict[str, str]], kwargs: Any) -> dict[str, Any]:
    """Filter, search, sort, select and page a node list as Wazuh's get_nodes does."""
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    items = list(nodes)
    filter_type = kwargs.get("filter_type", "all") or "all"
    if filter_type not in ("all", "master", "worker"):
        raise ClusterError(1728, str(filter_type), class_name="WazuhError")
    if filter_type != "all":
        items = [n for n in items if n["type"] == filter_type]
    filter_node = kwargs.get("filter_node")
    if filter_node:
        wanted = [filter_node] if isinstance(filter_node, str) else list(filter_node)
        known = {n["name"] for n in items}
        missing = [w for w in wanted if w not in known]
        if missing:
            raise ClusterError(1730, ", ".join(map(str, missing)),
                               class_name="WazuhResourceNotFound")
        items = [n for n in items if n["name"] in wanted]
    search = kwargs.get("search")
    if isinstance(search, dict) and search.get("value"):
        value = str(search["value"]).lower()
        hit = [n for n in items if any(value in str(v).lower() for v in n.values())]
        items = [n for n in items if n not in hit] if search.get("negation") else hit
    sort = kwargs.get("sort")
    if isinstance(sort, dict) and sort.get("fields"):
        fields = [f for f in sort["fields"] if f in NODE_FIELDS]
        items.sort(key=lambda n: tuple(n[f] for f in fields),
                   reverse=sort.get("order") == "desc")
    select = kwargs.get("select")
    if select:
        bad = [s for s in select if s not in NODE_FIELDS]
        if bad:
            raise ClusterError(1724, ", ".join(map(str, bad)), class_name="WazuhError")
        items = [{k: n[k] for k in NODE_FIELDS if k in select or k == "name"} for n in items]
    if kwargs.get("distinct"):
        unique: list[dict[str, str]] = []
        for n in items:
            if n not in unique:
                unique.append(n)
        items = unique
    total = len(items)
    offset = int(kwargs.get("offset") or 0)
    limit = kwargs.get("limit")
    items = items[offset:offset + int(limit)] if limit is not None else items[offset:]
    return {"items": items, "totalItems": total}


def render_status(status: dict[str, Any]) -> dict[str, Any]:
    """Turn the clock-second fields of a worker status into Wazuh date strings."""
    rendered: dict[str, Any] = {}
    for key, value in status.items():
        if isinstance(value, dict):
            rendered[key] = render_status(value)
        elif key.startswith("date_") or key == "last_keep_alive":
            rendered[key] = format_date(float(value))
        else:
            rendered[key] = value
    return rendered


def get_health(master: dict[str, Any], workers: list[dict[str, Any]],
               filter_nodes: Any) -> dict[str, Any]:
    """Build the health answer; ``filter_nodes`` is null or a list of names."""
    wanted = filter_nodes if isinstance(filter_nodes, list) else None
    nodes: dict[str, Any] = {}
    if wanted is None or master["info"]["name"] in wanted:
        nodes[master["info"]["name"]] = master
    selected = [w for w in workers if not wanted or w["info"]["name"] in wanted]
    for worker in selected:
        nodes[worker["info"]["name"]] = worker
    return {"n_connected_nodes": len(selected), "nodes": nodes}
