"""The status page's paths and schema in the REST API's OpenAPI document (merged by
``wazuhcluster.api.specgen``)."""

from __future__ import annotations

from typing import Any

STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
_WHEN = {"type": "object", "required": ["start", "end"],
         "properties": {"start": STR, "end": STR}}

SCHEMAS: dict[str, Any] = {
    "UIStatus": {
        "type": "object", "additionalProperties": False,
        "required": ["cluster", "node", "now", "history_seconds", "nodes", "agents", "syncs",
                     "log"],
        "properties": {
            "cluster": STR, "node": STR, "now": NUM, "history_seconds": NUM,
            "nodes": {"type": "array", "items": {
                "type": "object", "additionalProperties": False,
                "required": ["name", "type", "version", "ip", "active_agents",
                             "connected_since", "last_keep_alive", "last_check_integrity",
                             "last_sync_integrity", "last_sync_agentinfo"],
                "properties": {
                    "name": STR, "type": {"type": "string", "enum": ["master", "worker"]},
                    "version": STR, "ip": STR, "active_agents": INT,
                    "connected_since": STR, "last_keep_alive": STR,
                    "last_check_integrity": _WHEN,
                    "last_sync_integrity": {"allOf": [_WHEN, {
                        "type": "object", "required": ["created", "updated", "deleted"],
                        "properties": {"created": INT, "updated": INT, "deleted": INT}}]},
                    "last_sync_agentinfo": {"allOf": [_WHEN, {
                        "type": "object", "required": ["chunks"],
                        "properties": {"chunks": INT}}]}}}},
            "agents": {"type": "object", "description": "node -> status -> count",
                       "additionalProperties": {"type": "object",
                                                "additionalProperties": INT}},
            "syncs": {"type": "array", "items": {
                "type": "object", "additionalProperties": False,
                "required": ["worker", "kind", "started", "ended", "duration", "ok", "counts"],
                "properties": {
                    "worker": STR,
                    "kind": {"type": "string",
                             "enum": ["integrity_check", "integrity_sync", "agent_info"]},
                    "started": NUM, "ended": NUM, "duration": NUM, "ok": {"type": "boolean"},
                    "counts": {"type": "object", "additionalProperties": INT}}}},
            "log": {"type": "array", "items": STR}}},
}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": STR}}}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": STR}}}


_TOKEN = {"in": "query", "name": "token", "required": False, "schema": STR,
          "description": "A bearer token, for browsers that cannot send the header"}
_FORM = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["csrf"],
    "properties": {"csrf": STR, "username": STR, "password": STR}}}}}

PATHS: dict[str, Any] = {
    "/ui": {"get": {
        "operationId": "ui_page", "summary": "The status page (HTML; a login form when not "
        "logged in)", "security": [{"jwt": []}, {}], "parameters": [_TOKEN],
        "responses": {"200": _html("The page or the login form"),
                      "429": _text("Too many requests"), "default": _text("Error")}}},
    "/ui/data": {"get": {
        "operationId": "ui_data", "summary": "The status page's data",
        "parameters": [_TOKEN],
        "responses": {"200": {"description": "OK", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/UIStatus"}}}},
            "401": _text("Not logged in"), "429": _text("Too many requests"),
            "default": _text("Error")}}},
    "/ui/login": {"post": {
        "operationId": "ui_login", "summary": "Log in with the form; sets the session cookie",
        "security": [], "requestBody": _FORM,
        "responses": {"303": {"description": "Logged in: back to /ui"},
                      "401": _html("Invalid user or password: the form again"),
                      "403": _text("CSRF check failed or address blocked"),
                      "default": _text("Error")}}},
    "/ui/logout": {"post": {
        "operationId": "ui_logout", "summary": "Log out: clears the session cookie",
        "security": [], "requestBody": _FORM,
        "responses": {"303": {"description": "Logged out: back to /ui"},
                      "403": _text("CSRF check failed"), "default": _text("Error")}}},
}
