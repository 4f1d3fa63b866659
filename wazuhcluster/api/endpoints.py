"""Every endpoint: Wazuh's path, parameters, framework function and DAPI request type.

A handler turns the validated parameters into Wazuh's ``f_kwargs``, runs the function through
the Distributed API (``Call.dapi``) and returns the rendered result. Functions are named as
Wazuh names them (``wazuh.agent.get_agents``); request types are Wazuh 4.7.5's.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from wazuhcluster.api import params as P
from wazuhcluster.api.params import Param, parse_search, parse_sort, without_nones
from wazuhcluster.api.problems import Problem, bad_request

API_VERSION = "4.7.5"
API_REVISION = 40720


@attrs.frozen
class Reply:
    """What a handler answers: a JSON body, or raw text with its content type."""

    body: Any
    status: int = 200
    content_type: str = "application/json"


class Call:
    """One request as a handler sees it."""

    def __init__(self, args: dict[str, Any], body: bytes, content_type: str,
                 dapi: Callable[..., Awaitable[dict[str, Any]]], user: str,
                 max_upload_size: int) -> None:
        self.args = args
        self.body = body
        self.content_type = content_type
        self.dapi = dapi
        self.user = user
        self.max_upload_size = max_upload_size

    def text_body(self, expected: str, unicode_error: int) -> str:
        """The body as text when sent with content type ``expected``."""
        if self.content_type.split(";")[0].strip().lower() != expected:
            raise Problem(406, "Not Acceptable",
                          "The body type is not the one specified in the content-type",
                          code=6002)
        if not self.body:
            raise Problem(400, "Bad Request", "Body is empty", code=2007)
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise Problem(400, "Bad Request", "Error parsing body request to UTF-8",
                          code=unicode_error) from None


Handler = Callable[[Call], Awaitable[Reply]]


@attrs.frozen
class Endpoint:
    method: str
    path: str
    function: str  # the Wazuh function it runs (documentation and logs)
    request_type: str
    params: tuple[Param, ...]
    handler: Handler
    path_params: dict[str, re.Pattern[str]] = attrs.field(factory=dict)
    write: bool = False  # refused to readonly users
    auth: str = "jwt"  # "jwt", "basic" or "jwt-any-role"
    regex: re.Pattern[str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        object.__setattr__(self, "regex", re.compile(f"^{pattern}$"))


ENDPOINTS: list[Endpoint] = []


def endpoint(method: str, path: str, function: str, request_type: str,
             params: tuple[Param, ...] = (), *,
             path_params: dict[str, re.Pattern[str]] | None = None,
             write: bool = False, auth: str = "jwt") -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ENDPOINTS.append(Endpoint(method, path, function, request_type, P.COMMON + params,
                                  handler, path_params or {}, write, auth))
        return handler
    return register


def _json(data: dict[str, Any]) -> Reply:
    return Reply(data)


async def _run(c: Call, function: str, request_type: str, f_kwargs: dict[str, Any],
               broadcasting: bool = False) -> Reply:
    return _json(await c.dapi(function, without_nones(f_kwargs), request_type,
                              broadcasting=broadcasting))


def _all_or(values: list[str] | None) -> list[str] | None:
    return None if values is not None and "all" in values else values


AGENT = {"agent_id": P.NUMBERS}
GROUP = {"group_id": P.GROUP_NAME}
FILE = {"filename": P.FILENAME}
AGENTS_LIST = Param("agents_list", "array", pattern=P.NUMBERS)
AGENTS_LIST_ALL = Param("agents_list", "array", pattern=P.NUMBERS, required=True,
                        choices=("all",))
GROUPS_LIST = Param("groups_list", "array", pattern=P.GROUP_NAME)
STATUS = Param("status", "array", choices=("active", "pending", "never_connected",
                                           "disconnected"))
NODES_LIST = Param("nodes_list", "array", pattern=P.NODE_NAME)
AGENT_FILTERS = (Param("older_than", pattern=P.TIMEFRAME), Param("os.platform", pattern=P.NAMES),
                 Param("os.version"), Param("os.name"), Param("manager"), Param("version"),
                 Param("group", pattern=P.GROUP_NAME), Param("node_name", pattern=P.NODE_NAME),
                 Param("name"), Param("ip"), Param("registerIP"))
HASH = Param("hash", choices=("md5", "sha1", "sha224", "sha256", "sha384", "sha512",
                              "blake2b", "blake2s", "sha3_224", "sha3_256", "sha3_384",
                              "sha3_512"))
RELATIVE_DIRNAME = Param("relative_dirname", pattern=P.PATHS)
FILENAMES = Param("filename", "array", pattern=P.FILENAME)
FILE_STATUS = Param("status", choices=("enabled", "disabled", "all"))


def _agent_filters(a: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: a.get(n) for n in names}


# --- API info --------------------------------------------------------------------------------

@endpoint("GET", "/", "default_info", "none")
async def default_info(c: Call) -> Reply:
    return _json({"data": {
        "title": "Wazuh API REST", "api_version": API_VERSION, "revision": API_REVISION,
        "license_name": "GPL 2.0",
        "license_url": f"https://github.com/wazuh/wazuh/blob/v{API_VERSION}/LICENSE",
        "hostname": socket.gethostname(),
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}, "error": 0})


# --- cluster ---------------------------------------------------------------------------------

@endpoint("GET", "/cluster/local/info", "wazuh.cluster.get_node_wrapper", "local_any")
async def get_cluster_node(c: Call) -> Reply:
    return await _run(c, "wazuh.cluster.get_node_wrapper", "local_any", {})


@endpoint("GET", "/cluster/local/config", "wazuh.cluster.read_config_wrapper", "local_any")
async def get_config(c: Call) -> Reply:
    return await _run(c, "wazuh.cluster.read_config_wrapper", "local_any", {})


@endpoint("GET", "/cluster/status", "wazuh.cluster.get_status_json", "local_master")
async def get_status(c: Call) -> Reply:
    return await _run(c, "wazuh.cluster.get_status_json", "local_master", {})


@endpoint("GET", "/cluster/nodes", "wazuh.cluster.get_nodes_info", "local_master",
          (P.OFFSET, Param("limit", "int", 500, minimum=1, maximum=100000), P.SORT_P,
           P.SEARCH_P, P.SELECT_P, Param("type", choices=("worker", "master")), NODES_LIST,
           P.Q, P.DISTINCT))
async def get_cluster_nodes(c: Call) -> Reply:
    a = c.args
    return await _run(c, "wazuh.cluster.get_nodes_info", "local_master", {
        "filter_node": a["nodes_list"], "offset": a["offset"], "limit": a["limit"],
        "sort": parse_sort(a["sort"]), "search": parse_search(a["search"]),
        "select": a["select"], "filter_type": a["type"], "q": a["q"],
        "distinct": a["distinct"]})


@endpoint("GET", "/cluster/healthcheck", "wazuh.cluster.get_health_nodes", "local_master",
          (NODES_LIST,))
async def get_healthcheck(c: Call) -> Reply:
    return await _run(c, "wazuh.cluster.get_health_nodes", "local_master",
                      {"filter_node": c.args["nodes_list"]})


@endpoint("GET", "/cluster/ruleset/synchronization", "wazuh.cluster.get_ruleset_sync_status",
          "distributed_master", (NODES_LIST,))
async def get_nodes_ruleset_sync_status(c: Call) -> Reply:
    master = await c.dapi("wazuh.cluster.get_node_ruleset_integrity", {}, "local_master")
    hashes = master.get("data", {k: v for k, v in master.items() if k != "error"})
    nodes = c.args["nodes_list"] or "*"
    return await _run(c, "wazuh.cluster.get_ruleset_sync_status", "distributed_master",
                      {"node_list": nodes, "master_md5": hashes}, broadcasting=nodes == "*")


@endpoint("GET", "/cluster/{node_id}/status", "wazuh.manager.get_status", "distributed_master",
          path_params={"node_id": P.NODE_NAME})
async def get_status_node(c: Call) -> Reply:
    return await _run(c, "wazuh.manager.get_status", "distributed_master",
                      {"node_id": c.args["node_id"]})


@endpoint("GET", "/cluster/{node_id}/info", "wazuh.manager.get_basic_info",
          "distributed_master", path_params={"node_id": P.NODE_NAME})
async def get_info_node(c: Call) -> Reply:
    return await _run(c, "wazuh.manager.get_basic_info", "distributed_master",
                      {"node_id": c.args["node_id"]})


# --- agents ----------------------------------------------------------------------------------

@endpoint("GET", "/agents", "wazuh.agent.get_agents", "local_master",
          (AGENTS_LIST, *P.LISTING, STATUS, *AGENT_FILTERS,
           Param("group_config_status", choices=("synced", "not synced"))))
async def get_agents(c: Call) -> Reply:
    a = c.args
    filters = _agent_filters(a, "older_than", "manager", "version", "group", "node_name",
                             "name", "ip", "registerIP", "group_config_status",
                             "os.version", "os.name", "os.platform")
    filters["status"] = a["status"]
    return await _run(c, "wazuh.agent.get_agents", "local_master", {
        "agent_list": a["agents_list"], "offset": a["offset"], "limit": a["limit"],
        "sort": parse_sort(a["sort"]), "search": parse_search(a["search"]),
        "select": a["select"], "filters": filters, "q": a["q"], "distinct": a["distinct"]})


@endpoint("DELETE", "/agents", "wazuh.agent.delete_agents", "local_master",
          (AGENTS_LIST_ALL, Param("purge", "bool", False),
           attrs.evolve(STATUS, required=True, choices=(*STATUS.choices, "all")), P.Q,
           *AGENT_FILTERS), write=True)
async def delete_agents(c: Call) -> Reply:
    a = c.args
    filters = _agent_filters(a, "older_than", "manager", "version", "group", "node_name",
                             "name", "ip", "registerIP", "os.version", "os.name",
                             "os.platform")
    filters["status"] = a["status"]
    return await _run(c, "wazuh.agent.delete_agents", "local_master", {
        "agent_list": _all_or(a["agents_list"]), "purge": a["purge"], "filters": filters,
        "q": a["q"]})


@endpoint("GET", "/agents/summary/status", "wazuh.agent.get_agents_summary_status",
          "local_master")
async def get_agent_summary_status(c: Call) -> Reply:
    return await _run(c, "wazuh.agent.get_agents_summary_status", "local_master", {})


@endpoint("GET", "/agents/summary/os", "wazuh.agent.get_agents_summary_os", "local_master")
async def get_agent_summary_os(c: Call) -> Reply:
    return await _run(c, "wazuh.agent.get_agents_summary_os", "local_master", {})


@endpoint("GET", "/agents/no_group", "wazuh.agent.get_agents", "local_master",
          (P.OFFSET, P.LIMIT, P.SELECT_P, P.SORT_P, P.SEARCH_P, P.Q))
async def get_agent_no_group(c: Call) -> Reply:
    a = c.args
    q = "id!=000;group=null" + (";" + a["q"] if a["q"] else "")
    return await _run(c, "wazuh.agent.get_agents", "local_master", {
        "offset": a["offset"], "limit": a["limit"], "select": a["select"],
        "sort": parse_sort(a["sort"]), "search": parse_search(a["search"]), "q": q})


@endpoint("GET", "/agents/{agent_id}/key", "wazuh.agent.get_agents_keys", "local_master",
          path_params=AGENT)
async def get_agent_key(c: Call) -> Reply:
    return await _run(c, "wazuh.agent.get_agents_keys", "local_master",
                      {"agent_list": [c.args["agent_id"]]})


@endpoint("PUT", "/agents/{agent_id}/group/{group_id}", "wazuh.agent.assign_agents_to_group",
          "local_master", (Param("force_single_group", "bool", False),),
          path_params={**AGENT, **GROUP}, write=True)
async def put_agent_single_group(c: Call) -> Reply:
    a = c.args
    return await _run(c, "wazuh.agent.assign_agents_to_group", "local_master", {
        "agent_list": [a["agent_id"]], "group_list": [a["group_id"]],
        "replace": a["force_single_group"]})


@endpoint("DELETE", "/agents/{agent_id}/group/{group_id}",
          "wazuh.agent.remove_agent_from_group", "local_master",
          path_params={**AGENT, **GROUP}, write=True)
async def delete_single_agent_single_group(c: Call) -> Reply:
    a = c.args
    return await _run(c, "wazuh.agent.remove_agent_from_group", "local_master",
                      {"agent_list": [a["agent_id"]], "group_list": [a["group_id"]]})


@endpoint("DELETE", "/agents/{agent_id}/group", "wazuh.agent.remove_agent_from_groups",
          "local_master", (GROUPS_LIST,), path_params=AGENT, write=True)
async def delete_single_agent_multiple_groups(c: Call) -> Reply:
    a = c.args
    return await _run(c, "wazuh.agent.remove_agent_from_groups", "local_master",
                      {"agent_list": [a["agent_id"]], "group_list": a["groups_list"]})


@endpoint("PUT", "/agents/group", "wazuh.agent.assign_agents_to_group", "local_master",
          (AGENTS_LIST, Param("group_id", required=True, pattern=P.GROUP_NAME),
           Param("force_single_group", "bool", False)), write=True)
async def put_multiple_agent_single_group(c: Call) -> Reply:
    a = c.args
    return await _run(c, "wazuh.agent.assign_agents_to_group", "local_master", {
        "agent_list": a["agents_list"], "group_list": [a["group_id"]],
        "replace": a["force_single_group"]})


@endpoint("DELETE", "/agents/group", "wazuh.agent.remove_agents_from_group", "local_master",
          (AGENTS_LIST_ALL, Param("group_id", required=True, pattern=P.GROUP_NAME)),
          write=True)
async def delete_multiple_agent_single_group(c: Call) -> Reply:
    a = c.args
    return await _run(c, "wazuh.agent.remove_agents_from_group", "local_master",
                      {"agent_list": _all_or(a["agents_list"]), "group_list": [a["group_id"]]})


# --- groups ----------------------------------------------------------------------------------

def _listing_by(a: dict[str, Any], default_sort: str) -> dict[str, Any]:
    sort, search = parse_sort(a["sort"]), parse_search(a["search"])
    return {"offset": a["offset"], "limit": a["limit"],
            "sort_by": sort["fields"] if sort else [default_sort],
            "sort_ascending": sort is None or sort["order"] == "asc",
            "search_text": search["value"] if search else None,
            "complementary_search": search["negation"] if search else None,
            "q": a.get("q"), "select": a.get("select"), "distinct": a.get("distinct")}


@endpoint("GET", "/groups", "wazuh.agent.get_agent_groups", "local_master",
          (GROUPS_LIST, P.OFFSET, attrs.evolve(P.LIMIT, default=None), P.SORT_P, P.SEARCH_P,
           HASH, P.Q, P.SELECT_P, P.DISTINCT))
async def get_list_group(c: Call) -> Reply:
    a = c.args
    return await _run(c, "wazuh.agent.get_agent_groups", "local_master", {
        **_listing_by(a, "name"), "group_list": a["groups_list"],
        "hash_algorithm": a["hash"] or "md5"})


@endpoint("POST", "/groups", "wazuh.agent.create_group", "local_master", write=True)
async def post_group(c: Call) -> Reply:
    import json

    text = c.text_body("application/json", 2006)
    try:
        body = json.loads(text)
    except ValueError:
        raise Problem(400, "Bad Request", "Body request is not a valid JSON", code=2005) from None
    if not isinstance(body, dict) or set(body) != {"group_id"} or not isinstance(
            body["group_id"], str):
        raise bad_request("the body must be {\"group_id\": \"<name>\"}")
    if not P.GROUP_NAME.match(body["group_id"]):
        raise bad_request(f"{body['group_id']!r} does not match the format of 'group_id'")
    return await _run(c, "wazuh.agent.create_group", "local_master",
                      {"group_id": body["group_id"]})


@endpoint("DELETE", "/groups", "wazuh.agent.delete_groups", "local_master",
          (attrs.evolve(GROUPS_LIST, required=True, choices=("all",)),), write=True)
async def delete_groups(c: Call) -> Reply:
    return await _run(c, "wazuh.agent.delete_groups", "local_master",
                      {"group_list": _all_or(c.args["groups_list"])})


@endpoint("GET", "/groups/{group_id}/agents", "wazuh.agent.get_agents_in_group",
          "local_master", (P.OFFSET, P.LIMIT, P.SELECT_P, P.SORT_P, P.SEARCH_P, STATUS, P.Q,
                           P.DISTINCT), path_params=GROUP)
async def get_agents_in_group(c: Call) -> Reply:
    a = c.args
    return await _run(c, "wazuh.agent.get_agents_in_group", "local_master", {
        "group_list": [a["group_id"]], "offset": a["offset"], "limit": a["limit"],
        "sort": parse_sort(a["sort"]), "search": parse_search(a["search"]),
        "select": a["select"], "filters": {"status": a["status"]}, "q": a["q"],
        "distinct": a["distinct"]})


@endpoint("GET", "/groups/{group_id}/files", "wazuh.agent.get_group_files", "local_master",
          (P.OFFSET, attrs.evolve(P.LIMIT, default=None), P.SORT_P, P.SEARCH_P, HASH, P.Q,
           P.SELECT_P, P.DISTINCT), path_params=GROUP)
async def get_group_files(c: Call) -> Reply:
    a = c.args
    return await _run(c, "wazuh.agent.get_group_files", "local_master", {
        **_listing_by(a, "filename"), "group_list": [a["group_id"]],
        "hash_algorithm": a["hash"] or "md5"})


@endpoint("GET", "/groups/{group_id}/configuration", "wazuh.agent.get_agent_conf",
          "local_master", (P.OFFSET, P.LIMIT), path_params=GROUP)
async def get_group_config(c: Call) -> Reply:
    a = c.args
    return await _run(c, "wazuh.agent.get_agent_conf", "local_master",
                      {"group_list": [a["group_id"]], "offset": a["offset"], "limit": a["limit"]})


@endpoint("PUT", "/groups/{group_id}/configuration", "wazuh.agent.upload_group_file",
          "local_master", path_params=GROUP, write=True)
async def put_group_config(c: Call) -> Reply:
    data = c.text_body("application/xml", 2006)
    return await _run(c, "wazuh.agent.upload_group_file", "local_master",
                      {"group_list": [c.args["group_id"]], "file_data": data})


# --- ruleset files ---------------------------------------------------------------------------

def _raw_or_json(rendered: dict[str, Any], raw: bool, content_type: str) -> Reply:
    if raw and "data" not in rendered and isinstance(rendered.get("message"), str):
        return Reply(rendered["message"], content_type=content_type)
    return Reply(rendered)


def _ruleset(kind: str, module: str, singular: str, list_fn: str, raw_type: str,
             request_type_list: str, dirname: bool, extra_list: tuple[Param, ...]) -> None:
    base = f"/{kind}/files"
    dir_param = (RELATIVE_DIRNAME,) if dirname else ()

    async def listing(c: Call) -> Reply:
        a = c.args
        kwargs = {**_listing_by(a, "filename"), "filename": a["filename"],
                  "relative_dirname": a["relative_dirname"]}
        if "status" in a:
            kwargs["status"] = a["status"]
        return await _run(c, f"{module}.{list_fn}", request_type_list, kwargs)

    async def get_file(c: Call) -> Reply:
        a = c.args
        rendered = await c.dapi(f"{module}.get_{singular}_file", without_nones({
            "filename": a["filename"], "raw": a["raw"],
            "relative_dirname": a.get("relative_dirname")}), "local_master")
        return _raw_or_json(rendered, a["raw"], raw_type)

    async def put_file(c: Call) -> Reply:
        a = c.args
        content = c.text_body("application/octet-stream", 1911)
        return await _run(c, f"{module}.upload_{singular}_file", "local_master", {
            "filename": a["filename"], "overwrite": a["overwrite"],
            "relative_dirname": a.get("relative_dirname"), "content": content})

    async def delete_file(c: Call) -> Reply:
        a = c.args
        return await _run(c, f"{module}.delete_{singular}_file", "local_master", {
            "filename": a["filename"], "relative_dirname": a.get("relative_dirname")})

    endpoint("GET", base, f"{module}.{list_fn}", request_type_list,
             (P.OFFSET, P.LIMIT, P.SORT_P, P.SEARCH_P, RELATIVE_DIRNAME, FILENAMES,
              *extra_list))(listing)
    endpoint("GET", base + "/{filename}", f"{module}.get_{singular}_file", "local_master",
             (Param("raw", "bool", False), *dir_param), path_params=FILE)(get_file)
    endpoint("PUT", base + "/{filename}", f"{module}.upload_{singular}_file", "local_master",
             (Param("overwrite", "bool", False), *dir_param), path_params=FILE,
             write=True)(put_file)
    endpoint("DELETE", base + "/{filename}", f"{module}.delete_{singular}_file",
             "local_master", dir_param, path_params=FILE, write=True)(delete_file)


_ruleset("rules", "wazuh.rule", "rule", "get_rules_files", "application/xml", "local_any", True,
         (FILE_STATUS, P.Q, P.SELECT_P, P.DISTINCT))
_ruleset("decoders", "wazuh.decoder", "decoder", "get_decoders_files", "application/xml",
         "local_any", True, (FILE_STATUS, P.Q, P.SELECT_P, P.DISTINCT))
_ruleset("lists", "wazuh.cdb_list", "list", "get_path_lists", "text/plain", "local_master",
         False, ())


# --- security --------------------------------------------------------------------------------

@endpoint("GET", "/security/users/me", "wazuh.security.get_user_me", "local_master",
          auth="jwt-any-role")
async def get_user_me(c: Call) -> Reply:
    return await _run(c, "wazuh.security.get_user_me", "local_master", {"username": c.user})


@endpoint("DELETE", "/security/user/authenticate", "wazuh.security.revoke_current_user_tokens",
          "local_master", auth="jwt-any-role")
async def logout_user(c: Call) -> Reply:
    return await _run(c, "wazuh.security.revoke_current_user_tokens", "local_master",
                      {"username": c.user})


def find(method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
    """The endpoint for ``method path`` and its raw path values; None when no path matches.

    :raises Problem: 405 when the path exists for other methods only.
    """
    allowed = []
    for ep in ENDPOINTS:
        m = ep.regex.match(path)
        if m is None:
            continue
        if ep.method == method:
            return ep, m.groupdict()
        allowed.append(ep.method)
    if allowed:
        raise Problem(405, "Method Not Allowed", f"{method} is not allowed on {path}")
    return None
