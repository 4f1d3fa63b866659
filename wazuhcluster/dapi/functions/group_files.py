"""Group file functions of the framework (``wazuh.agent``): a group's files, its agent.conf
(read and replace), and removing many agents from one group.

``etc/shared/<group>/agent.conf`` is replaced atomically; integrity sync carries it to the
workers. agent.conf is parsed into Wazuh's ``{"filters": {...}, "config": {...}}`` blocks with
a generic XML-to-JSON conversion (attributes of ``<agent_config>`` are the filters; each child
element becomes a key, repeated elements a list, text leaves strings).
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from typing import Any

from wazuhcluster.agents.merged import atomic_write
from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.functions.common import (
    agent_id_text,
    existing_agent_ids,
    requested,
    require_master,
    shared_dir,
)
from wazuhcluster.dapi.functions.groups import _groups, _unset
from wazuhcluster.dapi.query import DATABASE_LIMIT, process_array
from wazuhcluster.dapi.results import (
    AffectedItemsWazuhResult,
    WazuhError,
    WazuhException,
    WazuhResourceNotFound,
    WazuhResult,
)

GROUP_FILES_FIELDS = ["filename", "hash"]
_HASHES = {"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "blake2b", "blake2s",
           "sha3_224", "sha3_256", "sha3_384", "sha3_512"}
MAX_AGENT_CONF = 10 * 1024 * 1024


def _hash(path: str, algorithm: str) -> str | None:
    try:
        h = hashlib.new(algorithm)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(65536), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def _list_group_files(shared: str, group_id: str, algorithm: str) -> list[dict[str, Any]]:
    directory = os.path.join(shared, group_id)
    items = [{"filename": entry, "hash": _hash(os.path.join(directory, entry), algorithm)}
             for entry in sorted(os.listdir(directory))
             if os.path.isfile(os.path.join(directory, entry))]
    ar_hash = _hash(os.path.join(shared, "ar.conf"), algorithm)
    if ar_hash is not None:  # listed with every group, as Wazuh does, when it exists
        items.append({"filename": "ar.conf", "hash": ar_hash})
    return [item for item in items if item["hash"] is not None]


async def get_group_files(ctx: DapiContext, group_list: Any = None, offset: Any = 0,
                          limit: Any = None, search_text: str | None = None,
                          search_in_fields: Any = None, complementary_search: bool = False,
                          sort_by: Any = None, sort_ascending: bool = True,
                          hash_algorithm: str = "md5", q: str | None = None, select: Any = None,
                          distinct: bool = False, **_: Any) -> AffectedItemsWazuhResult:
    """The files of a group with their hashes (plus ``ar.conf``, as Wazuh lists it)."""
    result = AffectedItemsWazuhResult(all_msg="All selected groups files were returned",
                                      some_msg="Some groups files were not returned",
                                      none_msg="No groups files were returned")
    group_id = (requested(group_list) or [""])[0]
    if group_id not in await _groups(ctx):
        result.add_failed_item(group_id, WazuhResourceNotFound(1710))
        return result
    if hash_algorithm not in _HASHES:
        raise WazuhError(1723)
    items = await ctx.run(_list_group_files, shared_dir(ctx), group_id, hash_algorithm)
    data = process_array(items, search_text=search_text, search_in_fields=search_in_fields,
                         complementary_search=complementary_search, sort_by=sort_by,
                         sort_ascending=sort_ascending, offset=offset, limit=limit, q=q,
                         select=select, allowed_select_fields=GROUP_FILES_FIELDS,
                         distinct=distinct, required_fields=["filename"])
    result.affected_items = data["items"]
    result.total_affected_items = data["totalItems"]
    return result


def _to_json(element: ET.Element) -> Any:
    children = list(element)
    if not children:
        text = (element.text or "").strip()
        if element.attrib:
            return {**element.attrib, "item": text} if text else dict(element.attrib)
        return text
    out: dict[str, Any] = dict(element.attrib)
    for child in children:
        value = _to_json(child)
        if child.tag in out:
            if not isinstance(out[child.tag], list):
                out[child.tag] = [out[child.tag]]
            out[child.tag].append(value)
        else:
            out[child.tag] = value
    return out


def _parse_agent_conf(text: str) -> list[dict[str, Any]]:
    """``<agent_config ...>`` blocks of an agent.conf (raises ET.ParseError)."""
    root = ET.fromstring(f"<root>{text}</root>")
    blocks = []
    for block in root.iter("agent_config"):
        config = _to_json(block) if len(block) else {}
        if isinstance(config, dict):
            for key in block.attrib:
                config.pop(key, None)
        blocks.append({"filters": dict(block.attrib), "config": config or {}})
    return blocks


def _read_agent_conf(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


async def get_agent_conf(ctx: DapiContext, group_list: Any = None, filename: str = "agent.conf",
                         offset: Any = 0, limit: Any = DATABASE_LIMIT, **_: Any) -> WazuhResult:
    """A group's agent.conf as ``{"data": {"total_affected_items", "affected_items"}}``."""
    group_id = (requested(group_list) or [""])[0]
    if group_id not in await _groups(ctx):
        raise WazuhResourceNotFound(1710)
    if filename != "agent.conf":
        raise WazuhError(1006)
    path = os.path.join(shared_dir(ctx), group_id, "agent.conf")
    try:
        text = await ctx.run(_read_agent_conf, path)
    except (OSError, UnicodeDecodeError):
        raise WazuhError(1006, path) from None
    try:
        blocks = _parse_agent_conf(text)
    except ET.ParseError as exc:
        raise WazuhError(1113, str(exc)) from None
    offset, limit = int(offset or 0), int(limit or DATABASE_LIMIT)
    return WazuhResult({"data": {"total_affected_items": len(blocks),
                                 "affected_items": blocks[offset:offset + limit]}})


async def upload_group_file(ctx: DapiContext, group_list: Any = None, file_data: Any = None,
                            file_name: str = "agent.conf", **_: Any) -> WazuhResult:
    """Replace a group's agent.conf with ``file_data`` (well-formed XML only)."""
    require_master(ctx)
    group_id = (requested(group_list) or [""])[0]
    if group_id not in await _groups(ctx):
        raise WazuhResourceNotFound(1710)
    if file_name != "agent.conf":
        raise WazuhError(1111, "only agent.conf can be uploaded")
    if not isinstance(file_data, str) or not file_data.strip():
        raise WazuhError(1112)
    data = file_data.encode("utf-8")
    if len(data) > MAX_AGENT_CONF:
        raise WazuhError(1112, "the file is too large")
    try:
        _parse_agent_conf(file_data)
    except ET.ParseError as exc:
        raise WazuhError(1113, str(exc)) from None
    path = os.path.join(shared_dir(ctx), group_id, "agent.conf")
    await ctx.run(atomic_write, path, data)
    return WazuhResult({"message": "Agent configuration was updated successfully"})


async def remove_agents_from_group(ctx: DapiContext, agent_list: Any = None,
                                   group_list: Any = None, **_: Any) -> AffectedItemsWazuhResult:
    """Remove many agents (every agent of the group when none are named) from one group."""
    require_master(ctx)
    group_id = (requested(group_list) or [""])[0]
    result = AffectedItemsWazuhResult(
        all_msg=f"All selected agents were removed from group {group_id}",
        some_msg=f"Some agents were not removed from group {group_id}",
        none_msg=f"No agent was removed from group {group_id}")
    if group_id not in await _groups(ctx):
        raise WazuhResourceNotFound(1710)
    wanted = requested(agent_list)
    if wanted is None:
        from wazuhcluster.dapi.functions.groups import get_agents_in_group

        members = await get_agents_in_group(ctx, group_list=[group_id], select=["id"],
                                            limit=100000)
        wanted = [a["id"] for a in members.affected_items]
    ids = [agent_id_text(a) for a in wanted]
    known = await existing_agent_ids(ctx, ids)
    for agent_id in ids:
        try:
            if agent_id == "000":
                raise WazuhError(1703)
            if agent_id not in known:
                raise WazuhResourceNotFound(1701)
            await _unset(ctx, agent_id, group_id)
            result.affected_items.append(agent_id)
        except WazuhException as exc:
            result.add_failed_item(agent_id, exc)
    result.affected_items.sort(key=int)
    result.total_affected_items = len(result.affected_items)
    return result


FUNCTIONS: dict[str, Any] = {
    "wazuh.agent.get_group_files": get_group_files,
    "wazuh.agent.get_agent_conf": get_agent_conf,
    "wazuh.agent.upload_group_file": upload_group_file,
    "wazuh.agent.remove_agents_from_group": remove_agents_from_group,
}
