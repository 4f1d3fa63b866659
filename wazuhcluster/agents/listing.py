"""Payloads of wazuhcluster's own agent commands (local socket, and ``wzc_ag_mlst`` on the
cluster link). Every request and answer is JSON; decoding is data-only and type-checked.

========== ============ =================================================== =====================
command    where        request                                             answer
========== ============ =================================================== =====================
wzc_ag_list local       ``{"node": name or null}``                          list of agents
wzc_ag_mlst local, W→M  ``{"node": name or null}``                          the master's list
wzc_ag_kal local        ``{"ids": [int...], "os_name", "os_version",        ``{"updated": n,
                        "version"}`` (the last three optional)              "unknown": m}``
wzc_ag_grp local (M)    ``{"id": int, "groups": [name...]}``                ``{"updated": n}``
========== ============ =================================================== =====================

An agent is ``{"id": "001", "name", "ip", "status", "node_name", "last_keepalive" (POSIX
seconds or null), "version", "groups": [...]}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs

from wazuhcluster.agents.db import AgentSummary
from wazuhcluster.agents.payloads import check_group_name
from wazuhcluster.errors import ClusterError
from wazuhcluster.protocol.messages import parse_json

WZC_AG_LIST = b"wzc_ag_list"
WZC_AG_MLST = b"wzc_ag_mlst"
WZC_AG_KAL = b"wzc_ag_kal"
WZC_AG_GRP = b"wzc_ag_grp"
#: The capability a master announces when it serves ``wzc_ag_mlst``.
AGENTS_CAPABILITY = "agents"
#: Most agent ids one keepalive request may carry.
MAX_KEEPALIVE_IDS = 100_000
_MAX_TEXT = 1024


@attrs.frozen
class KeepaliveRequest:
    """A decoded ``wzc_ag_kal`` request."""

    ids: tuple[int, ...]
    os_name: str | None = None
    os_version: str | None = None
    version: str | None = None


def agent_dict(agent: AgentSummary) -> dict[str, Any]:
    """One agent as the CLI prints it."""
    return {"id": f"{agent.agent_id:03d}", "name": agent.name, "ip": agent.ip,
            "status": agent.status, "node_name": agent.node_name,
            "last_keepalive": agent.last_keepalive, "version": agent.version,
            "groups": list(agent.groups)}


def with_manager(agents: Sequence[AgentSummary], node_name: str,
                 version: str) -> list[AgentSummary]:
    """Agent 000 (the manager) shown with the master's node name and Wazuh version when the
    database has none, as a Wazuh master lists it."""
    def known(value: str | None) -> bool:
        return value not in (None, "", "unknown")
    return [attrs.evolve(a, node_name=a.node_name if known(a.node_name) else node_name,
                         version=a.version if known(a.version) else version)
            if a.agent_id == 0 else a for a in agents]


def master_listing(agents: Sequence[AgentSummary], node_filter: str | None, master_name: str,
                   version: str) -> list[AgentSummary]:
    """The master's answer to an agent listing: agent 000 completed (:func:`with_manager`),
    then only the agents of ``node_filter`` if given."""
    shown = with_manager(agents, master_name, f"Wazuh v{version}")
    return shown if node_filter is None else [a for a in shown if a.node_name == node_filter]


#: Agents the JSON encoder writes in one call. The encoder is C code that keeps the GIL from
#: its start to its end: one call for the 200 000 agents of a big listing held it for about
#: 0.3 s on a pool thread, and the reactor, which had given the GIL away for a ``send``,
#: waited all that time to get it back (the scale bed's longest master turn). A slice of
#: 1 000 takes a millisecond or two; between slices the interpreter hands the GIL over.
LISTING_SLICE = 1000


def agents_json(agents: Sequence[AgentSummary]) -> bytes:
    """The answer of a listing (blocking for big lists: run it off the reactor): the bytes of
    ``json.dumps`` of the whole list, encoded :data:`LISTING_SLICE` agents at a time."""
    return b"[" + b", ".join(
        json.dumps([agent_dict(a) for a in agents[start:start + LISTING_SLICE]])[1:-1].encode()
        for start in range(0, len(agents), LISTING_SLICE)) + b"]"


def encode_list_request(node: str | None) -> bytes:
    """A ``wzc_ag_list`` / ``wzc_ag_mlst`` request."""
    return json.dumps({"node": node}).encode()


def parse_list_request(payload: bytes) -> str | None:
    """The node filter of a listing request (empty payload: no filter)."""
    value = parse_json(payload, "agent list request", limit=64 * 1024)
    if value is None:
        return None
    node = value.get("node") if isinstance(value, dict) else None
    if node is not None and (not isinstance(node, str) or len(node) > _MAX_TEXT):
        raise ClusterError(3036, "agent list request: node must be a string")
    return node


def _optional_text(value: dict[str, Any], key: str) -> str | None:
    text = value.get(key)
    if text is not None and (not isinstance(text, str) or len(text) > _MAX_TEXT):
        raise ClusterError(3036, f"keepalive request: {key} must be a string")
    return text


def encode_keepalive_request(request: KeepaliveRequest) -> bytes:
    """A ``wzc_ag_kal`` request."""
    return json.dumps({"ids": list(request.ids), "os_name": request.os_name,
                       "os_version": request.os_version, "version": request.version}).encode()


def parse_keepalive_request(payload: bytes) -> KeepaliveRequest:
    """Decode a ``wzc_ag_kal`` request, or raise 3036."""
    value = parse_json(payload, "keepalive request", limit=16 * 1024 * 1024)
    if not isinstance(value, dict):
        raise ClusterError(3036, "keepalive request must be an object")
    ids = value.get("ids")
    if (not isinstance(ids, list) or len(ids) > MAX_KEEPALIVE_IDS
            or not all(type(i) is int and 0 < i < 2**31 for i in ids)):
        raise ClusterError(3036, "keepalive request: ids must be a list of agent ids")
    return KeepaliveRequest(tuple(ids), _optional_text(value, "os_name"),
                            _optional_text(value, "os_version"),
                            _optional_text(value, "version"))


def encode_groups_request(agent_id: int, groups: Sequence[str]) -> bytes:
    """A ``wzc_ag_grp`` request."""
    return json.dumps({"id": agent_id, "groups": list(groups)}).encode()


def parse_groups_request(payload: bytes) -> tuple[int, tuple[str, ...]]:
    """Decode a ``wzc_ag_grp`` request, or raise 3036 (invalid group names included)."""
    value = parse_json(payload, "set-group request", limit=64 * 1024)
    if not isinstance(value, dict):
        raise ClusterError(3036, "set-group request must be an object")
    agent_id, groups = value.get("id"), value.get("groups")
    if type(agent_id) is int and agent_id == 0:
        raise ClusterError(3000, "agent 000 is the manager: its groups cannot be set")
    if type(agent_id) is not int or not 0 < agent_id < 2**31:
        raise ClusterError(3036, "set-group request: id must be an agent id (not 000)")
    if not isinstance(groups, list) or not groups or len(groups) > 128:
        raise ClusterError(3036, "set-group request: groups must list 1 to 128 names")
    try:
        names = tuple(dict.fromkeys(check_group_name(g) for g in groups))
    except ValueError as e:
        raise ClusterError(3036, f"set-group request: {e}") from None
    return agent_id, names
