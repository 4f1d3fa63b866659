"""Builds ``openapi.yaml`` (the shipped OpenAPI 3 document) from the endpoint table.

``python -m wazuhcluster.api.specgen > wazuhcluster/api/openapi.yaml``; a test checks that the
shipped document is what this produces, so the document always describes exactly our endpoints
with Wazuh's parameter and schema names.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from wazuhcluster.api.endpoints import API_REVISION, API_VERSION, ENDPOINTS, Endpoint
from wazuhcluster.api.params import Param


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


STR = {"type": "string"}
INT = {"type": "integer"}
BOOL = {"type": "boolean"}
OBJ = {"type": "object"}

SCHEMAS: dict[str, Any] = {
    "ApiResponse": {"type": "object", "properties": {"message": STR}},
    "SimpleApiError": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "properties": {
            "code": INT, "message": STR, "remediation": STR}},
            "id": {"type": "array", "items": {"oneOf": [STR, INT]}}}},
    "ApiError": {
        "type": "object", "required": ["title", "detail"],
        "properties": {"title": STR, "detail": STR, "remediation": STR, "error": INT,
                       "dapi_errors": {"type": "object", "additionalProperties": OBJ}}},
    "RequestError": {
        "type": "object", "required": ["title"],
        "properties": {"title": STR, "detail": STR, "error": INT}},
    "AllItemsResponse": {
        "type": "object",
        "required": ["affected_items", "total_affected_items", "failed_items",
                     "total_failed_items"],
        "properties": {"affected_items": {"type": "array"}, "total_affected_items": INT,
                       "failed_items": {"type": "array", "items": ref("SimpleApiError")},
                       "total_failed_items": INT}},
    "BasicInfo": {"type": "object", "properties": {
        "title": STR, "api_version": STR, "revision": INT, "license_name": STR,
        "license_url": STR, "hostname": STR, "timestamp": STR}},
    "Token": {"type": "object", "required": ["token"], "properties": {"token": STR}},
    "AgentID": {"type": "string", "pattern": "^[0-9]{3,}$"},
    "GroupID": {"type": "string"},
    "AgentSimple": {"type": "object", "properties": {
        "id": ref("AgentID"), "name": STR, "ip": STR, "registerIP": STR, "status": STR,
        "node_name": STR, "version": STR, "manager": STR, "dateAdd": STR,
        "lastKeepAlive": STR, "group": {"type": "array", "items": STR},
        "group_config_status": STR, "configSum": STR, "mergedSum": STR,
        "os": {"type": "object", "properties": {
            "arch": STR, "codename": STR, "major": STR, "minor": STR, "name": STR,
            "platform": STR, "uname": STR, "version": STR, "build": STR}}}},
    "AgentIdKey": {"type": "object", "properties": {"id": ref("AgentID"), "key": STR}},
    "AgentGroup": {"type": "object", "properties": {
        "name": STR, "count": INT, "configSum": STR, "mergedSum": STR}},
    "GroupFile": {"type": "object", "properties": {"filename": STR, "hash": STR}},
    "GroupConfiguration": {"type": "object", "properties": {"filters": OBJ, "config": OBJ}},
    "AgentsSummaryStatus": {"type": "object", "properties": {
        "connection": {"type": "object", "additionalProperties": INT},
        "configuration": {"type": "object", "additionalProperties": INT}}},
    "ClusterNodeBasic": {"type": "object", "properties": {
        "name": STR, "type": {"type": "string", "enum": ["master", "worker"]}, "version": STR,
        "ip": STR}},
    "NodeHealthcheck": {"type": "object", "properties": {"info": OBJ, "status": OBJ}},
    "RulesetFile": {"type": "object", "properties": {
        "filename": STR, "relative_dirname": STR, "status": STR}},
    "UsersResponse": {"type": "object", "properties": {
        "id": INT, "username": STR, "allow_run_as": BOOL,
        "roles": {"type": "array", "items": {"type": "object", "properties": {
            "id": INT, "name": STR}}}}},
}


def items_response(item: dict[str, Any] | None) -> dict[str, Any]:
    data: dict[str, Any] = {"allOf": [ref("AllItemsResponse")]}
    if item is not None:
        data["allOf"].append({"type": "object", "properties": {
            "affected_items": {"type": "array", "items": item}}})
    return {"allOf": [ref("ApiResponse"), {
        "type": "object", "required": ["data", "error"],
        "properties": {"data": data, "error": {"type": "integer", "enum": [0, 1, 2]}}}]}


def data_response(data: dict[str, Any]) -> dict[str, Any]:
    return {"allOf": [ref("ApiResponse"), {
        "type": "object", "required": ["error"],
        "properties": {"data": data, "error": {"type": "integer", "enum": [0]}}}]}


MESSAGE_ONLY = {"allOf": [ref("ApiResponse"), {
    "type": "object", "required": ["message", "error"],
    "properties": {"error": {"type": "integer", "enum": [0]}}}]}

#: Response body of each operation (the 200 answer).
RESPONSES: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/"): data_response(ref("BasicInfo")),
    ("GET", "/cluster/local/info"): items_response(ref("ClusterNodeBasic")),
    ("GET", "/cluster/local/config"): items_response(OBJ),
    ("GET", "/cluster/status"): data_response({"type": "object", "properties": {
        "enabled": STR, "running": STR}}),
    ("GET", "/cluster/nodes"): items_response(ref("ClusterNodeBasic")),
    ("GET", "/cluster/healthcheck"): items_response(ref("NodeHealthcheck")),
    ("GET", "/cluster/ruleset/synchronization"): items_response(
        {"type": "object", "properties": {"name": STR, "synced": BOOL}}),
    ("GET", "/cluster/{node_id}/status"): items_response(OBJ),
    ("GET", "/cluster/{node_id}/info"): items_response(OBJ),
    ("GET", "/agents"): items_response(ref("AgentSimple")),
    ("DELETE", "/agents"): items_response(ref("AgentID")),
    ("GET", "/agents/summary/status"): data_response(ref("AgentsSummaryStatus")),
    ("GET", "/agents/summary/os"): items_response(STR),
    ("GET", "/agents/no_group"): items_response(ref("AgentSimple")),
    ("GET", "/agents/{agent_id}/key"): items_response(ref("AgentIdKey")),
    ("PUT", "/agents/{agent_id}/group/{group_id}"): items_response(ref("AgentID")),
    ("DELETE", "/agents/{agent_id}/group/{group_id}"): MESSAGE_ONLY,
    ("DELETE", "/agents/{agent_id}/group"): items_response(ref("GroupID")),
    ("PUT", "/agents/group"): items_response(ref("AgentID")),
    ("DELETE", "/agents/group"): items_response(ref("AgentID")),
    ("GET", "/groups"): items_response(ref("AgentGroup")),
    ("POST", "/groups"): MESSAGE_ONLY,
    ("DELETE", "/groups"): items_response(ref("GroupID")),
    ("GET", "/groups/{group_id}/agents"): items_response(ref("AgentSimple")),
    ("GET", "/groups/{group_id}/files"): items_response(ref("GroupFile")),
    ("GET", "/groups/{group_id}/configuration"): data_response({
        "type": "object", "required": ["affected_items", "total_affected_items"],
        "properties": {"affected_items": {"type": "array", "items": ref("GroupConfiguration")},
                       "total_affected_items": INT}}),
    ("PUT", "/groups/{group_id}/configuration"): MESSAGE_ONLY,
    ("GET", "/security/users/me"): items_response(ref("UsersResponse")),
    ("DELETE", "/security/user/authenticate"): MESSAGE_ONLY,
}
for kind in ("rules", "decoders", "lists"):
    RESPONSES[("GET", f"/{kind}/files")] = items_response(ref("RulesetFile"))
    RESPONSES[("GET", f"/{kind}/files/{{filename}}")] = items_response(OBJ)
    RESPONSES[("PUT", f"/{kind}/files/{{filename}}")] = items_response(STR)
    RESPONSES[("DELETE", f"/{kind}/files/{{filename}}")] = items_response(STR)

RAW_TYPES = {"rules": "application/xml", "decoders": "application/xml", "lists": "text/plain"}
BODIES = {
    ("POST", "/groups"): {"application/json": {"schema": {
        "type": "object", "required": ["group_id"], "properties": {"group_id": STR}}}},
    ("PUT", "/groups/{group_id}/configuration"): {"application/xml": {"schema": STR}},
}
for kind in ("rules", "decoders", "lists"):
    BODIES[("PUT", f"/{kind}/files/{{filename}}")] = {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _param_schema(p: Param) -> dict[str, Any]:
    if p.kind == "bool":
        schema: dict[str, Any] = {"type": "boolean"}
    elif p.kind == "int":
        schema = {"type": "integer", "format": "int32"}
        if p.minimum is not None:
            schema["minimum"] = p.minimum
        if p.maximum is not None:
            schema["maximum"] = p.maximum
    elif p.kind == "array":
        item: dict[str, Any] = {"type": "string"}
        if p.pattern is not None:
            item["pattern"] = p.pattern.pattern
        schema = {"type": "array", "items": item}
    else:
        schema = {"type": "string"}
        if p.choices:
            schema["enum"] = list(p.choices)
        elif p.pattern is not None:
            schema["pattern"] = p.pattern.pattern
    if p.default is not None:
        schema["default"] = p.default
    return schema


def _error(description: str, schema: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": ref(schema)}}}


def operation(ep: Endpoint) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    for name in ep.path_params or {}:
        params.append({"in": "path", "name": name, "required": True,
                       "schema": {"type": "string",
                                  "pattern": ep.path_params[name].pattern}})
    for p in ep.params:
        entry: dict[str, Any] = {"in": "query", "name": p.name, "schema": _param_schema(p)}
        if p.required:
            entry["required"] = True
        if p.kind == "array":
            entry["style"] = "form"
            entry["explode"] = False
        params.append(entry)
    content: dict[str, Any] = {"application/json": {"schema": RESPONSES[(ep.method, ep.path)]}}
    kind = ep.path.split("/")[1]
    if ep.method == "GET" and ep.path.endswith("/files/{filename}"):
        content[RAW_TYPES[kind]] = {"schema": STR}
    op: dict[str, Any] = {
        "operationId": ep.handler.__name__,
        "summary": f"Runs {ep.function} ({ep.request_type})" if ep.request_type != "none"
        else "API information",
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": content},
            "400": _error("Bad request", "RequestError"),
            "401": _error("Unauthorized", "RequestError"),
            "403": _error("Permission denied", "ApiError"),
            "404": _error("Resource not found", "ApiError"),
            "405": _error("Method not allowed", "RequestError"),
            "429": _error("Too many requests", "ApiError"),
            "default": _error("Error", "ApiError"),
        },
    }
    if ep.write:
        op["x-required-role"] = "administrator"
    body = BODIES.get((ep.method, ep.path))
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
        op["responses"]["406"] = _error("Wrong content type", "ApiError")
        op["responses"]["413"] = _error("Body too large", "RequestError")
    return op


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for ep in ENDPOINTS:
        paths.setdefault(ep.path, {})[ep.method.lower()] = operation(ep)
    paths["/security/user/authenticate"]["post"] = {
        "operationId": "login_user", "summary": "Log in with basic auth; get a JWT",
        "security": [{"basicAuth": []}],
        "parameters": [{"in": "query", "name": "raw",
                        "schema": {"type": "boolean", "default": False}}],
        "responses": {
            "200": {"description": "OK", "content": {
                "application/json": {"schema": data_response(ref("Token"))},
                "text/plain": {"schema": STR}}},
            "400": _error("Bad request", "RequestError"),
            "401": _error("Invalid credentials", "RequestError"),
            "403": _error("Address blocked after too many failed logins", "ApiError"),
            "405": _error("Method not allowed", "RequestError"),
            "429": _error("Too many requests", "ApiError"),
            "default": _error("Error", "ApiError")}}
    paths["/api/spec"] = {"get": {
        "operationId": "get_spec", "summary": "This document", "security": [],
        "responses": {"200": {"description": "OK", "content": {
            "application/yaml": {"schema": STR}}}}}}
    from wazuhcluster.ui import spec as ui_spec  # the status page at /ui

    paths.update(ui_spec.PATHS)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Wazuh API REST", "version": API_VERSION, "x-revision": API_REVISION,
                 "description": "The wazuhcluster REST API: Wazuh 4.7's paths, parameters, "
                                "envelopes and error bodies for the cluster, agents, groups "
                                "and ruleset files.",
                 "license": {"name": "GPL 2.0",
                             "url": "https://www.gnu.org/licenses/old-licenses/gpl-2.0.html"}},
        "servers": [{"url": "https://{host}:{port}", "variables": {
            "host": {"default": "localhost"}, "port": {"default": "55000"}}}],
        "security": [{"jwt": []}],
        "components": {
            "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"},
                                "jwt": {"type": "http", "scheme": "bearer",
                                        "bearerFormat": "JWT"}},
            "schemas": {**SCHEMAS, **ui_spec.SCHEMAS}},
        "paths": paths,
    }


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    return yaml.dump(document(), Dumper=_NoAliases, sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render())
