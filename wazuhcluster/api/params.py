"""Query-string parameters as Wazuh's API parses and validates them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

from wazuhcluster.api.problems import bad_request

NUMBERS = re.compile(r"^\d{3,}$")
GROUP_NAME = re.compile(r"^(?!^(\.{1,2}|all)$)[A-Za-z0-9.\-_]{1,255}$")
NAMES = re.compile(r"^[\w\-.%]+$", re.ASCII)
FILENAME = re.compile(r"^[\w\-.]{1,255}$", re.ASCII)
PATHS = re.compile(r"^[\w\-./]+$", re.ASCII)
SEARCH = re.compile(r"^[^;|&^*>]+$")
SORT = re.compile(r"^\s?[-+]?[\w.\-]+(,[\w.\-]+)*$")  # a "+" sent unencoded reads " "
SELECT = re.compile(r"^[\w.\-]+(,[\w.\-]+)*$")
TIMEFRAME = re.compile(r"^\d+[dhms]?$")
NODE_NAME = re.compile(r"^[\w\-.]+$")
#: q: ``field op value`` terms joined by ``;`` (and) or ``,`` (or); ops ``= != < > ~``.
_TERM = r"[\w.\-]+(?:=|!=|<|>|~)[^;,()=<>!~|&]*"
QUERY = re.compile(rf"^\(?{_TERM}\)?(?:[;,]\(?{_TERM}\)?)*$")


@attrs.frozen
class Param:
    """One query parameter: ``kind`` is bool, int, str or array (comma-separated)."""

    name: str
    kind: str = "str"
    default: Any = None
    required: bool = False
    pattern: re.Pattern[str] | None = None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()


PRETTY = Param("pretty", "bool", False)
WAIT = Param("wait_for_complete", "bool", False)
OFFSET = Param("offset", "int", 0, minimum=0)
LIMIT = Param("limit", "int", 500, minimum=1, maximum=100000)
SELECT_P = Param("select", "array", pattern=SELECT)
SORT_P = Param("sort", pattern=SORT)
SEARCH_P = Param("search", pattern=SEARCH)
Q = Param("q", pattern=QUERY)
DISTINCT = Param("distinct", "bool", False)
COMMON = (PRETTY, WAIT)
LISTING = (OFFSET, LIMIT, SELECT_P, SORT_P, SEARCH_P, Q, DISTINCT)


def _one(p: Param, raw: str) -> Any:
    where = f"query parameter {p.name!r}"
    if p.kind == "bool":
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise bad_request(f"{raw!r} is not of type 'boolean' ({where})")
    if p.kind == "int":
        if not re.fullmatch(r"-?\d{1,12}", raw):
            raise bad_request(f"{raw!r} is not of type 'integer' ({where})")
        value = int(raw)
        if p.minimum is not None and value < p.minimum:
            raise bad_request(f"{value} is less than the minimum of {p.minimum} ({where})")
        if p.maximum is not None and value > p.maximum:
            raise bad_request(f"{value} is greater than the maximum of {p.maximum} ({where})")
        return value
    if p.kind == "array":
        items = raw.split(",")
        for item in items:
            allowed = (bool(p.choices) and item in p.choices) or (
                p.pattern is not None and p.pattern.match(item) is not None)
            if (p.choices or p.pattern is not None) and not allowed:
                raise bad_request(f"{item!r} does not match the format of {where}")
        return items
    if p.choices and raw not in p.choices:
        raise bad_request(f"{raw!r} is not one of {list(p.choices)} ({where})")
    if p.pattern is not None and not p.pattern.match(raw):
        raise bad_request(f"{raw!r} does not match the format of {where}")
    return raw


def parse_query(params: tuple[Param, ...], query: Mapping[str, list[str]]) -> dict[str, Any]:
    """Validated values of ``params`` from ``query`` (name -> values); unknown names refused."""
    known = {p.name for p in params}
    extra = sorted(set(query) - known)
    if extra:
        raise bad_request(f"Extra query parameter(s) {', '.join(extra)} not in spec")
    out: dict[str, Any] = {}
    for p in params:
        values = query.get(p.name)
        if not values:
            if p.required:
                raise bad_request(f"Missing query parameter '{p.name}'")
            out[p.name] = p.default
            continue
        if len(values) > 1:
            raise bad_request(f"query parameter {p.name!r} given more than once")
        out[p.name] = _one(p, values[0])
    return out


def path_value(name: str, raw: str, pattern: re.Pattern[str]) -> str:
    if not pattern.match(raw):
        raise bad_request(f"{raw!r} does not match the format of path parameter {name!r}")
    return raw


def parse_sort(sort: str | None) -> dict[str, Any] | None:
    """``-a,b`` -> ``{"fields": ["a", "b"], "order": "desc"}`` (Wazuh's form)."""
    if sort is None:
        return None
    sort = sort.strip()
    fields = sort[1:] if sort[0] in "+-" else sort
    return {"fields": fields.split(","), "order": "desc" if sort[0] == "-" else "asc"}


def parse_search(search: str | None) -> dict[str, Any] | None:
    """``-text`` -> ``{"value": "text", "negation": True}`` (Wazuh's form)."""
    if search is None:
        return None
    negation = search[0] == "-"
    return {"negation": negation, "value": search[1:] if negation else search}


def without_nones(d: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None values, recursively into nested mappings (Wazuh's remove_nones_to_dict)."""
    return {k: without_nones(v) if isinstance(v, Mapping) else v
            for k, v in d.items() if v is not None}
