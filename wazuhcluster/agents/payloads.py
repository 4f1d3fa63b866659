"""Encoders and data-only decoders of the agent-info and agent-groups payloads (Wazuh 4.7.5).

Payloads covered (docs/protocol.md):

* the long string a worker ships before ``syn_a_w_m``::

      {"set_data_command": "global sync-agent-info-set", "payload": {}, "chunks": ["<json>", ...]}

  where each chunk is the JSON array text wazuh-db answers to ``global sync-agent-info-get``;
  4.13 replaced ``chunks`` by an object (after 4.7.5): such a string is refused with a clear error;
* between our own nodes (the master announces :data:`AGENT_INFO_ROWS_CAPABILITY`), the same
  long string in the compact *rows* form (wazuhcluster extension, never sent to a Wazuh node)::

      {"set_data_command": "global sync-agent-info-set", "payload": {},
       "format": "wazuhcluster-rows-1", "columns": ["id", "name", ...],
       "chunks": [{"rows": [[1, "agent", ...], ...], "labels": [[1, [["key", "value"]]]]}, ...]}

  where each row holds the :data:`~wazuhcluster.agents.schema.AGENT_INFO_COLUMNS` in that
  order (JSON null for NULL), chunks are embedded JSON instead of strings of JSON (no second
  escaping and parsing), and ``labels`` lists, for the agents of the chunk that have labels,
  their ``[key, value]`` pairs. It means exactly what the standard chunks mean;
* the long string a master ships before ``syn_g_m_w`` / ``syn_g_m_w_c``::

      {"set_data_command": "global set-agent-groups",
       "payload": {"mode": "override", "sync_status": "synced"}, "chunks": ["<json>", ...]}

  where each chunk is ``[{"data":[{"id":1,"groups":["default"]}, ...],"hash":"<sha1>"}]``;
* the results ``syn_m_a_e`` / ``syn_w_g_e`` / ``syn_wgc_e``:
  ``{"updated_chunks": 1, "error_messages": [], "time_spent": 0.01}``.

Decoding treats JSON strictly as data: sizes are bounded before parsing, ``NaN``/``Infinity``
are refused, nesting depth is bounded by the parser, and every value is type-checked. Every
malformed input raises :class:`PayloadError` and nothing else.
"""

from __future__ import annotations

import gc
import io
import json
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import repeat
from operator import itemgetter
from typing import Any

import attrs

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - a declared dependency; json alone is correct too
    _orjson = None  # type: ignore[assignment]

from wazuhcluster.agents.schema import (
    AGENT_INFO_COLUMNS,
    AGENT_INFO_INTEGER_COLUMNS,
    WDB_MAX_RESPONSE_SIZE,
)

#: ``set_data_command`` of the agent-info long string.
AGENT_INFO_SET_COMMAND = "global sync-agent-info-set"
#: ``set_data_command`` of the agent-groups long string.
AGENT_GROUPS_SET_COMMAND = "global set-agent-groups"

#: Largest long string we decode (the 256 MiB message limit of later Wazuh releases).
MAX_STRING_SIZE = 256 * 1024 * 1024
#: Largest single chunk we accept (wazuh-db never produces more than ~64 KiB).
MAX_CHUNK_SIZE = 4 * WDB_MAX_RESPONSE_SIZE
#: Largest result payload (``syn_m_a_e`` and friends).
MAX_RESULT_SIZE = 1024 * 1024
#: Largest text value of one agent-info column or label.
MAX_FIELD_SIZE = 8192
#: Most labels per agent we accept.
MAX_LABELS = 1024
#: Most groups per agent (Wazuh's ``MAX_GROUPS_PER_MULTIGROUP``).
MAX_GROUPS_PER_AGENT = 128
#: Largest group name (Wazuh's ``MAX_GROUP_NAME``).
MAX_GROUP_NAME = 255
#: Capability a master announces when it accepts agent-info in the compact rows form.
AGENT_INFO_ROWS_CAPABILITY = "agent-info-rows"
#: Capability a master announces when it also accepts the compact rows form compressed with
#: zlib (see :func:`encode_agent_info_rows_zlib`).
AGENT_INFO_ZLIB_CAPABILITY = "agent-info-rows-zlib"
#: zlib level of the compressed rows form: level 1 already shrinks agent-info ~25x (columns
#: repeat across agents), higher levels cost more time for a few percent.
AGENT_INFO_ZLIB_LEVEL = 1
#: ``format`` member of an agent-info long string in the compact rows form.
AGENT_INFO_ROWS_FORMAT = "wazuhcluster-rows-1"
#: Most rows one compact chunk may hold.
MAX_ROWS_PER_CHUNK = 4096
#: Agent ids are SQLite integers; we accept the 32-bit range wazuh-db binds with ``bind_int``.
MAX_AGENT_ID = 2**31 - 1

_COMPACT = (",", ":")


class PayloadError(ValueError):
    """A payload is malformed, too big, or in a format this version does not speak."""


@attrs.frozen
class SyncResult:
    """The counters a node reports after applying chunks (``syn_m_a_e``, ``syn_w_g_e``)."""

    updated_chunks: int
    error_messages: tuple[str, ...] = ()
    time_spent: float = 0.0


@attrs.frozen
class GroupsString:
    """The decoded agent-groups long string."""

    mode: str
    sync_status: str
    chunks: tuple[str, ...]


@attrs.frozen
class GroupsChunk:
    """One decoded agent-groups chunk: assignments and, in the last periodic chunk, the hash.

    ``has_hash`` tells whether the chunk carried a ``hash`` key at all (the checksum
    comparison is skipped without it); ``global_hash`` may be ``None`` when it carried JSON null.
    """

    assignments: tuple[tuple[int, tuple[str, ...]], ...]
    has_hash: bool = False
    global_hash: str | None = None


def _reject_constant(name: str) -> Any:
    """Refuse ``NaN``, ``Infinity`` and ``-Infinity``, which are not JSON."""
    raise PayloadError(f"non-standard JSON constant {name}")


def _loads(data: bytes | str, limit: int, what: str, fast: bool = False) -> Any:
    """Parse JSON text of at most ``limit`` bytes as plain data.

    ``fast`` (for the big agent-info and agent-groups texts, whose every value is then
    type-checked) parses with orjson first, two to three times faster than ``json`` and
    without decoding the bytes to a str first. Whatever orjson refuses is parsed again by
    ``json``, whose answer is final (it accepts a BOM, a lone surrogate escape and an
    overflowing float, which the callers' checks then refuse, and it gives the refusal's
    message), so the two paths accept the same texts. They differ in one way the callers'
    checks make harmless: orjson reads an integer beyond 64 bits as a float, ``json`` as an
    int; every such value is refused either way (integer columns and agent ids must be ints
    within 64 bits, text columns strings).
    """
    if len(data) > limit:
        raise PayloadError(f"{what} of {len(data)} bytes exceeds the limit of {limit}")
    if fast and _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except PayloadError:
        raise
    except (ValueError, RecursionError) as e:
        raise PayloadError(f"{what} is not valid JSON: {e}") from None


def _long_string(head: dict[str, Any], chunks: Sequence[str]) -> bytes:
    """``json.dumps({**head, "chunks": list(chunks)}, ensure_ascii=False)`` in UTF-8, as
    Wazuh's nodes write a long string (their separators, byte for byte); each chunk is
    escaped by orjson, which writes exactly the escapes ``json.dumps`` does with
    ``ensure_ascii=False`` (tested), at several times its speed. Each escaped chunk is
    copied out at once, so its memory is reused by the next one (keeping all of them for a
    join costs twice the time in fresh pages)."""
    if _orjson is not None:
        start = json.dumps({**head, "chunks": []}, ensure_ascii=False)[:-2]
        out = io.BytesIO()
        out.write(start.encode("utf-8"))
        separator = b""
        try:
            for chunk in chunks:
                out.write(separator)
                out.write(_orjson.dumps(chunk))
                separator = b", "
        except TypeError:  # not a str, or a lone surrogate: json.dumps says what is wrong
            pass
        else:
            out.write(b"]}")
            return out.getvalue()
    return json.dumps({**head, "chunks": list(chunks)}, ensure_ascii=False).encode("utf-8")


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large JSON text becomes Python objects.

    Parsing 50 000 agent rows allocates ~50 000 lists (or dicts, or row tuples), which would
    trigger many collections (full ones scan every object of the process) although none of
    them can be garbage yet.
    Only the thread that paused it resumes it, and only if it was running before.
    """
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _dumps_compact(value: Any) -> str:
    """Serialize like cJSON_PrintUnformatted: no whitespace, UTF-8 kept as is."""
    return json.dumps(value, separators=_COMPACT, ensure_ascii=False)


def _check_chunks(value: Any, max_chunks: int | None) -> tuple[str, ...]:
    """Validate the ``chunks`` member of a long string."""
    if isinstance(value, dict):
        raise PayloadError(
            "agent data chunks is an object: this is the Wazuh >= 4.13 format, not 4.7.5")
    if not isinstance(value, list):
        raise PayloadError("chunks must be a list of strings")
    if max_chunks is not None and len(value) > max_chunks:
        raise PayloadError(f"{len(value)} chunks exceed the limit of {max_chunks}")
    for chunk in value:
        if not isinstance(chunk, str):
            raise PayloadError("every chunk must be a string")
        if len(chunk) > MAX_CHUNK_SIZE:
            raise PayloadError(f"a chunk of {len(chunk)} characters exceeds {MAX_CHUNK_SIZE}")
    return tuple(value)


def _check_agent_id(value: Any) -> int:
    """Validate an agent id taken from JSON."""
    if type(value) is not int or not 0 <= value <= MAX_AGENT_ID:
        raise PayloadError(f"invalid agent id {value!r}")
    return value


# -- agent-info ------------------------------------------------------------------------------

def encode_agent_info_string(chunks: Sequence[str]) -> bytes:
    """Build the long string a worker sends before ``syn_a_w_m``."""
    return _long_string({"set_data_command": AGENT_INFO_SET_COMMAND, "payload": {}}, chunks)


def decode_agent_info_string(
    data: bytes, max_size: int = MAX_STRING_SIZE, max_chunks: int | None = None,
) -> tuple[str, ...]:
    """Return the chunks of an agent-info long string.

    :raises PayloadError: on malformed JSON, a wrong ``set_data_command``, the 4.13 object
        form of ``chunks``, an unknown ``format``, or sizes over the limits.
    In the compact rows form the chunks are returned as parsed JSON (anything), to be
    validated one by one with :func:`decode_agent_info_rows`. A string that starts with a
    zlib header (``0x78``, which no JSON text starts with) is the compressed rows form: it is
    inflated, refused if it would exceed ``max_size``, and must then be the rows form.
    """
    compressed = data[:1] == b"\x78"
    if compressed:
        data = _inflate(data, max_size)
    with collector_paused():
        root = _loads(data, max_size, "agent-info string", fast=True)
    if not isinstance(root, dict):
        raise PayloadError("agent-info string must be a JSON object")
    if compressed and "format" not in root:
        raise PayloadError("a compressed agent-info string must be in the rows form")
    if root.get("set_data_command") != AGENT_INFO_SET_COMMAND:
        raise PayloadError(f"unexpected set_data_command {root.get('set_data_command')!r}")
    if "format" in root:
        if root["format"] != AGENT_INFO_ROWS_FORMAT:
            raise PayloadError(f"unknown agent-info format {root['format']!r}")
        if root.get("columns") != list(AGENT_INFO_COLUMNS):
            raise PayloadError("agent-info rows do not have the expected columns")
        chunks = root.get("chunks")
        if not isinstance(chunks, list):
            raise PayloadError("chunks must be a list")
        if max_chunks is not None and len(chunks) > max_chunks:
            raise PayloadError(f"{len(chunks)} chunks exceed the limit of {max_chunks}")
        return tuple(chunks)
    return _check_chunks(root.get("chunks"), max_chunks)


def _rows_head() -> str:
    """The compact rows form's text up to the first chunk."""
    return (f'{{"set_data_command":"{AGENT_INFO_SET_COMMAND}","payload":{{}},'
            f'"format":"{AGENT_INFO_ROWS_FORMAT}","columns":'
            f'{_dumps_compact(list(AGENT_INFO_COLUMNS))},"chunks":[')


def encode_agent_info_rows_string(chunks: Sequence[str]) -> bytes:
    """Build the compact rows form of the long string from chunk texts.

    Each chunk text is a JSON object ``{"rows": [...], "labels": [...]}`` (as
    :meth:`~wazuhcluster.agents.db.AgentDatabase.get_agent_info_sync` builds them with
    ``rows=True``); it is embedded as is.
    """
    return (_rows_head() + ",".join(chunks) + "]}").encode("utf-8")


def encode_agent_info_rows_zlib(chunks: Sequence[str]) -> bytes:
    """The compact rows form of :func:`encode_agent_info_rows_string`, compressed with zlib
    (for a master that announced :data:`AGENT_INFO_ZLIB_CAPABILITY`): a few percent of the
    bytes to encrypt, frame and decrypt, for less CPU than the encryption it saves. Chunks
    are fed to the compressor one by one (the same stream, without joining the whole text
    first)."""
    deflater = zlib.compressobj(AGENT_INFO_ZLIB_LEVEL)
    parts = [deflater.compress(_rows_head().encode("utf-8"))]
    separator = ""
    for chunk in chunks:
        parts.append(deflater.compress((separator + chunk).encode("utf-8")))
        separator = ","
    parts.append(deflater.compress(b"]}"))
    parts.append(deflater.flush())
    return b"".join(parts)


def _inflate(data: bytes, max_size: int) -> bytes:
    """The content of one complete zlib stream, refused (never allocated) beyond
    ``max_size`` bytes."""
    inflater = zlib.decompressobj()
    try:
        content = inflater.decompress(data, max_size + 1)
    except zlib.error as e:
        raise PayloadError(f"agent-info string is not valid zlib data: {e}") from None
    if len(content) > max_size:
        raise PayloadError(f"agent-info string inflates beyond the limit of {max_size} bytes")
    if not inflater.eof or inflater.unused_data:
        raise PayloadError("agent-info string is not one complete zlib stream")
    return content


def encode_agent_info_chunk(agents: Sequence[dict[str, Any]]) -> str:
    """Serialize agent objects as wazuh-db does (compact JSON array)."""
    return _dumps_compact(list(agents))


def _check_text(value: Any, column: str) -> str:
    """Validate a text column value."""
    if not isinstance(value, str) or len(value) > MAX_FIELD_SIZE:
        raise PayloadError(f"invalid value for {column}")
    return value


def _check_label(value: Any) -> tuple[int, str, str]:
    """Validate one ``{"id","key","value"}`` label object."""
    if not isinstance(value, dict):
        raise PayloadError("a label must be an object")
    return (_check_agent_id(value.get("id")), _check_text(value.get("key"), "label key"),
            _check_text(value.get("value"), "label value"))


#: Python type of each agent-info column a chunk may set (``id`` is checked on its own).
_INFO_KINDS: dict[str, type] = {
    c: int if c in AGENT_INFO_INTEGER_COLUMNS else str for c in AGENT_INFO_COLUMNS[1:]}


def decode_agent_info_chunk(chunk: str) -> list[dict[str, Any]]:
    """Parse and validate one agent-info chunk.

    Each returned dict has an integer ``id``, every other agent-info column it carried (text
    or integer as the column requires; JSON null is treated as absent, like wazuh-db does),
    and ``labels`` as a list of ``(id, key, value)`` tuples when the object had a labels array.
    Unknown keys are dropped.
    """
    root = _loads(chunk, MAX_CHUNK_SIZE, "agent-info chunk", fast=True)
    if not isinstance(root, list):
        raise PayloadError("an agent-info chunk must be a JSON array")
    agents: list[dict[str, Any]] = []
    for item in root:
        if not isinstance(item, dict):
            raise PayloadError("an agent-info entry must be an object")
        agent: dict[str, Any] = {"id": _check_agent_id(item.get("id"))}
        for column, value in item.items():  # one pass over what the object holds
            kind = _INFO_KINDS.get(column)
            if kind is None or value is None:
                continue  # id (done), labels (below), unknown keys, JSON null
            if type(value) is not kind:
                raise PayloadError(f"invalid value for {column}")
            if kind is str:
                if len(value) > MAX_FIELD_SIZE:  # type: ignore[arg-type]
                    raise PayloadError(f"invalid value for {column}")
            elif abs(value) > 2**63 - 1:  # type: ignore[arg-type]
                raise PayloadError(f"invalid value for {column}")
            agent[column] = value
        labels = item.get("labels")
        if labels is not None:
            if not isinstance(labels, list) or len(labels) > MAX_LABELS:
                raise PayloadError(f"labels must be a list of at most {MAX_LABELS} objects")
            agent["labels"] = [_check_label(label) for label in labels]
        agents.append(agent)
    return agents


_NONE = type(None)
_MAX_INT = 2**63 - 1
#: Types a value of each parameter may have, in :data:`AGENT_INFO_SET_COLUMNS` order.
_PARAM_KINDS: tuple[frozenset[type], ...] = tuple(
    frozenset({int if c in AGENT_INFO_INTEGER_COLUMNS else str, type(None)})
    for c in AGENT_INFO_COLUMNS[1:])


def _check_columns(columns: Sequence[Sequence[Any]]) -> None:
    """Check the values of the agent-info columns after ``id`` (one sequence per column, in
    :data:`AGENT_INFO_COLUMNS` order): text or null in text columns, at most
    :data:`MAX_FIELD_SIZE` characters; integer (not bool) or null in integer columns, within
    the signed 64-bit range."""
    for column, kinds, name in zip(columns, _PARAM_KINDS, AGENT_INFO_COLUMNS[1:], strict=True):
        if str in kinds:
            # Types and lengths over the distinct values: no value of another JSON type
            # equals a string, so a set cannot hide one behind a valid text.
            try:
                distinct = set(column)
            except TypeError:  # a list or an object
                raise PayloadError(f"invalid value for {name}") from None
            if not kinds.issuperset(map(type, distinct)):
                raise PayloadError(f"invalid value for {name}")
            distinct.discard(None)
            if distinct and max(map(len, distinct)) > MAX_FIELD_SIZE:
                raise PayloadError(f"invalid value for {name}")
            continue
        # Types over every value (a set would keep 1 and drop an equal True or 1.0), the
        # range over the distinct values.
        if not kinds.issuperset(map(type, column)):
            raise PayloadError(f"invalid value for {name}")
        distinct = set(column)
        distinct.discard(None)
        if distinct and (max(distinct) > _MAX_INT or min(distinct) < -_MAX_INT):
            raise PayloadError(f"invalid value for {name}")


def decode_agent_info_params(
    chunk: str,
) -> tuple[list[tuple[Any, ...]], list[tuple[int, list[tuple[str, str]]]], int]:
    """Parse and validate one agent-info chunk straight into SQL parameters.

    The rules are those of :func:`decode_agent_info_chunk` (it refuses the same chunks), but
    the values are checked column by column over the whole chunk: each column's distinct
    values once (their types, the longest text, the integer range) with C-level set, map
    and max calls, instead of a Python loop over the members of every object.

    :returns: ``(rows, labels, skipped)``: one tuple per agent other than 000 holding the
        :data:`~wazuhcluster.agents.schema.AGENT_INFO_SET_COLUMNS` values in order (``None``
        for absent or null) and then the id; ``(agent id, [(key, value), ...])`` for every
        such agent whose object had labels; and how many objects were for agent 000.
    """
    root = _loads(chunk, MAX_CHUNK_SIZE, "agent-info chunk", fast=True)
    if not isinstance(root, list):
        raise PayloadError("an agent-info chunk must be a JSON array")
    if not root:
        return [], [], 0
    if set(map(type, root)) != {dict}:
        raise PayloadError("an agent-info entry must be an object")
    # Column by column: one C-level pass of dict.get per column over the chunk's objects
    # (None for an absent member, unknown members never looked at), instead of a Python
    # loop over the objects.
    get = dict.get
    columns = [list(map(get, root, repeat(column))) for column in AGENT_INFO_COLUMNS[1:]]
    _check_columns(columns)
    ids: list[Any] = list(map(get, root, repeat("id")))
    if set(map(type, ids)) != {int} or min(ids) < 0 or max(ids) > MAX_AGENT_ID:
        raise PayloadError("invalid agent id")
    rows: list[tuple[Any, ...]] = list(zip(*columns, ids, strict=True))
    labels: list[tuple[int, list[tuple[str, str]]]] = []
    for agent_id, agent_labels in zip(ids, map(get, root, repeat("labels")), strict=True):
        if agent_labels is None:
            continue
        if not isinstance(agent_labels, list) or len(agent_labels) > MAX_LABELS:
            raise PayloadError(f"labels must be a list of at most {MAX_LABELS} objects")
        pairs = [_check_label(label)[1:] for label in agent_labels]
        if agent_id:
            labels.append((agent_id, pairs))
    skipped = 0
    if 0 in ids:
        skipped = len(rows)
        rows = [row for row in rows if row[-1] != 0]
        skipped -= len(rows)
    return rows, labels, skipped


#: Python type of each column of a compact row, in :data:`AGENT_INFO_COLUMNS` order.
_ROW_KINDS: tuple[type, ...] = tuple(
    int if c in AGENT_INFO_INTEGER_COLUMNS else str for c in AGENT_INFO_COLUMNS)
#: Validation plan per row type signature: getters of the text values and of the integer
#: values other than the id (``None`` when there is none). Bounded: at most 2**21 signatures
#: exist, we keep the first few hundred.
_ROW_PLANS: dict[tuple[type, ...], tuple[Any, Any]] = {}
_MAX_ROW_PLANS = 512


def _getter(positions: list[int]) -> Any:
    """A function returning the values at ``positions`` of a row as a tuple, or None."""
    if not positions:
        return None
    if len(positions) == 1:
        return itemgetter(positions[0], positions[0])  # a tuple even for one position
    return itemgetter(*positions)


def _row_plan(signature: tuple[type, ...]) -> tuple[Any, Any]:
    """The validation plan of a row signature; raises :class:`PayloadError` if invalid."""
    plan = _ROW_PLANS.get(signature)
    if plan is not None:
        return plan
    if len(signature) != len(_ROW_KINDS) or signature[0] is not int:
        raise PayloadError("an agent-info row must hold every agent-info column, id first")
    for column, kind, actual in zip(AGENT_INFO_COLUMNS, _ROW_KINDS, signature, strict=True):
        if actual is not kind and actual is not _NONE:
            raise PayloadError(f"invalid value for {column}")
    plan = (_getter([i for i, t in enumerate(signature) if t is str]),
            _getter([i for i, t in enumerate(signature) if t is int and i > 0]))
    if len(_ROW_PLANS) < _MAX_ROW_PLANS:
        _ROW_PLANS[signature] = plan
    return plan


def decode_agent_info_rows(
    chunk: Any,
) -> tuple[list[list[Any]], list[tuple[int, list[tuple[str, str]]]]]:
    """Validate one chunk of the compact rows form (already parsed JSON).

    :returns: ``(rows, labels)``: the rows as received (each a list of the
        :data:`AGENT_INFO_COLUMNS` values, id first, ``None`` for NULL), usable directly as
        SQL parameters; and ``(agent id, [(key, value), ...])`` for the agents whose labels
        the chunk carries. The rules are those of :func:`decode_agent_info_chunk`.
    :raises PayloadError: if anything is malformed.
    """
    if not isinstance(chunk, dict):
        raise PayloadError("an agent-info rows chunk must be an object")
    rows = chunk.get("rows")
    if not isinstance(rows, list) or len(rows) > MAX_ROWS_PER_CHUNK:
        raise PayloadError(f"rows must be a list of at most {MAX_ROWS_PER_CHUNK} rows")
    if rows:
        # Column by column over the whole chunk, each column's distinct values once: the
        # same checks as a loop over every value, with C-level set, map and max calls.
        if set(map(type, rows)) != {list}:
            raise PayloadError("an agent-info row must be a list")
        if set(map(len, rows)) != {len(AGENT_INFO_COLUMNS)}:
            raise PayloadError("an agent-info row must hold every agent-info column, id first")
        ids, *columns = zip(*rows, strict=True)
        if set(map(type, ids)) != {int} or min(ids) < 0 or max(ids) > MAX_AGENT_ID:
            raise PayloadError("invalid agent id")
        _check_columns(columns)
    raw_labels = chunk.get("labels", [])
    if not isinstance(raw_labels, list) or len(raw_labels) > len(rows):
        raise PayloadError("labels must be a list of at most one entry per row")
    labels: list[tuple[int, list[tuple[str, str]]]] = []
    row_ids = {row[0] for row in rows} if raw_labels else set()
    for entry in raw_labels:
        if not isinstance(entry, list) or len(entry) != 2:
            raise PayloadError("a labels entry must be [agent id, [[key, value], ...]]")
        agent_id, pairs = entry
        if _check_agent_id(agent_id) not in row_ids:
            raise PayloadError("labels of an agent the chunk has no row for")
        if not isinstance(pairs, list) or len(pairs) > MAX_LABELS:
            raise PayloadError(f"labels must be a list of at most {MAX_LABELS} pairs")
        checked = []
        for pair in pairs:
            if not isinstance(pair, list) or len(pair) != 2:
                raise PayloadError("a label must be a [key, value] pair")
            checked.append((_check_text(pair[0], "label key"),
                            _check_text(pair[1], "label value")))
        labels.append((agent_id, checked))
    return rows, labels


# -- agent-groups ----------------------------------------------------------------------------

def encode_groups_string(
    chunks: Sequence[str], mode: str = "override", sync_status: str = "synced",
) -> bytes:
    """Build the long string a master sends before ``syn_g_m_w`` or ``syn_g_m_w_c``."""
    return _long_string({"set_data_command": AGENT_GROUPS_SET_COMMAND,
                         "payload": {"mode": mode, "sync_status": sync_status}}, chunks)


def decode_groups_string(
    data: bytes, max_size: int = MAX_STRING_SIZE, max_chunks: int | None = None,
) -> GroupsString:
    """Return mode, sync status and chunks of an agent-groups long string.

    :raises PayloadError: on malformed input or sizes over the limits.
    """
    root = _loads(data, max_size, "agent-groups string", fast=True)
    if not isinstance(root, dict):
        raise PayloadError("agent-groups string must be a JSON object")
    if root.get("set_data_command") != AGENT_GROUPS_SET_COMMAND:
        raise PayloadError(f"unexpected set_data_command {root.get('set_data_command')!r}")
    payload = root.get("payload")
    if not isinstance(payload, dict):
        raise PayloadError("payload must be an object")
    mode = payload.get("mode", "override")
    sync_status = payload.get("sync_status", "synced")
    if mode not in ("override", "append", "empty_only", "remove"):
        raise PayloadError(f"invalid mode {mode!r}")
    if sync_status not in ("synced", "syncreq"):
        raise PayloadError(f"invalid sync_status {sync_status!r}")
    return GroupsString(mode, sync_status, _check_chunks(root.get("chunks"), max_chunks))


def encode_groups_chunk(
    assignments: Sequence[tuple[int, Sequence[str]]],
    with_hash: bool = False, global_hash: str | None = None,
) -> str:
    """Serialize one agent-groups chunk as wazuh-db answers ``sync-agent-groups-get``."""
    response: dict[str, Any] = {
        "data": [{"id": agent_id, "groups": list(groups)} for agent_id, groups in assignments],
    }
    if with_hash:
        response["hash"] = global_hash
    return _dumps_compact([response])


def check_group_name(value: Any) -> str:
    """Validate a group name as wazuh-db does: ``[A-Za-z0-9_.-]{1,255}``, not ``.``/``..``.

    :raises PayloadError: for anything else.
    """
    if (not isinstance(value, str) or not 0 < len(value) <= MAX_GROUP_NAME
            or value in (".", "..")
            or not all(c.isascii() and (c.isalnum() or c in "_.-") for c in value)):
        raise PayloadError(f"invalid group name {value!r}")
    return value


def decode_groups_chunk(chunk: str) -> GroupsChunk:
    """Parse and validate one agent-groups chunk (only its first object is used, as Wazuh does).

    :raises PayloadError: on malformed JSON, invalid ids, invalid or too many group names.
    """
    root = _loads(chunk, MAX_CHUNK_SIZE, "agent-groups chunk", fast=True)
    if not isinstance(root, list) or not root or not isinstance(root[0], dict):
        raise PayloadError("an agent-groups chunk must be a non-empty array of objects")
    first = root[0]
    data = first.get("data")
    if not isinstance(data, list):
        raise PayloadError("agent-groups data must be a list")
    assignments: list[tuple[int, tuple[str, ...]]] = []
    for item in data:
        if not isinstance(item, dict):
            raise PayloadError("an agent-groups entry must be an object")
        groups = item.get("groups")
        if not isinstance(groups, list) or len(groups) > MAX_GROUPS_PER_AGENT:
            raise PayloadError(f"groups must be a list of at most {MAX_GROUPS_PER_AGENT} names")
        assignments.append((_check_agent_id(item.get("id")),
                            tuple(check_group_name(g) for g in groups)))
    last = root[-1] if isinstance(root[-1], dict) else {}
    has_hash = "hash" in last
    global_hash = last.get("hash")
    if global_hash is not None and not (
            isinstance(global_hash, str) and len(global_hash) == 40
            and all(c in "0123456789abcdef" for c in global_hash)):
        raise PayloadError("hash must be 40 lowercase hex digits or null")
    return GroupsChunk(tuple(assignments), has_hash, global_hash)


def master_groups_hash(chunks: Sequence[str]) -> tuple[bool, str | None]:
    """The master's global group hash carried by the last chunk.

    :returns: ``(present, hash)``; ``present`` is False when the last chunk has no ``hash``
        key (full-resync chunks), in which case no comparison should be made.
    """
    if not chunks:
        return False, None
    last = decode_groups_chunk(chunks[-1])
    return last.has_hash, last.global_hash


# -- results ---------------------------------------------------------------------------------

def encode_sync_result(result: SyncResult) -> bytes:
    """Build a ``syn_m_a_e`` / ``syn_w_g_e`` / ``syn_wgc_e`` payload."""
    return json.dumps({
        "updated_chunks": result.updated_chunks,
        "error_messages": list(result.error_messages),
        "time_spent": result.time_spent,
    }, ensure_ascii=False).encode("utf-8")


def decode_sync_result(data: bytes, max_size: int = MAX_RESULT_SIZE) -> SyncResult:
    """Parse a ``syn_m_a_e`` / ``syn_w_g_e`` / ``syn_wgc_e`` payload.

    :raises PayloadError: on malformed JSON or wrongly typed members.
    """
    root = _loads(data, max_size, "sync result")
    if not isinstance(root, dict):
        raise PayloadError("a sync result must be a JSON object")
    updated = root.get("updated_chunks")
    messages = root.get("error_messages", [])
    spent = root.get("time_spent", 0.0)
    if type(updated) is not int or updated < 0:
        raise PayloadError("updated_chunks must be a non-negative integer")
    if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
        raise PayloadError("error_messages must be a list of strings")
    if type(spent) not in (int, float):
        raise PayloadError("time_spent must be a number")
    return SyncResult(updated, tuple(messages), float(spent))
