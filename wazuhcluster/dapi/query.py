"""Wazuh's query parameters: compiled to SQL over the agent table, or applied to lists.

The parameters are those of the Wazuh API and framework (4.7.5):

* ``select``: fields to return (list, or comma-separated text); unknown fields -> 1724.
* ``sort``: ``{"fields": [...], "order": "asc"|"desc"}`` as the framework receives it, or the
  API text ``"+name,-ip"`` (a sign per field; none means ascending); unknown fields -> 1403.
* ``search``: ``{"value": str, "negation": bool}`` or the API text ``"value"``/``"-value"``:
  items where some field contains the value (case-insensitive), or none does.
* ``q``: ``field<op>value`` conditions joined by ``;`` (and) and ``,`` (or), grouped with
  parentheses; operators ``=``, ``!=``, ``<``, ``>``, ``~`` (contains); the value ``null``
  means no value. Malformed -> 1407, unknown field -> 1408, bad operator -> 1409.
* ``filters``: ``{field: value | [values]}``; values of one field are or-ed, fields and-ed;
  ``all`` matches anything, None is ignored, ``"a,b"`` lists alternatives for fields such as
  ``status``/``node_name``; ``older_than`` (a timeframe like ``7d``) selects agents whose
  last keepalive (or registration, for never-connected agents) is older.
* ``offset``/``limit``: ``limit`` 1..100000 (0 -> 1406, over the maximum -> 1405, None -> no
  limit); a negative offset -> 1400.

:func:`compile_agent_query` builds a parameterised SELECT (and its COUNT) for
``IAgentDatabase.select``; :func:`process_array` applies the same parameters to a list of dicts
(results gathered from files, or merged from several nodes). No user text is ever put into SQL:
every value travels as a ``?`` parameter and every field is looked up in a fixed table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import attrs

from wazuhcluster.dapi.results import WazuhError, nested_get, sort_items

#: Default ``limit`` of the framework functions (Wazuh's ``DATABASE_LIMIT``).
DATABASE_LIMIT = 500
#: Largest ``limit`` accepted (Wazuh's ``MAXIMUM_DATABASE_LIMIT``).
MAXIMUM_DATABASE_LIMIT = 100000

#: Agent fields as the API names them -> SQL expression over the ``agent`` table.
AGENT_FIELDS: dict[str, str] = {
    "id": "id", "name": "name", "ip": "coalesce(ip,register_ip)", "status": "connection_status",
    "os.name": "os_name", "os.version": "os_version", "os.platform": "os_platform",
    "version": "version", "manager": "manager_host", "dateAdd": "date_add", "group": "`group`",
    "mergedSum": "merged_sum", "configSum": "config_sum", "os.codename": "os_codename",
    "os.major": "os_major", "os.minor": "os_minor", "os.uname": "os_uname",
    "os.arch": "os_arch", "os.build": "os_build", "node_name": "node_name",
    "lastKeepAlive": "last_keepalive", "internal_key": "internal_key",
    "registerIP": "register_ip", "disconnection_time": "disconnection_time",
    "group_config_status": "group_config_status", "status_code": "status_code",
}
#: Fields never selected nor searched (the agent's key).
_HIDDEN_FIELDS = frozenset({"internal_key"})
#: Fields holding a POSIX time, returned as UTC datetimes.
_DATE_FIELDS = frozenset({"dateAdd", "lastKeepAlive", "disconnection_time"})
#: Fields that accept date/timeframe values in ``q`` and ``filters``.
_DATE_FILTER_FIELDS = frozenset({"dateAdd", "lastKeepAlive"})

#: Filters whose text value may list several values separated by commas.
_COMMA_LIST_FILTERS = frozenset({"status", "node_name", "group", "name", "ip", "registerIP",
                                 "group_config_status", "manager", "id"})

_OPERATORS = ("!=", "=", "<", ">", "~")
_SQL_OPERATORS = {"=": "=", "!=": "!=", "<": "<", ">": ">", "~": "LIKE"}
_TIMEFRAME = re.compile(r"^(?:\d+[dhms])+$|^\d+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z?)?$")
_FIELD = re.compile(r"[\w.]+")


# --- parameter parsing ---------------------------------------------------------------------


def parse_select(select: Any) -> list[str] | None:
    """``select`` as a list of field names (None: every field)."""
    if select is None or select == "" or select == []:
        return None
    if isinstance(select, Mapping):
        select = select.get("fields")
    if isinstance(select, str):
        return [f.strip() for f in select.split(",") if f.strip()]
    if isinstance(select, (list, tuple, set, frozenset)) and all(
            isinstance(f, str) for f in select):
        return list(select)
    raise WazuhError(1724, extra_message=f"Invalid select value: {select!r}")


def parse_sort(sort: Any) -> list[tuple[str, bool]] | None:
    """``sort`` as ``[(field, ascending), ...]`` (None: no sort asked)."""
    if sort is None or sort == "":
        return None
    if isinstance(sort, Mapping):
        fields = sort.get("fields") or []
        order = str(sort.get("order", "asc")).lower()
        if order not in ("asc", "desc") or not isinstance(fields, (list, tuple)):
            raise WazuhError(1402)
        return [(str(f), order == "asc") for f in fields]
    if isinstance(sort, str):
        out = []
        for part in sort.split(","):
            part = part.strip()
            if not part:
                continue
            ascending = not part.startswith("-")
            out.append((part.lstrip("+-").strip(), ascending))
        return out
    raise WazuhError(1403, extra_message=f"Invalid sort value: {sort!r}")


def parse_search(search: Any) -> tuple[str, bool] | None:
    """``search`` as ``(value, negation)`` (None: no search)."""
    if search is None or search == "":
        return None
    if isinstance(search, Mapping):
        value = search.get("value")
        if not isinstance(value, str) or not value:
            return None
        return value, bool(search.get("negation", False))
    if isinstance(search, str):
        return (search[1:], True) if search.startswith("-") else (search, False)
    raise WazuhError(1407, extra_message=f"Invalid search value: {search!r}")


def check_pagination(offset: Any, limit: Any) -> tuple[int, int | None]:
    """Validated ``(offset, limit)``, with Wazuh's error codes."""
    try:
        offset = int(offset or 0)
    except (TypeError, ValueError):
        raise WazuhError(1400) from None
    if offset < 0:
        raise WazuhError(1400)
    if limit is None:
        return offset, None
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        raise WazuhError(1401) from None
    if limit > MAXIMUM_DATABASE_LIMIT:
        raise WazuhError(1405, extra_message=str(limit))
    if limit == 0:
        raise WazuhError(1406)
    if limit < 0:
        raise WazuhError(1401)
    return offset, limit


def timeframe_seconds(value: str) -> int:
    """``"1d2h"`` -> seconds; plain digits are seconds. Anything else -> 1411."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    if not _TIMEFRAME.match(value):
        raise WazuhError(1411, extra_message=value)
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([dhms])", value))


# --- q: parsing into a tree ----------------------------------------------------------------


@attrs.frozen
class Condition:
    """``field op value`` (``value`` None for ``null``)."""

    field: str
    op: str
    value: str | None


@attrs.frozen
class Junction:
    """Conditions joined by ``and`` (``;``) or ``or`` (``,``)."""

    kind: str  # "and" | "or"
    parts: tuple[Node, ...]


Node = Condition | Junction


class _QParser:
    """Recursive descent over ``q``: or-list of and-lists of conditions or groups."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self) -> WazuhError:
        return WazuhError(1407, extra_message=self.text)

    def parse(self) -> Node:
        if not self.text or len(self.text) > 65536:
            raise self.fail()
        node = self.expr()
        if self.pos != len(self.text):
            raise self.fail()
        return node

    def expr(self) -> Node:
        parts = [self.term()]
        while self.peek() == ",":
            self.pos += 1
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else Junction("or", tuple(parts))

    def term(self) -> Node:
        parts = [self.atom()]
        while self.peek() == ";":
            self.pos += 1
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else Junction("and", tuple(parts))

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def atom(self) -> Node:
        if self.peek() == "(":
            self.pos += 1
            node = self.expr()
            if self.peek() != ")":
                raise self.fail()
            self.pos += 1
            return node
        match = _FIELD.match(self.text, self.pos)
        if match is None:
            raise self.fail()
        field = match.group()
        self.pos = match.end()
        op_start = self.pos
        while self.peek() and self.peek() in "=!<>~":
            self.pos += 1
        op = self.text[op_start:self.pos]
        if not op:
            raise self.fail()
        if op not in _OPERATORS:
            raise WazuhError(1409, extra_message=f"Valid operators: {', '.join(_SQL_OPERATORS)}."
                                                 f" Used operator: {op}")
        value = self.value()
        return Condition(field, op, None if value == "null" else value)

    def value(self) -> str:
        start, depth, bracket = self.pos, 0, 0
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "[":
                bracket += 1
            elif c == "]" and bracket:
                bracket -= 1
            elif bracket:
                pass
            elif c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    break
                depth -= 1
            elif c in ";," and depth == 0:
                break
            self.pos += 1
        if self.pos == start:
            raise self.fail()
        return self.text[start:self.pos]


def parse_q(q: str) -> Node:
    """Parse a ``q`` query (1407 when malformed, 1409 for an unknown operator)."""
    if not isinstance(q, str):
        raise WazuhError(1407, extra_message=repr(q))
    return _QParser(q).parse()


def _fields_of(node: Node) -> Iterable[str]:
    if isinstance(node, Condition):
        yield node.field
    else:
        for part in node.parts:
            yield from _fields_of(part)


def filters_to_node(filters: Mapping[str, Any] | None) -> Node | None:
    """Legacy ``filters`` as a tree: values of one field or-ed, fields and-ed, ``all``
    skipped, ``older_than`` turned into its keepalive/registration condition."""
    if not filters:
        return None
    parts: list[Node] = []
    for name, value in filters.items():
        if name == "older_than":
            if value and value != "0s":
                stamp = str(value)
                parts.append(Junction("or", (
                    Junction("and", (Condition("lastKeepAlive", ">", stamp),
                                     Condition("status", "!=", "never_connected"))),
                    Junction("and", (Condition("dateAdd", ">", stamp),
                                     Condition("status", "=", "never_connected"))))))
            continue
        values = value if isinstance(value, (list, tuple, set)) else [value]
        if name in _COMMA_LIST_FILTERS:
            # ``cluster_control -a -fs active disconnected`` sends "active,disconnected".
            values = [p for v in values for p in (v.split(",") if isinstance(v, str) else [v])]
        # None is an unset filter (the API leaves them out); the text "null" means no value.
        alts: list[Node] = [Condition(name, "=", None if v == "null" else str(v))
                            for v in values if v is not None and v != "all"]
        if alts:
            parts.append(alts[0] if len(alts) == 1 else Junction("or", tuple(alts)))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Junction("and", tuple(parts))


def unify_version(value: str) -> str:
    """``4.7.5``/``v4.7.5``/``wazuh 4.7.5`` -> ``Wazuh v4.7.5`` form used in the database."""
    if re.match(r"^v?\d+\.\d+\.\d+$", value, re.IGNORECASE):
        return f"Wazuh {'' if value.lower().startswith('v') else 'v'}{value}"
    if re.match(r"^wazuh \d+\.\d+\.\d+$", value, re.IGNORECASE):
        return value.replace(" ", " v")
    return value


# --- SQL over the agent table --------------------------------------------------------------


@attrs.frozen
class CompiledQuery:
    """A parameterised data query, its count query, and the fields it returns."""

    sql: str
    params: tuple[Any, ...]
    count_sql: str
    count_params: tuple[Any, ...]
    select: tuple[str, ...]


class _SqlBuilder:
    def __init__(self, fields: Mapping[str, str], now: int) -> None:
        self.fields = fields
        self.now = now
        self.params: list[Any] = []

    def node(self, node: Node) -> str:
        if isinstance(node, Junction):
            joiner = " AND " if node.kind == "and" else " OR "
            return "(" + joiner.join(self.node(p) for p in node.parts) + ")"
        return self.condition(node)

    def condition(self, c: Condition) -> str:
        if c.field not in self.fields or c.field in _HIDDEN_FIELDS:
            raise WazuhError(1408, extra_message=f"Available fields: "
                             f"{', '.join(f for f in self.fields if f not in _HIDDEN_FIELDS)}."
                             f" Field: {c.field}")
        expr = self.fields[c.field]
        if c.value is None:
            return f"({expr} IS NULL)" if c.op != "!=" else f"({expr} IS NOT NULL)"
        if c.field == "group":
            return self.group(expr, c)
        if c.field in _DATE_FILTER_FIELDS:
            return self.date(expr, c)
        value = c.value
        if c.field == "version":
            value = re.sub(r"([a-zA-Z])(v)", r"\1 \2", unify_version(value))
        if c.field == "id" and value.isdigit():
            self.params.append(int(value))
            op = _SQL_OPERATORS[c.op]
            if op == "LIKE":
                self.params[-1] = f"%{value}%"
            return f"({expr} {op} ?)"
        op = _SQL_OPERATORS[c.op]
        if "'" in value or '"' in value:
            # Quotes match any character, as in Wazuh.
            value = value.replace("'", "_").replace('"', "_")
            if op in ("=", "!="):
                op = "LIKE" if op == "=" else "NOT LIKE"
        if c.op == "~":
            value = f"%{value}%"
        self.params.append(value)
        return f"({expr} {op} ? COLLATE NOCASE)"

    def group(self, expr: str, c: Condition) -> str:
        if c.op == "=":
            self.params.append(f"%,{c.value},%")
            return f"((',' || {expr} || ',') LIKE ?)"
        if c.op == "!=":
            self.params.append(f"%,{c.value},%")
            return f"(NOT (',' || coalesce({expr}, '') || ',') LIKE ?)"
        if c.op == "~":
            self.params.append(f"%{c.value}%")
            return f"({expr} LIKE ?)"
        raise WazuhError(1409, extra_message="Valid operators for 'group' field: =, !=, ~. "
                                             f"Used operator: {c.op}")

    def date(self, expr: str, c: Condition) -> str:
        value = c.value or ""
        if _TIMEFRAME.match(value):
            op = ">" if c.op in ("<", "=") else "<"
            self.params.append(self.now - timeframe_seconds(value))
            return f"({expr} IS NOT NULL AND {expr} {op} ? AND id != 0)"
        if _DATE.match(value):
            if c.op not in ("<", ">", "=", "!="):
                raise WazuhError(1409, extra_message=f"Used operator: {c.op}")
            self.params.append(value.rstrip("Z").replace("T", " "))
            return (f"({expr} IS NOT NULL AND {expr} {_SQL_OPERATORS[c.op]}"
                    f" CAST(strftime('%s', ?) AS INTEGER) AND id != 0)")
        raise WazuhError(1412, extra_message=value)


def check_select(select: Sequence[str] | None, allowed: Iterable[str]) -> None:
    if select is None:
        return
    allowed_set = set(allowed)
    wrong = [f for f in select if f not in allowed_set]
    if not select or wrong:
        raise WazuhError(1724, extra_message=f"Allowed select fields: {', '.join(allowed)}. "
                                             f"Fields {', '.join(wrong)}")


def check_sort(sort: Sequence[tuple[str, bool]] | None, allowed: Iterable[str]) -> None:
    if not sort:
        return
    allowed_list = list(allowed)
    wrong = [f for f, _ in sort if f not in allowed_list]
    if wrong:
        raise WazuhError(1403, extra_message=f"Allowed sort fields: {sorted(allowed_list)}. "
                                             f"Fields: {', '.join(wrong)}")


#: Above this many id ranges, an id list travels as one JSON parameter.
_MAX_ID_RANGES = 200


def id_condition(agent_ids: Iterable[Any], params: list[Any], column: str = "id") -> str:
    """SQL restricting ``column`` to ``agent_ids`` (text or numbers; others ignored), with
    its parameters appended to ``params``. Runs of consecutive ids become ``BETWEEN`` ranges;
    a list too scattered for that travels as one JSON array (``json_each``), so the number of
    SQL variables stays small whatever the list size."""
    numeric = sorted({int(a) for a in agent_ids if str(a).isdigit()})
    if not numeric:
        return "(0)"
    ranges: list[list[int]] = []
    for value in numeric:
        if ranges and value == ranges[-1][1] + 1:
            ranges[-1][1] = value
        else:
            ranges.append([value, value])
    if len(ranges) > _MAX_ID_RANGES:
        params.append("[" + ",".join(map(str, numeric)) + "]")
        return f"({column} IN (SELECT value FROM json_each(?)))"
    parts = []
    for low, high in ranges:
        if low == high:
            parts.append(f"{column} = ?")
            params.append(low)
        else:
            parts.append(f"{column} BETWEEN ? AND ?")
            params.extend((low, high))
    return "(" + " OR ".join(parts) + ")"


def compile_agent_query(*, now: int, offset: Any = 0, limit: Any = DATABASE_LIMIT,
                        sort: Any = None, search: Any = None, select: Any = None,
                        filters: Mapping[str, Any] | None = None, q: Any = None,
                        distinct: bool = False, agent_ids: Sequence[str] | None = None,
                        extra: Node | None = None,
                        min_select: Sequence[str] = ("id",)) -> CompiledQuery:
    """The SELECT (and COUNT) Wazuh's agent query makes for these parameters.

    :param now: current POSIX time (for timeframes such as ``older_than=7d``).
    :param agent_ids: restrict to these ids (``"001"`` form), as the framework's agent list.
    :param extra: one more condition and-ed to the others (e.g. ``id != 000``).
    """
    fields = AGENT_FIELDS
    visible = [f for f in fields if f not in _HIDDEN_FIELDS]
    selected = parse_select(select)
    check_select(selected, visible)
    sort_spec = parse_sort(sort)
    check_sort(sort_spec, visible)
    search_spec = parse_search(search)
    offset, limit = check_pagination(offset, limit)

    filters = dict(filters or {})
    if "version" in filters and isinstance(filters["version"], str):
        filters["version"] = unify_version(filters["version"])
    id_filter = filters.pop("id", None)
    if id_filter is not None:
        ids = id_filter if isinstance(id_filter, (list, tuple, set)) else [id_filter]
        agent_ids = [str(i) for i in ids] if agent_ids is None else [
            a for a in agent_ids if a in {str(i) for i in ids}]

    builder = _SqlBuilder(fields, now)
    where: list[str] = []
    for node in (filters_to_node(filters), parse_q(q) if q else None, extra):
        if node is not None:
            where.append(builder.node(node))
    if agent_ids is not None:
        where.append(id_condition(agent_ids, builder.params))
    if search_spec is not None:
        value, negation = search_spec
        like = "%" + re.sub("['\"]", "_", value) + "%"
        ors = []
        for name in visible:
            if name == "id":
                continue
            expr = fields[name]
            ors.append(f"({expr} LIKE ? AND {expr} IS NOT NULL)")
            builder.params.append(like)
        ors.append("(id LIKE ?)")
        builder.params.append(int(value) if value.isdigit() else like)
        where.append(("NOT " if negation else "") + "(" + " OR ".join(ors) + ")")

    out_fields = list(dict.fromkeys(selected if selected is not None else visible))
    if not distinct:
        out_fields = list(dict.fromkeys([*min_select, *out_fields]))
    else:
        for name in out_fields:
            where.append(f"({fields[name]} IS NOT NULL AND {fields[name]} != '')")
    columns = ", ".join(f"{fields[f]} AS '{f}'" for f in out_fields)
    base = f"SELECT {'DISTINCT ' if distinct else ''}{columns} FROM agent"
    if where:
        base += " WHERE " + " AND ".join(where)
    params = tuple(builder.params)
    count_sql = f"SELECT COUNT(*) AS total FROM ({base})"

    order: list[str] = []
    if sort_spec:
        for name, ascending in sort_spec:
            direction = "ASC" if ascending else "DESC"
            if name == "os.version":
                order.append(f"CAST(os_major AS INTEGER) {direction}, "
                             f"CAST(os_minor AS INTEGER) {direction}")
            else:
                order.append(f"{fields[name]} {direction}")
    elif not distinct:
        order.append("id ASC")
    else:
        order.append(f"{fields[out_fields[0]]} ASC")
    sql = base + " ORDER BY " + ", ".join(order)
    data_params = params
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        data_params = (*params, limit, offset)
    elif offset:
        sql += " LIMIT -1 OFFSET ?"
        data_params = (*params, offset)
    return CompiledQuery(sql, data_params, count_sql, params, tuple(out_fields))


_K_PLAIN, _K_ID, _K_GROUP, _K_DATE, _K_DISCONNECTION, _K_OS = range(6)
#: Column name -> how format_agent_row treats it (filled on first sight of each name).
_ROW_KINDS: dict[str, int] = {}


def _row_kind(key: str) -> int:
    if key.startswith("os."):
        kind = _K_OS
    elif key == "id":
        kind = _K_ID
    elif key == "group":
        kind = _K_GROUP
    elif key == "disconnection_time":
        kind = _K_DISCONNECTION
    elif key in _DATE_FIELDS:
        kind = _K_DATE
    else:
        kind = _K_PLAIN
    _ROW_KINDS[key] = kind
    return kind


def format_agent_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """An agent row (keys as API field names) as the framework returns it: id zero-padded,
    ``group`` a list, times as UTC datetimes, ``os.*`` nested under ``os``, a zero
    ``disconnection_time`` left out."""
    item: dict[str, Any] = {}
    kinds = _ROW_KINDS
    for key, value in row.items():
        if value is None:
            continue
        kind = kinds.get(key)
        if kind is None:
            kind = _row_kind(key)
        if kind == _K_PLAIN:
            item[key] = value
        elif kind == _K_ID:
            item[key] = str(value).zfill(3)
        elif kind == _K_GROUP:
            item[key] = value.split(",") if isinstance(value, str) else value
        elif kind == _K_OS:
            item.setdefault("os", {})[key[3:]] = value
        else:
            if kind == _K_DISCONNECTION and value == 0:
                continue
            item[key] = (datetime.fromtimestamp(value, tz=UTC)
                         if isinstance(value, (int, float)) else value)
    return item


#: Formats one SQLite tuple of a set of columns (see :func:`agent_row_formatter`).
AgentRowFormatter = Callable[[Sequence[Any]], dict[str, Any]]
#: Formatters by column names (one per select set; bounded).
_FORMATTERS: dict[tuple[str, ...], AgentRowFormatter] = {}


def agent_row_formatter(names: Sequence[str]) -> AgentRowFormatter:
    """A function giving :func:`format_agent_row` of the row ``{name: value}`` of these
    columns without its None values, built straight from the SQLite tuple (same keys, same
    order). Made once per set of column names: straight-line code with one branch per
    column, its kind decided here rather than per row. Column names never enter the code:
    they are read from a constant tuple by position."""
    key = tuple(names)
    formatter = _FORMATTERS.get(key)
    if formatter is not None:
        return formatter
    lines = ["def format_row(row):", "    item = {}"]
    for i, name in enumerate(key):
        kind = _ROW_KINDS.get(name, -1) if name in _ROW_KINDS else _row_kind(name)
        lines.append(f"    v = row[{i}]")
        lines.append("    if v is not None:")
        if kind == _K_PLAIN:
            lines.append(f"        item[K[{i}]] = v")
        elif kind == _K_ID:
            lines.append(f"        item[K[{i}]] = str(v).zfill(3)")
        elif kind == _K_GROUP:
            lines.append(f"        item[K[{i}]] = v.split(',') if isinstance(v, str) else v")
        elif kind == _K_OS:
            lines.append(f"        item.setdefault('os', {{}})[SUB[{i}]] = v")
        else:
            guard = " and v != 0" if kind == _K_DISCONNECTION else ""
            lines.append(f"        if isinstance(v, (int, float)){guard}:")
            lines.append(f"            item[K[{i}]] = fromtimestamp(v, tz=UTC)")
            if kind == _K_DISCONNECTION:
                lines.append("        elif not isinstance(v, (int, float)):")
            else:
                lines.append("        else:")
            lines.append(f"            item[K[{i}]] = v")
    lines.append("    return item")
    scope: dict[str, Any] = {"K": key, "SUB": tuple(n[3:] for n in key),
                             "fromtimestamp": datetime.fromtimestamp, "UTC": UTC}
    exec(compile("\n".join(lines), "<agent row formatter>", "exec"), scope)
    formatter = cast(AgentRowFormatter, scope["format_row"])
    if len(_FORMATTERS) < 256:
        _FORMATTERS[key] = formatter
    return formatter


# --- the same on lists ---------------------------------------------------------------------


def _as_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _values(item: Any, fields: Sequence[str] | None) -> list[str]:
    if fields:
        out = []
        for f in fields:
            v = nested_get(item, f)
            if v is not None:
                out.extend(_values(v, None))
        return out
    if isinstance(item, Mapping):
        return [v for value in item.values() for v in _values(value, None)]
    if isinstance(item, (list, tuple, set)):
        return [v for value in item for v in _values(value, None)]
    return [] if item is None else [_as_text(item).lower()]


def _compare(actual: Any, op: str, wanted: str | None) -> bool:
    if isinstance(actual, list):
        if op == "!=":
            return all(_compare(a, op, wanted) for a in actual)
        return any(_compare(a, op, wanted) for a in actual)
    if wanted is None:
        return (actual is None) if op != "!=" else (actual is not None)
    if actual is None:
        return op == "!="
    if op == "~":
        return wanted.lower() in _as_text(actual).lower()
    if isinstance(actual, bool):
        left: Any = str(actual).lower()
        right: Any = wanted.lower()
    elif isinstance(actual, (int, float)) or (isinstance(actual, str) and actual.isdigit()
                                               and wanted.isdigit()):
        try:
            left, right = float(actual), float(wanted)
        except ValueError:
            left, right = _as_text(actual).lower(), wanted.lower()
    else:
        left, right = _as_text(actual).lower(), wanted.lower()
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == "<":
        return bool(left < right)
    return bool(left > right)


def evaluate(node: Node, item: Any) -> bool:
    """Whether ``item`` (a dict, dotted fields for nesting) satisfies a parsed ``q``."""
    if isinstance(node, Junction):
        results = (evaluate(p, item) for p in node.parts)
        return all(results) if node.kind == "and" else any(results)
    return _compare(nested_get(item, node.field), node.op, node.value)


def filter_array_by_query(q: str, items: Sequence[Any],
                          allowed_fields: Iterable[str] | None = None) -> list[Any]:
    """The items satisfying ``q`` (unknown field -> 1408 when ``allowed_fields`` given)."""
    node = parse_q(q)
    if allowed_fields is not None:
        allowed = set(allowed_fields)
        for name in _fields_of(node):
            if name not in allowed and name.split(".", 1)[0] not in allowed:
                raise WazuhError(1408, extra_message=f"Available fields: "
                                 f"{', '.join(sorted(allowed))}. Field: {name}")
    return [i for i in items if evaluate(node, i)]


def _select_item(item: Any, fields: Sequence[str]) -> Any:
    if not isinstance(item, Mapping):
        return item
    out: dict[str, Any] = {}
    for f in fields:
        parts = f.split(".")
        value: Any = item
        for p in parts:
            value = value.get(p) if isinstance(value, Mapping) else None
        if value is None:
            continue
        target = out
        for p in parts[:-1]:
            target = target.setdefault(p, {})
        target[parts[-1]] = value
    return out


def process_array(items: Sequence[Any], *, offset: Any = 0, limit: Any = DATABASE_LIMIT,
                  sort_by: Any = None, sort_ascending: bool = True, search_text: str | None = None,
                  complementary_search: bool = False, search_in_fields: Sequence[str] | None = None,
                  select: Any = None, q: str | None = None,
                  filters: Mapping[str, Any] | None = None,
                  allowed_select_fields: Sequence[str] | None = None,
                  allowed_sort_fields: Sequence[str] | None = None,
                  required_fields: Sequence[str] = (), distinct: bool = False,
                  sort: Any = None, search: Any = None) -> dict[str, Any]:
    """Filter, sort, search, query, select, dedupe and cut a list as Wazuh's
    ``process_array`` does: ``{"items": page, "totalItems": count before the cut}``.

    ``sort``/``search`` accept the same forms as for agents and override ``sort_by``/
    ``sort_ascending`` and ``search_text``/``complementary_search``.
    """
    offset, limit = check_pagination(offset, limit)
    array = list(items)
    if filters:
        array = [i for i in array if any(
            isinstance(i, Mapping) and i.get(k) in (v if isinstance(v, (list, tuple, set)) else [v])
            for k, v in filters.items())]
    sort_spec: list[tuple[str, bool]] | None
    if sort is not None:
        sort_spec = parse_sort(sort)
    elif sort_by:
        fields = [sort_by] if isinstance(sort_by, str) else list(sort_by)
        sort_spec = [(f, bool(sort_ascending)) for f in fields]
    else:
        sort_spec = None
    if not isinstance(sort_ascending, bool):
        raise WazuhError(1402)
    if sort_spec is not None:
        real = [(f, a) for f, a in sort_spec if f]
        if allowed_sort_fields is not None:
            check_sort(real, allowed_sort_fields)
        elif real and array and isinstance(array[0], Mapping):
            check_sort(real, list(array[0].keys()) + [f for f, _ in real if "." in f])
        array = _sort_multi(array, real) if real else sort_items(array, [], sort_spec[0][1]
                                                                 if sort_spec else True)
    search_spec = parse_search(search) if search is not None else (
        (search_text, complementary_search) if search_text else None)
    if search_spec is not None:
        needle, negate = search_spec[0].lower(), search_spec[1]
        array = [i for i in array
                 if any(needle in v for v in _values(i, search_in_fields)) != negate]
    if q:
        array = filter_array_by_query(q, array)
    selected = parse_select(select)
    if selected is not None:
        top = [f for f in selected if "." not in f]
        if allowed_select_fields is not None:
            check_select(top, allowed_select_fields)
        wanted = selected if distinct else list(dict.fromkeys([*required_fields, *selected]))
        array = [_select_item(i, wanted) for i in array]
    if distinct:
        unique: list[Any] = []
        for i in array:
            if i not in unique:
                unique.append(i)
        array = unique
    total = len(array)
    end = None if limit is None else offset + limit
    return {"items": array[offset:end], "totalItems": total}


def _sort_multi(array: list[Any], spec: Sequence[tuple[str, bool]]) -> list[Any]:
    """Stable multi-key sort with a direction per key."""
    for name, ascending in reversed(spec):
        array = sort_items(array, [name], ascending)
    return array


def apply_to_result_items(items: Sequence[Any], f_kwargs: Mapping[str, Any]) -> list[Any]:
    """Re-apply ``sort``/``select``/``offset``/``limit`` of a request to merged items (what
    the DAPI does after OR-merging the answers of several nodes)."""
    data = process_array(items, offset=f_kwargs.get("offset", 0),
                         limit=f_kwargs.get("limit", None),
                         sort=f_kwargs.get("sort"), select=f_kwargs.get("select"))
    return list(data["items"])
