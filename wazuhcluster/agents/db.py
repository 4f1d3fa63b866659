"""The agent database: a blocking SQLite ``global.db`` with the operations the cluster needs.

:class:`AgentDatabase` owns one ``sqlite3`` connection and must be used from one thread at a
time (:class:`wazuhcluster.agents.threaded.ThreadedAgentDatabase` runs it on a dedicated
single-thread pool). Its operations follow the wazuh-db ``global`` commands the cluster uses
(docs/protocol.md), with these deliberate differences:

* **Agent-info is not marked synced when read.** :meth:`AgentDatabase.get_agent_info_sync`
  returns, with the chunks, the change sequence of every row it read;
  :meth:`AgentDatabase.mark_agent_info_synced` marks a row synced only if its sequence has not
  changed since, so an update that lands while a sync is in flight is sent again next cycle
  (Wazuh marks rows synced as they are read and loses data when the master fails).
  Suggested worker rule: mark after a ``syn_m_a_e`` with no error messages, otherwise leave
  everything marked (``sync-agent-info-set`` is idempotent).
* **Setting groups creates missing groups** instead of failing the agent.
* **A full agent-groups resync converges.** Applied with ``full=True``, the dump is taken as the
  whole truth: agents it lists with no groups, and agents it does not list at all, end up with
  no groups (``group`` and ``group_hash`` NULL), so they contribute nothing to the global hash,
  exactly like the master's agents without groups. Wazuh leaves stale worker-side assignments
  in place, so the hashes can stay different forever.
* Agent-info for unknown agents is ignored (as in Wazuh) but counted; agent 000 is never
  written by a peer.

Group hashes are computed as wazuh-db computes them: an agent's ``group_hash`` is the first 8
hex digits of SHA-256 of its comma-separated group list (ordered by priority), and the global
group hash is the SHA-1 hex digest of the concatenation of the non-NULL ``group_hash`` values
of agents with ``id > 0`` in id order (``None`` when there is none).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from itertools import accumulate
from typing import Any, Literal, TypeVar

import attrs

from wazuhcluster.agents import keys as _keys
from wazuhcluster.agents.payloads import (
    MAX_GROUPS_PER_AGENT,
    MAX_ROWS_PER_CHUNK,
    PayloadError,
    check_group_name,
    collector_paused,
    decode_agent_info_params,
    decode_agent_info_rows,
    decode_groups_chunk,
)
from wazuhcluster.agents.schema import (
    AGENT_INFO_COLUMNS,
    AGENT_INFO_SET_COLUMNS,
    WDB_MAX_RESPONSE_SIZE,
    configure_connection,
    create_schema,
)
from wazuhcluster.errors import ConfigError

#: Types a parameter of :meth:`AgentDatabase.select` may have.
SqlParam = str | int | float | None
_T = TypeVar("_T")

GroupsMode = Literal["override", "append", "empty_only", "remove"]
GroupsCondition = Literal["sync_status", "all"]

#: The error text wazuh-db answers when ``set-agent-groups`` fails for some agent.
GROUPS_SET_ERROR = "An error occurred during the set of the groups"
#: Counts remembered by :meth:`AgentDatabase.count` (query shapes, oldest dropped first).
COUNT_CACHE_SIZE = 64
#: A reconciliation inserting at least this many agents (and more than the table holds)
#: rebuilds the agent table's indexes once instead of updating them per row.
BULK_INSERT_ROWS = 10_000
#: Stored agents read at a time when reconciling with a client.keys file.
RECONCILE_BATCH = 10_000

#: NOT NULL agent-info columns: an object without them keeps the stored value (wazuh-db
#: would bind NULL and fail the whole chunk on the constraint).
_NOT_NULL_INFO_COLUMNS = frozenset({"name", "connection_status", "group_config_status"})

#: Applies one agent-info object: parameters are the set columns, then the id.
_UPDATE_INFO_STANDARD = "UPDATE agent SET " + ", ".join(
    f"{c} = COALESCE(?, {c})" if c in _NOT_NULL_INFO_COLUMNS else f"{c} = ?"
    for c in AGENT_INFO_SET_COLUMNS) + ", sync_status = 'synced' WHERE id = ?"
#: Applies one compact row as received: ``?1`` is the id, then the set columns in order.
_UPDATE_INFO_ROWS = "UPDATE agent SET " + ", ".join(
    f"{c} = COALESCE(?{i}, {c})" if c in _NOT_NULL_INFO_COLUMNS else f"{c} = ?{i}"
    for i, c in enumerate(AGENT_INFO_SET_COLUMNS, start=2)
) + ", sync_status = 'synced' WHERE id = ?1 AND id > 0"
#: A chunk's checked rows are staged in this temporary table (one ``executemany`` of plain
#: INSERTs) and applied set-based (:data:`_UPDATE_INFO_STAGED`): half the CPU
#: of an UPDATE statement executed per row (each execution opens its cursors on the table
#: and its four indexes again).
#: The count of changes that can move the global group hash (triggers in the schema).
_GROUP_HASH_COUNTER = "SELECT value FROM cluster_counters WHERE name = 'group_hash'"
_STAGED_TABLE = ("CREATE TEMP TABLE IF NOT EXISTS info_staged (id INTEGER, "
                 + ", ".join(f"c{i}" for i in range(1, len(AGENT_INFO_COLUMNS))) + ")")
#: Stages one 4.7.5-form parameter tuple (the set columns, then the id).
_STAGE_STANDARD = ("INSERT INTO temp.info_staged ("
                   + ", ".join(f"c{i}" for i in range(1, len(AGENT_INFO_COLUMNS)))
                   + f", id) VALUES ({', '.join('?' * len(AGENT_INFO_COLUMNS))})")
#: Stages one compact row as received (the id, then the set columns).
_STAGE_ROWS = f"INSERT INTO temp.info_staged VALUES ({', '.join('?' * len(AGENT_INFO_COLUMNS))})"
#: The agent-info columns that an index of the ``agent`` table holds (``agent_name``,
#: ``agent_ip``, ``agent_status_node``; checked against the schema by a test).
_INDEXED_INFO_COLUMNS = frozenset({"name", "ip", "connection_status", "node_name"})


def _staged_value(column: str, index: int) -> str:
    """What :data:`_UPDATE_INFO_STANDARD` writes into ``column`` from staged column ``index``:
    a NULL keeps a NOT NULL column as it is."""
    if column in _NOT_NULL_INFO_COLUMNS:
        return f"COALESCE(s.c{index}, agent.{column})"
    return f"s.c{index}"


#: True when a staged row would change a column an index holds.
_MOVES_AN_INDEX = " OR ".join(
    f"agent.{c} IS NOT {_staged_value(c, i)}"
    for i, c in enumerate(AGENT_INFO_SET_COLUMNS, start=1) if c in _INDEXED_INFO_COLUMNS)
_FROM_STAGED = " FROM temp.info_staged s WHERE agent.id = s.id AND agent.id > 0 AND "
#: :data:`_UPDATE_INFO_STANDARD` and :data:`_UPDATE_INFO_ROWS` for every staged row at once.
_UPDATE_INFO_STAGED = "UPDATE agent SET " + ", ".join(
    f"{c} = {_staged_value(c, i)}" for i, c in enumerate(AGENT_INFO_SET_COLUMNS, start=1)
) + ", sync_status = 'synced' FROM temp.info_staged s WHERE agent.id = s.id AND agent.id > 0"
#: :data:`_UPDATE_INFO_STAGED` in two statements that each write a row at most once (the
#: first leaves the indexed columns as they are, so its rows do not match the second). SQLite
#: rewrites an index entry whenever the SET list names one of its columns, even with an equal
#: value; most syncs bring new keepalives and nothing an index holds, and the first statement
#: writes those rows without touching the ``agent`` indexes. Rows that move an index (a first
#: sync, a rename, a new address, node or status) are written with every column by the
#: second. Used while few rows move an index (:class:`_WritePlan`): a first sync, where every
#: row does, pays for two statements per chunk instead of one.
_UPDATE_INFO_SPLIT = (
    "UPDATE agent SET " + ", ".join(
        f"{c} = {_staged_value(c, i)}"
        for i, c in enumerate(AGENT_INFO_SET_COLUMNS, start=1) if c not in _INDEXED_INFO_COLUMNS)
    + ", sync_status = 'synced'" + _FROM_STAGED + f"NOT ({_MOVES_AN_INDEX})",
    _UPDATE_INFO_STAGED + f" AND ({_MOVES_AN_INDEX})",
)


@attrs.define
class _WritePlan:
    """Which UPDATE :func:`_update_info` uses for the chunks of one :meth:`set_agent_info`:
    :data:`_UPDATE_INFO_SPLIT` until a chunk shows that most of its rows move an index (they
    are alike within a sync: all new agents, or all keepalives), then
    :data:`_UPDATE_INFO_STAGED` for the rest. Both write the same."""

    split: bool = True

    def written(self, updated: int, moved: int) -> None:
        """Note a split chunk: ``updated`` rows written, ``moved`` of them moved an index."""
        if 2 * moved > updated:
            self.split = False


#: Inserts one label of an agent if the agent exists (unknown agents are skipped).
_INSERT_LABEL = ("INSERT OR REPLACE INTO labels (id, key, value) SELECT ?1, ?2, ?3"
                 " WHERE EXISTS (SELECT 1 FROM agent WHERE id = ?1)")

_EMPTY_GROUPS_PAGE = '[{"data":[]}]'
#: Room wazuh-db reserves for the ``hash`` member: ``strlen("hash:\"\"") + sizeof(os_sha1)``.
_HASH_ROOM = 7 + 41


#: The embedded agent database's file name under ``queue/db/``. Not ``global.db``: that is
#: wazuh-db's own file on a real manager, which wazuhcluster never opens.
DATABASE_NAME = "wazuhcluster-agents.db"


def database_path(home: str) -> str:
    """Where the embedded agent database of the installation rooted at ``home`` lives."""
    return os.path.join(home, "queue", "db", DATABASE_NAME)


def wazuh_db_socket(home: str) -> str:
    """wazuh-db's socket on a real manager rooted at ``home``."""
    return os.path.join(home, "queue", "db", "wdb")


def refuse_next_to_live_wazuh_db(home: str) -> None:
    """Stop start-up in embedded mode when a live wazuh-db answers in ``home``.

    The embedded database would then be a second, diverging copy of the agents that
    wazuh-db owns. Blocking (one local connect): call it while the tree is built, before the
    reactor runs.

    :raises ConfigError: with the setting that selects the wazuh-db backend.
    """
    path = wazuh_db_socket(home)
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except OSError:
        return  # a stale socket file: no wazuh-db runs
    finally:
        probe.close()
    raise ConfigError(f"a live wazuh-db answers on {path}: the embedded agent database must not "
                      "run beside it; set agent_db.backend: wazuh-db in etc/wazuhcluster.yaml "
                      "(see docs/operations.md, 'Beside a Wazuh manager')")


def group_hash(groups_csv: str) -> str:
    """An agent's ``group_hash``: first 8 hex digits of SHA-256 of its group CSV."""
    return hashlib.sha256(groups_csv.encode("utf-8")).hexdigest()[:8]


def global_group_hash_of(group_hashes: Sequence[str]) -> str | None:
    """The global group hash over per-agent hashes already in id order."""
    if not group_hashes:
        return None
    digest = hashlib.sha1()
    for value in group_hashes:
        digest.update(value.encode("utf-8"))
    return digest.hexdigest()


def _dumps(value: Any) -> str:
    """Compact JSON as cJSON prints it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


#: Each compact row: a JSON array of the agent-info columns (NULL as null).
_ROW_ARRAY = f"json_array({', '.join(f'a.{c}' for c in AGENT_INFO_COLUMNS)})"
#: Bit ``i`` set when the ``i``-th agent-info column after ``id`` is NULL.
_NULL_MASK = " | ".join(f"((a.{c} IS NULL) << {i})"
                        for i, c in enumerate(AGENT_INFO_COLUMNS[1:]))
#: The NULL patterns (at most 8) among the first 256 agents to send.
_SAMPLE_NULL_MASKS = (f"SELECT DISTINCT m FROM (SELECT {_NULL_MASK} AS m FROM agent a"
                      " WHERE a.id > 0 AND a.sync_status = 'syncreq' LIMIT 256) LIMIT 8")
#: An agent object without its NULL members, for any row: json_patch onto {} drops them.
_PATCHED_OBJECT = ("json_patch('{}', json_object("
                   + ", ".join(f"'{c}', a.{c}" for c in AGENT_INFO_COLUMNS) + "))")


def _object_builder(masks: Sequence[int]) -> str:
    """SQL building each agent's object as wazuh-db writes it (NULL columns left out): for
    rows whose NULL pattern is one of ``masks``, a json_object of exactly their non-NULL
    columns; for the others :data:`_PATCHED_OBJECT`."""
    if not masks:
        return _PATCHED_OBJECT
    branches = []
    for mask in masks:
        members = ", ".join(f"'{c}', a.{c}" for i, c in enumerate(AGENT_INFO_COLUMNS[1:])
                            if not int(mask) >> i & 1)
        branches.append(f"WHEN {int(mask)} THEN json_object('id', a.id"
                        + (f", {members})" if members else ")"))
    return f"CASE {_NULL_MASK} {' '.join(branches)} ELSE {_PATCHED_OBJECT} END"


def _add_utf8_lengths(weights: list[int], texts: Sequence[str]) -> None:
    """Add the UTF-8 length of each text to its weight."""
    if "".join(texts).isascii():
        for index, length in enumerate(map(len, texts)):
            weights[index] += length
    else:
        for index, text in enumerate(texts):
            weights[index] += len(text.encode("utf-8"))


def _cuts(weights: Sequence[int], base: int, limit: int,
          max_rows: int | None = None) -> list[tuple[int, int]]:
    """Cut items into consecutive ``(start, end)`` ranges, greedily: an item joins the current
    range while ``base`` plus the weights of the range and of the item stay below ``limit``
    (and the range has fewer than ``max_rows`` items); an item too heavy for an empty range
    gets one of its own."""
    total = list(accumulate(weights, initial=0))
    count = len(weights)
    ranges = []
    start = 0
    while start < count:
        end = bisect_left(total, limit - base + total[start], start + 1) - 1
        end = max(end, start + 1)
        if max_rows is not None:
            end = min(end, start + max_rows)
        ranges.append((start, end))
        start = end
    return ranges


def _rows_chunks(versions: Sequence[tuple[int, int]], texts: list[str],
                 labels: dict[int, list[Any]], max_chunk_size: int) -> tuple[str, ...]:
    """Cut compact rows (and their labels) into chunks of the rows form."""
    weights = [1] * len(texts)  # the comma after each row
    entries: dict[int, Any] = {}
    if labels:
        for index, (agent_id, _) in enumerate(versions):
            agent_labels = labels.get(agent_id)
            if agent_labels:
                entries[index] = entry = [agent_id, agent_labels]
                weights[index] += len(_dumps(entry).encode("utf-8")) + 1
    _add_utf8_lengths(weights, texts)
    chunks = []
    for start, end in _cuts(weights, len('{"rows":[],"labels":[]}'), max_chunk_size,
                            MAX_ROWS_PER_CHUNK):
        chunk_labels = [entries[i] for i in range(start, end) if i in entries] if entries else []
        chunks.append('{"rows":[' + ",".join(texts[start:end]) + '],"labels":'
                      + _dumps(chunk_labels) + "}")
    return tuple(chunks)


@attrs.frozen
class AgentInfoBatch:
    """Agent-info read for one sync: chunks to send, and the versions to confirm later.

    ``versions`` holds one ``(agent id, change sequence)`` pair per agent in the chunks.
    """

    chunks: tuple[str, ...]
    versions: tuple[tuple[int, int], ...]


@attrs.frozen
class AgentInfoSetResult:
    """Outcome of applying agent-info chunks on the master."""

    updated_chunks: int
    error_messages: tuple[str, ...]
    updated_agents: int
    unknown_agents: int


@attrs.frozen
class GroupsSetResult:
    """Outcome of one ``set-agent-groups`` call."""

    updated_agents: int
    unknown_agents: int
    failed_agents: tuple[int, ...] = ()
    skipped_agents: int = 0


@attrs.frozen
class GroupsApplyResult:
    """Outcome of applying agent-groups chunks received from the master."""

    updated_chunks: int
    error_messages: tuple[str, ...]
    unknown_agents: int
    cleared_agents: int = 0


@attrs.define
class GroupsChunksTally:
    """The bookkeeping of applying agent-groups chunks, shared by both backends (the
    embedded database and wazuh-db): :meth:`decode` yields the assignments of each chunk
    that parses (a chunk that does not is an error and makes the set incomplete), the
    caller applies them and gives each outcome to :meth:`record`; :meth:`result` sums up."""

    updated_chunks: int = 0
    unknown_agents: int = 0
    errors: list[str] = attrs.Factory(list)
    #: Every agent listed in a chunk that parsed (kept by a full resync).
    listed: set[int] = attrs.Factory(set)
    #: Whether every chunk parsed (a full resync clears unlisted agents only then).
    complete: bool = True

    def decode(self, chunks: Sequence[str]) -> Iterator[tuple[tuple[int, tuple[str, ...]], ...]]:
        """The assignments of each chunk, in order; bad chunks are recorded and skipped."""
        for chunk in chunks:
            try:
                decoded = decode_groups_chunk(chunk)
            except PayloadError as e:
                self.errors.append(f"Invalid JSON syntax; {e}")
                self.complete = False
                continue
            self.listed.update(a for a, _ in decoded.assignments)
            yield decoded.assignments

    def record(self, result: GroupsSetResult) -> None:
        """The outcome of one chunk: updated unless some agent failed."""
        self.unknown_agents += result.unknown_agents
        if result.failed_agents:
            self.errors.append(GROUPS_SET_ERROR)
        else:
            self.updated_chunks += 1

    def result(self, cleared: int) -> GroupsApplyResult:
        """The summed outcome (``cleared``: agents a full resync left without groups)."""
        return GroupsApplyResult(self.updated_chunks, tuple(self.errors), self.unknown_agents,
                                 cleared)


@attrs.frozen
class GroupsPage:
    """One answer of ``sync-agent-groups-get``: ``status`` is ``"ok"`` or ``"due"``."""

    status: Literal["ok", "due"]
    payload: str
    last_id: int


@attrs.frozen
class Keepalive:
    """A keepalive seen for an agent connected to this node."""

    agent_id: int
    node_name: str
    when: int
    os_name: str | None = None
    os_version: str | None = None
    version: str | None = None


@attrs.frozen
class AgentSummary:
    """One line of the agent listing."""

    agent_id: int
    name: str
    ip: str | None
    status: str
    node_name: str | None
    last_keepalive: int | None
    version: str | None
    groups: tuple[str, ...]


@attrs.frozen
class ReconcileResult:
    """What :meth:`AgentDatabase.reconcile_keys` changed."""

    inserted: int
    updated: int
    removed: int


#: A chunk made ready for :func:`_update_info`: its rows, its labels, the agents skipped
#: (000), and the UPDATE, staging statement and id position of its form.
_DecodedChunk = tuple[Sequence[Sequence[Any]], Sequence[tuple[int, Sequence[tuple[str, str]]]],
                      int, str, str, int]

def _decode_info_chunk(chunk: Any) -> _DecodedChunk:
    """Parse and check one agent-info chunk (either form); pure, any thread.

    :raises PayloadError: if the chunk is malformed.
    """
    if isinstance(chunk, str):
        rows, labels, skipped = decode_agent_info_params(chunk)
        return rows, labels, skipped, _UPDATE_INFO_STANDARD, _STAGE_STANDARD, -1
    compact_rows, compact_labels = decode_agent_info_rows(chunk)
    return compact_rows, compact_labels, 0, _UPDATE_INFO_ROWS, _STAGE_ROWS, 0


class _ChunksAhead:
    """The chunks of one :meth:`AgentDatabase.set_agent_info` call, decoded in order.

    The writer asks for the next chunk to be decoded on a second thread (:meth:`start_next`)
    just before it runs a chunk's set-based UPDATE, a long SQLite step that releases the GIL:
    the parse and checks of chunk k+1 (Python, holding the GIL) then overlap the write of
    chunk k instead of following it. Decoding is started there and nowhere else, so the
    second thread does not contend for the GIL with the writer's many short steps (staging,
    labels). A chunk not started ahead, or whose decoding the second thread has not begun
    when the writer needs it (the machine busy), is decoded on the calling thread: the
    writer never waits for a thread that did not get a CPU.
    """

    def __init__(self, chunks: Sequence[Any], decoder: Callable[[], ThreadPoolExecutor]) -> None:
        self._chunks = chunks
        self._decoder = decoder
        self._at = 0
        self._ahead: Future[_DecodedChunk] | None = None

    def __iter__(self) -> Iterator[_DecodedChunk | PayloadError]:
        """Each chunk decoded, or the :class:`PayloadError` that refused it."""
        while self._at < len(self._chunks):
            ahead, self._ahead = self._ahead, None
            chunk = self._chunks[self._at]
            self._at += 1
            if ahead is not None and ahead.cancel():
                ahead = None  # the second thread has not started it (a busy machine): here
            try:
                yield ahead.result() if ahead is not None else _decode_info_chunk(chunk)
            except PayloadError as e:
                yield e

    def start_next(self) -> None:
        """Start decoding the next chunk on the second thread, if there is one."""
        if self._ahead is None and self._at < len(self._chunks):
            self._ahead = self._decoder().submit(_decode_info_chunk, self._chunks[self._at])

    def close(self) -> None:
        """Drop a decoding started ahead and not taken (the writer stopped early)."""
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None


def _update_info(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], sql: str,
                 stage: str, id_at: int, before_update: Callable[[], None] = lambda: None,
                 plan: _WritePlan | None = None) -> int:
    """Apply a chunk's checked agent-info rows; returns how many agents were updated.

    The rows are staged in ``temp.info_staged`` and applied set-based (as ``plan`` says;
    without one, by the split statements), which writes what ``executemany(sql, rows)``
    writes for half the CPU or less. A chunk listing an agent twice is applied row by row
    instead (in order: the last row wins, each row counts, as in wazuh-db), which a
    set-based UPDATE would not do. ``before_update`` is called just before the first
    statement that writes the agents.
    """
    if len({row[id_at] for row in rows}) != len(rows):
        before_update()
        return int(conn.executemany(sql, rows).rowcount)
    try:
        conn.executemany(stage, rows)
        before_update()
        if plan is not None and not plan.split:
            return int(conn.execute(_UPDATE_INFO_STAGED).rowcount)
        keep, move = _UPDATE_INFO_SPLIT
        kept = int(conn.execute(keep).rowcount)
        # Every staged row written (the ids are distinct): none can move an index now.
        moved = int(conn.execute(move).rowcount) if kept < len(rows) else 0
        if plan is not None:
            plan.written(kept + moved, moved)
        return kept + moved
    finally:
        conn.execute("DELETE FROM temp.info_staged")


class AgentDatabase:
    """A ``global.db`` file and the cluster's operations on it (blocking, single thread)."""

    def __init__(self, path: str, now: int) -> None:
        """Open (creating if needed) the database at ``path``.

        :param now: current POSIX time, used as agent 000's ``date_add`` on creation.
        """
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, mode=0o770, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        configure_connection(self._conn)
        create_schema(self._conn, now)
        row = self._conn.execute("SELECT COALESCE(MAX(info_seq), 0) FROM cluster_sync_seq")
        self._seq: int = row.fetchone()[0]
        self._conn.execute(_STAGED_TABLE)
        #: :meth:`global_group_hash`: ((group-hash counter, data_version), hash) when read.
        self._group_hash_kept: tuple[tuple[int, int], str | None] | None = None
        #: :meth:`count` answers by (sql, params): (generation when counted, total).
        self._counts: dict[tuple[str, tuple[SqlParam, ...]], tuple[tuple[int, int], int]] = {}
        #: :meth:`set_agent_info`'s chunk decoding thread, started when first needed.
        self._decoder: ThreadPoolExecutor | None = None

    @classmethod
    def for_home(cls, home: str, now: int) -> AgentDatabase:
        """Open the database of the installation rooted at ``home``."""
        return cls(database_path(home), now)

    def close(self) -> None:
        """Close the connection (and stop the chunk decoding thread)."""
        if self._decoder is not None:
            self._decoder.shutdown(wait=True, cancel_futures=True)
            self._decoder = None
        self._conn.close()

    def _chunk_decoder(self) -> ThreadPoolExecutor:
        """The thread that decodes agent-info chunks ahead of :meth:`set_agent_info`."""
        if self._decoder is None:
            self._decoder = ThreadPoolExecutor(1, thread_name_prefix="agent-info-decode")
        return self._decoder

    # -- internals ---------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _keys_rows(self) -> Iterator[None]:
        """Around the writes of a client.keys reconciliation: the agent table's CHECK
        constraints are not evaluated. Those writes set only ``id``, ``name``, ``ip``
        (NULL), ``register_ip``, ``internal_key``, ``date_add`` and ``group`` (NULL), none
        of which a CHECK reads; every checked column of an inserted row takes its default,
        which the CHECK allows. Evaluating the four ``IN (...)`` checks was half the CPU of
        inserting a first client.keys (200 000 agents: 0.82-0.93 -> 0.44-0.47 s). The
        pragma is the connection's: it is set back whatever happens."""
        conn = self._conn
        conn.execute("PRAGMA ignore_check_constraints = ON")
        try:
            yield
        finally:
            conn.execute("PRAGMA ignore_check_constraints = OFF")

    def _mark_info_syncreq(self, conn: sqlite3.Connection, ids: Sequence[int]) -> None:
        """Mark agents for agent-info sync under a new change sequence."""
        if not ids:
            return
        self._seq += 1
        seq = self._seq
        conn.executemany("UPDATE agent SET sync_status = 'syncreq' WHERE id = ?",
                         [(i,) for i in ids])
        conn.executemany(
            "INSERT INTO cluster_sync_seq (id, info_seq) VALUES (?, ?)"
            " ON CONFLICT (id) DO UPDATE SET info_seq = excluded.info_seq",
            [(i, seq) for i in ids])

    def _existing_ids(self, ids: Sequence[int]) -> set[int]:
        """The subset of ``ids`` present in the agent table."""
        if not ids:
            return set()
        rows = self._conn.execute(
            "SELECT id FROM agent WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),))
        return {r[0] for r in rows}

    def _groups_by_agent(self) -> dict[int, list[str]]:
        """Group names of every agent that has groups, ordered by priority."""
        rows = self._conn.execute(
            "SELECT b.id_agent, g.name FROM belongs b JOIN `group` g ON g.id = b.id_group"
            " ORDER BY b.id_agent, b.priority")
        result: dict[int, list[str]] = {}
        for agent_id, name in rows:
            result.setdefault(agent_id, []).append(name)
        return result

    def _group_ids(self, conn: sqlite3.Connection, names: Sequence[str]) -> dict[str, int]:
        """Ids of the named groups, creating the ones that do not exist yet."""
        conn.executemany("INSERT OR IGNORE INTO `group` (name) VALUES (?)",
                         [(n,) for n in names])
        rows = conn.execute(
            "SELECT name, id FROM `group` WHERE name IN (SELECT value FROM json_each(?))",
            (json.dumps(list(names)),))
        return dict(rows.fetchall())

    def _set_group_context(self, conn: sqlite3.Connection, agent_id: int,
                           sync_status: str | None) -> None:
        """Recompute an agent's ``group`` CSV and ``group_hash`` from ``belongs``."""
        names = [r[0] for r in conn.execute(
            "SELECT g.name FROM belongs b JOIN `group` g ON g.id = b.id_group"
            " WHERE b.id_agent = ? ORDER BY b.priority", (agent_id,))]
        csv = ",".join(names) if names else None
        hashed = group_hash(csv) if csv is not None else None
        if sync_status is None:
            conn.execute("UPDATE agent SET `group` = ?, group_hash = ? WHERE id = ?",
                         (csv, hashed, agent_id))
        else:
            conn.execute("UPDATE agent SET `group` = ?, group_hash = ?, group_sync_status = ?"
                         " WHERE id = ?", (csv, hashed, sync_status, agent_id))

    # -- agent-info (worker side) --------------------------------------------------------------

    def get_agent_info_sync(self, max_chunk_size: int = WDB_MAX_RESPONSE_SIZE,
                            rows: bool = False) -> AgentInfoBatch:
        """Read every agent marked for agent-info sync, as wazuh-db's ``sync-agent-info-get``.

        Each chunk is a compact JSON array of agent objects (columns of
        :data:`~wazuhcluster.agents.schema.AGENT_INFO_COLUMNS` in that order, NULL columns
        omitted, ``labels`` last when the agent has labels) whose size, like wazuh-db's, stays
        below ``max_chunk_size`` bytes; an agent too big for an empty chunk gets a chunk of its
        own. Nothing is marked synced.

        With ``rows=True`` the chunks are in the compact rows form between our nodes
        (:func:`~wazuhcluster.agents.payloads.encode_agent_info_rows_string`): each is
        ``{"rows":[[id, name, ...], ...],"labels":[[id, [[key, value], ...]], ...]}`` with the
        same size bound and at most
        :data:`~wazuhcluster.agents.payloads.MAX_ROWS_PER_CHUNK` rows.
        """
        conn = self._conn
        with collector_paused():
            return self._read_agent_info(conn, max_chunk_size, rows)

    def _read_agent_info(self, conn: sqlite3.Connection, max_chunk_size: int,
                         rows: bool) -> AgentInfoBatch:
        """:meth:`get_agent_info_sync` with the cyclic garbage collector paused."""
        conn.execute("BEGIN")
        try:
            if rows:
                # SQLite builds each row's JSON array (NULL as null): no key names to write.
                build = _ROW_ARRAY
            else:
                # SQLite builds each object, without the NULL columns as wazuh-db writes it:
                # a json_object of the non-NULL columns for the NULL patterns of a sample of
                # the rows, json_patch onto {} (a second parse, which drops the nulls) for
                # any other row. Both are several times faster than dicts and json.dumps in
                # Python, the first about twice as fast as the second.
                masks = [m for (m,) in conn.execute(_SAMPLE_NULL_MASKS)]
                build = _object_builder(masks)
            selected = conn.execute(
                f"SELECT a.id, {build}, COALESCE(s.info_seq, 0) FROM agent a"
                " LEFT JOIN cluster_sync_seq s ON s.id = a.id"
                " WHERE a.id > 0 AND a.sync_status = 'syncreq' ORDER BY a.id").fetchall()
            labels: dict[int, list[Any]] = {}
            for agent_id, key, value in conn.execute(
                    "SELECT l.id, l.key, l.value FROM labels l JOIN agent a ON a.id = l.id"
                    " WHERE a.id > 0 AND a.sync_status = 'syncreq' ORDER BY l.id, l.key"):
                labels.setdefault(agent_id, []).append(
                    [key, value] if rows else {"id": agent_id, "key": key, "value": value})
        finally:
            conn.execute("COMMIT")
        versions = tuple((r[0], r[2]) for r in selected)
        texts = [r[1] for r in selected]
        del selected
        if rows:
            return AgentInfoBatch(_rows_chunks(versions, texts, labels, max_chunk_size),
                                  versions)
        weights = [1] * len(texts)  # the comma after each object
        for index, (agent_id, _) in enumerate(versions):
            agent_labels = labels.get(agent_id) if labels else None
            if agent_labels:
                texts[index] = texts[index][:-1] + ',"labels":' + _dumps(agent_labels) + "}"
        _add_utf8_lengths(weights, texts)
        chunks = tuple("[" + ",".join(texts[start:end]) + "]"
                       for start, end in _cuts(weights, 2, max_chunk_size))
        return AgentInfoBatch(chunks, versions)

    def mark_agent_info_synced(self, versions: Sequence[tuple[int, int]]) -> int:
        """Mark agents synced if unchanged since they were read; returns how many were marked."""
        with self._transaction() as conn:
            cursor = conn.executemany(
                "UPDATE agent SET sync_status = 'synced' WHERE id = ?"
                " AND sync_status = 'syncreq' AND COALESCE((SELECT info_seq FROM"
                " cluster_sync_seq WHERE cluster_sync_seq.id = agent.id), 0) = ?",
                list(versions))
            return max(cursor.rowcount, 0)

    def update_agent_info(self, agent_id: int, fields: Mapping[str, Any]) -> bool:
        """Change agent-info columns of a local agent and mark it for sync.

        :param fields: a subset of the agent-info columns (``name``, ``os_name``, ...).
        :returns: False if the agent does not exist.
        :raises ValueError: for a column that is not an agent-info column.
        """
        unknown = set(fields) - set(AGENT_INFO_SET_COLUMNS)
        if unknown:
            raise ValueError(f"not agent-info columns: {sorted(unknown)}")
        if not fields or agent_id == 0:
            return False
        assignments = ", ".join(f"{c} = :{c}" for c in fields)
        with self._transaction() as conn:
            cursor = conn.execute(f"UPDATE agent SET {assignments} WHERE id = :agent_id",
                                  {**fields, "agent_id": agent_id})
            if cursor.rowcount == 0:
                return False
            self._mark_info_syncreq(conn, [agent_id])
        return True

    def record_keepalives(self, keepalives: Sequence[Keepalive]) -> int:
        """Record keepalives of agents connected to this node and mark them for sync.

        Sets ``last_keepalive``, ``connection_status = 'active'``, ``disconnection_time = 0``,
        ``status_code = 0``, ``node_name`` and, when given, ``os_name``, ``os_version`` and
        ``version``. Unknown agents and agent 000 are skipped.

        :returns: the number of agents updated.
        """
        updated: list[int] = []
        with self._transaction() as conn:
            for k in keepalives:
                if k.agent_id == 0:
                    continue
                cursor = conn.execute(
                    "UPDATE agent SET last_keepalive = ?, connection_status = 'active',"
                    " disconnection_time = 0, status_code = 0, node_name = ?,"
                    " os_name = COALESCE(?, os_name), os_version = COALESCE(?, os_version),"
                    " version = COALESCE(?, version) WHERE id = ?",
                    (k.when, k.node_name, k.os_name, k.os_version, k.version, k.agent_id))
                if cursor.rowcount:
                    updated.append(k.agent_id)
            self._mark_info_syncreq(conn, updated)
        return len(updated)

    # -- agent-info (master side) --------------------------------------------------------------

    def set_agent_info(self, chunks: Sequence[Any]) -> AgentInfoSetResult:
        """Apply agent-info chunks from a worker, as wazuh-db's ``sync-agent-info-set``.

        For every known agent listed (agent 000 excepted) the agent-info columns are replaced
        (columns absent from the object become NULL, as in wazuh-db, except the NOT NULL
        columns ``name``, ``connection_status`` and ``group_config_status``, which are kept
        instead of failing the chunk), ``sync_status`` becomes
        ``synced``, and when the object has ``labels`` the agent's labels are replaced by them.
        Unknown agents are ignored and counted. Each chunk is applied atomically; a chunk that
        does not parse or fails in SQLite is rolled back and reported in ``error_messages``.
        All chunks are committed in one transaction.

        A chunk is either the text of a standard chunk or a parsed chunk of the compact rows
        form (as :func:`~wazuhcluster.agents.payloads.decode_agent_info_string` returns them);
        both mean the same. With several chunks, the next chunk is parsed and checked on a
        second thread while this one writes (:class:`_ChunksAhead`); the writes, their order
        and the transaction are the same as one chunk after the other.
        """
        updated_chunks = 0
        updated_agents = 0
        unknown_agents = 0
        errors: list[str] = []
        decoded_chunks = _ChunksAhead(chunks, self._chunk_decoder)
        plan = _WritePlan()
        with self._transaction() as conn, collector_paused(), closing(decoded_chunks):
            for decoded in decoded_chunks:
                if isinstance(decoded, PayloadError):
                    errors.append(f"Invalid JSON syntax; {decoded}")
                    continue
                rows, labels, skipped, sql, stage, id_at = decoded
                conn.execute("SAVEPOINT chunk")
                try:
                    updated = _update_info(conn, rows, sql, stage, id_at,
                                           decoded_chunks.start_next, plan)
                    for agent_id, pairs in labels:
                        if agent_id == 0:
                            continue
                        conn.execute("DELETE FROM labels WHERE id = ?", (agent_id,))
                        conn.executemany(_INSERT_LABEL, [(agent_id, k, v) for k, v in pairs])
                except sqlite3.Error as e:
                    conn.execute("ROLLBACK TO chunk")
                    conn.execute("RELEASE chunk")
                    errors.append(f"Cannot execute Global database query; {e}")
                    continue
                conn.execute("RELEASE chunk")
                updated_chunks += 1
                updated_agents += updated
                unknown_agents += skipped + len(rows) - updated
        return AgentInfoSetResult(updated_chunks, tuple(errors), updated_agents, unknown_agents)

    # -- agent-groups --------------------------------------------------------------------------

    def create_groups(self, names: Sequence[str]) -> int:
        """Create the named groups that do not exist yet; returns how many were created.

        :raises PayloadError: for an invalid group name.
        """
        for name in names:
            check_group_name(name)
        with self._transaction() as conn:
            before = conn.execute("SELECT COUNT(*) FROM `group`").fetchone()[0]
            self._group_ids(conn, names)
            after = conn.execute("SELECT COUNT(*) FROM `group`").fetchone()[0]
        return int(after - before)

    def list_groups(self) -> list[str]:
        """Names of all groups, sorted."""
        return [r[0] for r in self._conn.execute("SELECT name FROM `group` ORDER BY name")]

    def set_agent_groups(
        self, assignments: Sequence[tuple[int, Sequence[str]]],
        mode: GroupsMode = "override", sync_status: str = "synced",
    ) -> GroupsSetResult:
        """Assign groups to agents, as wazuh-db's ``set-agent-groups``.

        Modes: ``override`` replaces the agent's groups; ``append`` adds after the existing
        ones; ``empty_only`` acts like override only for agents without groups (others are
        skipped); ``remove`` removes the listed groups and falls back to ``default`` when none
        is left. Groups that do not exist are created. Afterwards the agent's ``group`` CSV and
        ``group_hash`` are recomputed and ``group_sync_status`` set to ``sync_status``.
        Unknown agents are skipped and counted; agents with invalid group names or more than
        128 groups fail and are listed in ``failed_agents``. Everything runs in one transaction.
        """
        if sync_status not in ("synced", "syncreq"):
            raise ValueError(f"invalid sync_status {sync_status!r}")
        updated = unknown = skipped = 0
        failed: list[int] = []
        with self._transaction() as conn:
            known = self._existing_ids([a for a, _ in assignments])
            for agent_id, groups in assignments:
                if agent_id not in known:
                    unknown += 1
                    continue
                try:
                    names = list(dict.fromkeys(check_group_name(g) for g in groups))
                except PayloadError:
                    failed.append(agent_id)
                    continue
                current = [r[0] for r in conn.execute(
                    "SELECT g.name FROM belongs b JOIN `group` g ON g.id = b.id_group"
                    " WHERE b.id_agent = ? ORDER BY b.priority", (agent_id,))]
                if mode == "remove":
                    remaining = [g for g in current if g not in set(names)]
                    target = remaining or ["default"]
                elif mode == "append":
                    target = current + [g for g in names if g not in current]
                elif mode == "empty_only" and current:
                    skipped += 1
                    continue
                else:
                    target = names
                if len(target) > MAX_GROUPS_PER_AGENT:
                    failed.append(agent_id)
                    continue
                ids = self._group_ids(conn, target)
                conn.execute("DELETE FROM belongs WHERE id_agent = ?", (agent_id,))
                conn.executemany(
                    "INSERT INTO belongs (id_agent, id_group, priority) VALUES (?, ?, ?)",
                    [(agent_id, ids[g], p) for p, g in enumerate(target)])
                self._set_group_context(conn, agent_id, sync_status)
                updated += 1
        return GroupsSetResult(updated, unknown, tuple(failed), skipped)

    def apply_agent_groups_chunks(
        self, chunks: Sequence[str], mode: GroupsMode = "override",
        sync_status: str = "synced", full: bool = False,
    ) -> GroupsApplyResult:
        """Apply the chunks of a ``syn_g_m_w`` (``full=False``) or ``syn_g_m_w_c`` (``full=True``).

        Each chunk counts as updated unless it does not parse or some agent in it failed (then
        its error text is wazuh-db's). With ``full=True`` and every chunk parsed, agents with
        ``id > 0`` not listed in any chunk lose their groups, and all group hashes are
        recalculated afterwards (what the worker does after a full resync).
        """
        tally = GroupsChunksTally()
        for assignments in tally.decode(chunks):
            tally.record(self.set_agent_groups(assignments, mode, sync_status))
        cleared = 0
        if full:
            if tally.complete:
                cleared = self._clear_groups_except(tally.listed)
            self.recalculate_group_hashes()
        return tally.result(cleared)

    def _clear_groups_except(self, keep: set[int]) -> int:
        """Remove every group assignment of agents (``id > 0``) not in ``keep``."""
        with self._transaction() as conn:
            stale = [r[0] for r in conn.execute(
                "SELECT id FROM agent WHERE id > 0 AND (`group` IS NOT NULL"
                " OR group_hash IS NOT NULL OR id IN (SELECT id_agent FROM belongs))")
                if r[0] not in keep]
            conn.executemany("DELETE FROM belongs WHERE id_agent = ?", [(i,) for i in stale])
            conn.executemany(
                "UPDATE agent SET `group` = NULL, group_hash = NULL,"
                " group_sync_status = 'synced' WHERE id = ?", [(i,) for i in stale])
        return len(stale)

    def sync_agent_groups_get(
        self, condition: GroupsCondition | None, now: int, last_id: int = 0,
        set_synced: bool = False, get_global_hash: bool = False,
        registration_delta: int = 0, max_size: int = WDB_MAX_RESPONSE_SIZE,
    ) -> GroupsPage:
        """One answer of wazuh-db's ``sync-agent-groups-get``.

        ``condition="sync_status"`` selects agents with ``group_sync_status = 'syncreq'``,
        ``"all"`` every agent, ``None`` none (only the hash). Agents must have ``id > last_id``
        and ``date_add < now - registration_delta``. The payload is
        ``[{"data":[{"id":N,"groups":[...]}, ...]}]`` with ``"hash"`` added to the final
        (``ok``) page when ``get_global_hash``; pages are sized like wazuh-db's. With
        ``set_synced`` the returned agents are marked ``group_sync_status = 'synced'``.
        """
        data: list[dict[str, Any]] = []
        size = len(_EMPTY_GROUPS_PAGE)
        status: Literal["ok", "due"] = "ok"
        if condition is not None:
            where = "a.group_sync_status = 'syncreq' AND " if condition == "sync_status" else ""
            # No page can hold more agents than this (the smallest entry is 20 bytes long).
            limit = max_size // 20 + 1
            rows = self._conn.execute(
                "WITH sel AS (SELECT a.id FROM agent a"
                f" WHERE {where}a.id > ? AND a.date_add < ? ORDER BY a.id LIMIT ?)"
                " SELECT sel.id, g.name FROM sel LEFT JOIN belongs b ON b.id_agent = sel.id"
                " LEFT JOIN `group` g ON g.id = b.id_group ORDER BY sel.id, b.priority",
                (last_id, now - registration_delta, limit)).fetchall()
            agents: list[tuple[int, list[str]]] = []
            for agent_id, name in rows:
                if not agents or agents[-1][0] != agent_id:
                    agents.append((agent_id, []))
                if name is not None:
                    agents[-1][1].append(name)
            for agent_id, names in agents:
                item = {"id": agent_id, "groups": names}
                length = len(_dumps(item).encode("utf-8"))
                if size + length + 1 >= max_size:
                    status = "due"
                    break
                data.append(item)
                size += length + 1
                last_id = agent_id
            if set_synced and data:
                with self._transaction() as conn:
                    conn.executemany(
                        "UPDATE agent SET group_sync_status = 'synced' WHERE id = ?",
                        [(item["id"],) for item in data])
        response: dict[str, Any] = {"data": data}
        if status == "ok" and get_global_hash:
            if size + _HASH_ROOM + 1 < max_size:
                response["hash"] = self.global_group_hash()
            else:
                status = "due"
        return GroupsPage(status, _dumps([response]), last_id)

    def get_agent_groups_chunks(
        self, condition: GroupsCondition, now: int, set_synced: bool = False,
        get_global_hash: bool = False, registration_delta: int = 0,
        max_size: int = WDB_MAX_RESPONSE_SIZE,
    ) -> list[str]:
        """Every page of :meth:`sync_agent_groups_get` as the master's chunk list.

        Pages equal to ``[]`` or ``[{"data":[]}]`` are dropped, as the master does.
        """
        chunks: list[str] = []
        last_id = 0
        while True:
            page = self.sync_agent_groups_get(
                condition, now, last_id, set_synced, get_global_hash, registration_delta,
                max_size)
            if page.payload not in ("[]", _EMPTY_GROUPS_PAGE):
                chunks.append(page.payload)
            if page.status == "ok":
                return chunks
            if page.last_id == last_id:
                raise ValueError("an agent-groups entry does not fit in one page")
            last_id = page.last_id

    def global_group_hash(self) -> str | None:
        """The global group hash (SHA-1 over the ``group_hash`` of agents ``id > 0``).

        Kept until it may have changed: the triggers of ``cluster_counters`` count every
        insert, delete or change that can move it (from any connection), and ``PRAGMA
        data_version`` moves with any other connection's commit. Reading every agent costs
        25 ms at 200 000 agents, and the agent-groups rounds ask every 10-30 s.
        """
        conn = self._conn
        if conn.in_transaction:  # a caller's uncommitted changes: never kept
            return self._compute_global_group_hash(conn)
        conn.execute("BEGIN")
        try:
            key = (conn.execute(_GROUP_HASH_COUNTER).fetchone()[0],
                   conn.execute("PRAGMA data_version").fetchone()[0])
            kept = self._group_hash_kept
            if kept is not None and kept[0] == key:
                return kept[1]
            value = self._compute_global_group_hash(conn)
        finally:
            conn.execute("COMMIT")
        self._group_hash_kept = (key, value)
        return value

    @staticmethod
    def _compute_global_group_hash(conn: sqlite3.Connection) -> str | None:
        rows = conn.execute(
            "SELECT group_hash FROM agent WHERE id > 0 AND group_hash IS NOT NULL ORDER BY id")
        return global_group_hash_of([r[0] for r in rows])

    def recalculate_group_hashes(self) -> int:
        """Recompute ``group`` and ``group_hash`` of every agent ``id > 0`` from ``belongs``.

        :returns: the number of agents whose columns changed.
        """
        with self._transaction() as conn:
            groups = self._groups_by_agent()
            changes = []
            for agent_id, csv, hashed in conn.execute(
                    "SELECT id, `group`, group_hash FROM agent WHERE id > 0"):
                names = groups.get(agent_id)
                new_csv = ",".join(names) if names else None
                new_hash = group_hash(new_csv) if new_csv is not None else None
                if (csv, hashed) != (new_csv, new_hash):
                    changes.append((new_csv, new_hash, agent_id))
            conn.executemany("UPDATE agent SET `group` = ?, group_hash = ? WHERE id = ?",
                             changes)
        return len(changes)

    # -- client.keys ---------------------------------------------------------------------------

    def reconcile_keys(self, entries: Sequence[_keys.KeyEntry], now: int) -> ReconcileResult:
        """Make the agent table agree with ``client.keys`` (agent 000 is never touched).

        New agents are inserted (``register_ip`` from the key's IP field, ``internal_key``,
        ``date_add = now``, no group, like Wazuh's key synchronisation); agents whose name, IP
        field or key changed are updated; agents no longer present are deleted together with
        their labels and group memberships.
        """
        with self._keys_rows(), self._transaction() as conn:
            stored = {  # plain rows: compared as (name, register_ip, internal_key) tuples
                r[0]: r[1:] for r in conn.execute(
                    "SELECT id, name, register_ip, internal_key FROM agent WHERE id > 0")}
            plan = _keys.plan_reconcile(stored, entries)
            rebuild = (len(plan.insert) >= BULK_INSERT_ROWS
                       and len(plan.insert) > len(stored))
            del stored
            # Many new rows: building the secondary indexes once afterwards costs about a
            # quarter less than updating them row by row. Same transaction: nobody ever
            # sees the table without them.
            indexes = _drop_indexes(conn, "agent") if rebuild else []
            conn.executemany(
                "INSERT INTO agent (id, name, ip, register_ip, internal_key, date_add, `group`)"
                " VALUES (?, ?, NULL, ?, ?, ?, NULL)",
                [(i, name, ip[:-3] if ip.endswith("/32") else ip, key, now)
                 for i, name, ip, key in plan.insert])
            _restore_indexes(conn, indexes)
            conn.executemany(
                "UPDATE agent SET name = ?, register_ip = ?, internal_key = ? WHERE id = ?",
                [(e.name, _keys.register_ip(e.ip), e.key, e.agent_id) for e in plan.update])
            conn.executemany("DELETE FROM agent WHERE id = ?", [(i,) for i in plan.remove])
        return ReconcileResult(len(plan.insert), len(plan.update), len(plan.remove))

    def reconcile_keys_file(self, path: str, now: int) -> ReconcileResult:
        """Read ``client.keys`` at ``path`` and reconcile with it.

        A missing file changes nothing (a node that has not received its keys yet must not
        drop its agents); an existing empty file removes every agent but 000. The file is
        read line by line and compared with the table in batches of ids
        (:meth:`_reconcile_sorted`), in one transaction; a file whose ids do not ascend is
        read whole and planned as by :meth:`reconcile_keys`.
        """
        if not os.path.exists(path):
            return ReconcileResult(0, 0, 0)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = (part for physical in f for part in physical.splitlines())
                return self._reconcile_sorted(_keys.iter_sorted_client_keys(lines), now)
        except _keys.KeysOutOfOrder:  # rolled back: nothing of it was kept
            return self.reconcile_keys(_keys.read_client_keys(path), now)
        except FileNotFoundError:
            return ReconcileResult(0, 0, 0)

    def _reconcile_sorted(self, entries: Iterator[_keys.KeyEntry], now: int,
                          batch: int = RECONCILE_BATCH) -> ReconcileResult:
        """:meth:`reconcile_keys` for entries with ascending ids, without holding all of them
        or all stored agents in memory: the stored agents are read ``batch`` ids at a time and
        merged with the entries of the same id range; each range's changes are written before
        the next is read. With 200 000 agents this keeps the master's peak well below the
        100+ MB that the whole file and the whole table as Python objects took.
        """
        inserted = updated = removed = 0
        insert_sql = ("INSERT INTO agent (id, name, ip, register_ip, internal_key, date_add,"
                      " `group`) VALUES (?, ?, NULL, ?, ?, ?, NULL)")
        with self._keys_rows(), self._transaction() as conn:
            empty = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM agent WHERE id > 0)"
                                 ).fetchone()[0]
            # A first client.keys (a worker's 200 000 agents): building the secondary indexes
            # once afterwards costs about a quarter less than updating them row by row. Same
            # transaction: nobody ever sees the table without them. The group-hash triggers
            # are dropped with them: the rows inserted here have no group_hash.
            indexes = _drop_indexes(conn, "agent") if empty else []
            pending = next(entries, None)
            last_id = 0
            while True:
                stored = conn.execute(
                    "SELECT id, name, register_ip, internal_key FROM agent WHERE id > ?"
                    " ORDER BY id LIMIT ?", (last_id, batch)).fetchall()
                final = len(stored) < batch  # no stored agent above these
                bound = stored[-1][0] if stored else 0
                inserts: list[tuple[Any, ...]] = []
                updates: list[tuple[Any, ...]] = []
                removes: list[tuple[int]] = []
                j = 0
                while pending is not None and (final or pending[0] <= bound):
                    agent_id, name, ip, key = pending
                    while j < len(stored) and stored[j][0] < agent_id:
                        removes.append((stored[j][0],))
                        j += 1
                    register = ip[:-3] if ip.endswith("/32") else ip
                    if j < len(stored) and stored[j][0] == agent_id:
                        if stored[j][1:] != (name, register, key):
                            updates.append((name, register, key, agent_id))
                        j += 1
                    else:
                        inserts.append((agent_id, name, register, key, now))
                        if len(inserts) >= batch:  # memory stays bounded
                            conn.executemany(insert_sql, inserts)
                            inserted += len(inserts)
                            inserts = []
                    pending = next(entries, None)
                removes.extend((row[0],) for row in stored[j:])
                conn.executemany(insert_sql, inserts)
                conn.executemany("UPDATE agent SET name = ?, register_ip = ?, internal_key = ?"
                                 " WHERE id = ?", updates)
                conn.executemany("DELETE FROM agent WHERE id = ?", removes)
                inserted += len(inserts)
                updated += len(updates)
                removed += len(removes)
                if final:
                    break
                last_id = bound
            _restore_indexes(conn, indexes)
        return ReconcileResult(inserted, updated, removed)

    # -- queries -------------------------------------------------------------------------------

    def list_agents(self, node_name: str | None = None) -> list[AgentSummary]:
        """All agents (000 included), optionally only those reporting to ``node_name``.

        An agent that never connected shows its registration IP (``any`` included), as Wazuh
        lists it.
        """
        sql = ("SELECT id, name, COALESCE(ip, register_ip), connection_status, node_name,"
               " last_keepalive, version, `group` FROM agent")
        params: tuple[Any, ...] = ()
        if node_name is not None:
            sql += " WHERE node_name = ?"
            params = (node_name,)
        return [
            AgentSummary(r[0], r[1], r[2], r[3], r[4], r[5], r[6],
                         tuple(r[7].split(",")) if r[7] else ())
            for r in self._conn.execute(sql + " ORDER BY id", params)]

    def count_active_agents_by_node(self) -> dict[str, int]:
        """Number of ``active`` agents per ``node_name``, agent 000 excluded."""
        rows = self._conn.execute(
            "SELECT node_name, COUNT(*) FROM agent WHERE id > 0 AND"
            " connection_status = 'active' GROUP BY node_name")
        return {(name if name is not None else "unknown"): count for name, count in rows}

    def apply_key_changes(self, entries: Sequence[_keys.KeyEntry], removed: Sequence[int],
                          now: int) -> ReconcileResult:
        """Apply known changes of ``client.keys`` without reading the whole table: insert the
        agents of ``entries`` that do not exist (``date_add = now``, no group), update those
        whose name, IP field or key differ, delete ``removed`` (never 000). One transaction.
        Enrolment uses it instead of :meth:`reconcile_keys` (whose cost grows with every
        agent registered)."""
        entries = [e for e in entries if e.agent_id > 0]
        drop = sorted({int(i) for i in removed if int(i) > 0})
        with self._keys_rows(), self._transaction() as conn:
            stored: dict[int, _keys.StoredAgent] = {}
            ids = [e.agent_id for e in entries]
            for start in range(0, len(ids), 500):
                part = ids[start:start + 500]
                for r in conn.execute(
                        "SELECT id, name, register_ip, internal_key FROM agent WHERE id IN"
                        f" ({','.join('?' * len(part))})", part):
                    stored[r[0]] = _keys.StoredAgent(r[1], r[2], r[3])
            insert = [e for e in entries if e.agent_id not in stored]
            update = [e for e in entries if e.agent_id in stored and (
                stored[e.agent_id].name, stored[e.agent_id].register_ip,
                stored[e.agent_id].internal_key) != (e.name, _keys.register_ip(e.ip), e.key)]
            conn.executemany(
                "INSERT INTO agent (id, name, ip, register_ip, internal_key, date_add, `group`)"
                " VALUES (?, ?, NULL, ?, ?, ?, NULL)",
                [(e.agent_id, e.name, _keys.register_ip(e.ip), e.key, now) for e in insert])
            conn.executemany(
                "UPDATE agent SET name = ?, register_ip = ?, internal_key = ? WHERE id = ?",
                [(e.name, _keys.register_ip(e.ip), e.key, e.agent_id) for e in update])
            deleted = conn.executemany("DELETE FROM agent WHERE id = ?", [(i,) for i in drop])
        return ReconcileResult(len(insert), len(update), max(deleted.rowcount, 0))

    def registration_status(self, ids: Sequence[int]) -> dict[int, tuple[str, int, int]]:
        """``(connection_status, disconnection_time, date_add)`` of the listed agents that
        exist (what authd's replacement rules of ``<force>`` look at)."""
        wanted = sorted({int(i) for i in ids if int(i) > 0})
        found: dict[int, tuple[str, int, int]] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            marks = ",".join("?" * len(part))
            for r in self._conn.execute(
                    "SELECT id, connection_status, COALESCE(disconnection_time, 0), date_add"
                    f" FROM agent WHERE id IN ({marks})", part):
                found[r[0]] = (r[1], int(r[2]), int(r[3]))
        return found

    def select(self, sql: str, params: Sequence[SqlParam] = ()) -> list[dict[str, Any]]:
        """Run one read-only ``SELECT`` over the Wazuh tables; rows as dicts by column name.

        Columns that are NULL are left out of the row, as wazuh-db's ``global sql`` leaves
        them out. Only reading is allowed: the statement runs under an SQLite authorizer that
        denies every action but reading, selecting and calling functions, so anything else
        (writes, pragmas, attach, several statements) fails with ``ValueError``.
        """
        names, rows = self.select_tuples(sql, params)
        return [{n: v for n, v in zip(names, row, strict=True) if v is not None}
                for row in rows]

    def select_tuples(self, sql: str, params: Sequence[SqlParam] = ()
                      ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """:meth:`select` without building dicts: the column names and the rows as SQLite
        gives them (NULL columns as None)."""
        if not isinstance(sql, str) or not sql.lstrip()[:6].upper() == "SELECT":
            raise ValueError("only SELECT statements are allowed")
        for value in params:
            if value is not None and not isinstance(value, (str, int, float)):
                raise ValueError(f"unsupported SQL parameter type {type(value).__name__}")
        conn = self._conn
        conn.set_authorizer(_read_only_authorizer)
        try:
            cursor = conn.execute(sql, tuple(params))
            names = [d[0] for d in cursor.description or ()]
            rows = cursor.fetchall()
        except sqlite3.ProgrammingError as exc:
            raise ValueError(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            if "not authorized" in str(exc) or "prohibited" in str(exc):
                raise ValueError(f"statement refused: {exc}") from exc
            raise
        finally:
            conn.set_authorizer(None)
        return names, rows

    def select_page(self, sql: str, params: Sequence[SqlParam],
                    count_sql: str | None, count_params: Sequence[SqlParam],
                    shape: Callable[[list[str], list[tuple[Any, ...]]], _T]
                    ) -> tuple[_T, int]:
        """One page of a listing as one job: the rows of ``sql`` given to ``shape`` as
        ``(column names, tuples)``, and the total of ``count_sql`` (the number of rows when
        it is None), read as :meth:`select` and :meth:`count` read them."""
        names, rows = self.select_tuples(sql, params)
        total = len(rows) if count_sql is None else self.count(count_sql, count_params)
        return shape(names, rows), total

    def generation(self) -> tuple[int, int]:
        """Changes when the data may have changed: rows written through this connection
        (``total_changes``: every INSERT/UPDATE/DELETE that changed a row, committed or
        not, counts) and commits by any other connection (``PRAGMA data_version``)."""
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        return self._conn.total_changes, int(version)

    def count(self, sql: str, params: Sequence[SqlParam] = ()) -> int:
        """The first column of the first row of a read-only ``SELECT COUNT(...)`` (0 when
        there is no row), as :meth:`select` runs it. Answers are remembered per statement
        and parameters until the database changes (:meth:`generation`): paging through a
        search counts it once, not once per page (62 ms for a search over 50 000 agents)."""
        key = (sql, tuple(params))
        generation = self.generation()
        known = self._counts.get(key)
        if known is not None and known[0] == generation:
            return known[1]
        rows = self.select(sql, params)
        total = int(next(iter(rows[0].values()), 0)) if rows else 0
        if len(self._counts) >= COUNT_CACHE_SIZE:
            del self._counts[next(iter(self._counts))]  # the oldest entry
        self._counts[key] = (generation, total)
        return total

    def delete_agents(self, agent_ids: Sequence[int], keys_path: str | None = None,
                      purge: bool = True) -> list[int]:
        """Remove agents (never 000): from ``client.keys`` at ``keys_path`` first (rewritten
        atomically; ``purge=False`` keeps each line marked removed with ``!`` before the name,
        as Wazuh's key store does), then from the database with their labels and group
        memberships, in one transaction.

        :returns: the ids that existed in the database and were deleted, sorted.
        """
        ids = sorted({int(i) for i in agent_ids if int(i) > 0})
        if not ids:
            return []
        if keys_path is not None and os.path.exists(keys_path):
            _rewrite_client_keys(keys_path, set(ids), purge)
        with self._transaction() as conn:
            existing = sorted(self._existing_ids(ids))
            conn.executemany("DELETE FROM agent WHERE id = ?", [(i,) for i in existing])
        return existing

    def delete_groups(self, names: Sequence[str],
                      sync_status: str = "syncreq") -> dict[str, list[int]]:
        """Delete groups, as wazuh-db's ``delete-group``: their members lose them, a member
        left with no group gets ``default``, and every member's ``group``/``group_hash`` is
        recomputed with ``group_sync_status = sync_status``.

        :returns: for each deleted group that existed, the ids of the agents that were in it.
        """
        if sync_status not in ("synced", "syncreq"):
            raise ValueError(f"invalid sync_status {sync_status!r}")
        removed: dict[str, list[int]] = {}
        with self._transaction() as conn:
            for name in dict.fromkeys(names):
                row = conn.execute("SELECT id FROM `group` WHERE name = ?", (name,)).fetchone()
                if row is None:
                    continue
                members = [r[0] for r in conn.execute(
                    "SELECT id_agent FROM belongs WHERE id_group = ? ORDER BY id_agent", (row[0],))]
                conn.execute("DELETE FROM belongs WHERE id_group = ?", (row[0],))
                conn.execute("DELETE FROM `group` WHERE id = ?", (row[0],))
                for agent_id in members:
                    has_any = conn.execute("SELECT 1 FROM belongs WHERE id_agent = ? LIMIT 1",
                                           (agent_id,)).fetchone()
                    if has_any is None and name != "default":
                        default = self._group_ids(conn, ["default"])["default"]
                        conn.execute("INSERT INTO belongs (id_agent, id_group, priority)"
                                     " VALUES (?, ?, 0)", (agent_id, default))
                    self._set_group_context(conn, agent_id, sync_status)
                removed[name] = members
        return removed

    def agent_row(self, agent_id: int) -> dict[str, Any] | None:
        """Every column of one agent, or None (for tests and diagnostics)."""
        cursor = self._conn.execute("SELECT * FROM agent WHERE id = ?", (agent_id,))
        row = cursor.fetchone()
        if row is None:
            return None
        return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}

    def agent_labels(self, agent_id: int) -> dict[str, str]:
        """The labels of one agent."""
        return dict(self._conn.execute(
            "SELECT key, value FROM labels WHERE id = ? ORDER BY key", (agent_id,)).fetchall())


_READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                           getattr(sqlite3, "SQLITE_RECURSIVE", 33)})


def _drop_indexes(conn: sqlite3.Connection, table: str) -> list[str]:
    """Drop the explicit indexes and the triggers of ``table`` (inside the caller's
    transaction); the SQL that creates them again.

    For a bulk insert into an empty table. Partial indexes stay (rows the bulk insert does
    not select cost them nothing, and building one again reads the whole table); triggers go
    (evaluating one per row costs 0.1 s per 200 000 rows) and :func:`_restore_indexes` counts
    the whole bulk change as one change of the global group hash.
    """
    rows = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE type IN"
                        " ('index', 'trigger') AND tbl_name = ? AND sql IS NOT NULL",
                        (table,)).fetchall()
    kept = []
    for kind, name, sql in rows:
        if kind == "index" and " WHERE " in sql.upper():
            continue
        conn.execute(f'DROP {kind.upper()} "{name}"')
        kept.append(sql)
    return kept


def _restore_indexes(conn: sqlite3.Connection, sqls: Sequence[str]) -> None:
    """Create again what :func:`_drop_indexes` dropped; the changes made meanwhile may have
    moved the global group hash (its triggers were gone): counted as one change."""
    for sql in sqls:
        conn.execute(sql)
    if sqls:
        conn.execute("UPDATE cluster_counters SET value = value + 1 WHERE name = 'group_hash'")


def _read_only_authorizer(action: int, arg1: str | None, arg2: str | None,
                          db_name: str | None, trigger: str | None) -> int:
    """SQLite authorizer allowing only reads (used by :meth:`AgentDatabase.select`)."""
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def _rewrite_client_keys(path: str, ids: set[int], purge: bool) -> None:
    """Rewrite ``client.keys`` without (``purge``) or with removed-marked lines for ``ids``."""
    from wazuhcluster.agents.merged import atomic_write

    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", "surrogateescape").splitlines(keepends=True)
    out: list[str] = []
    for line in lines:
        fields = line.split(" ", 3)
        if (len(fields) == 4 and fields[0].isdigit() and int(fields[0]) in ids
                and fields[1][:1] not in ("!", "#")):
            if purge:
                continue
            line = f"{fields[0]} !{fields[1]} {fields[2]} {fields[3]}"
        out.append(line)
    atomic_write(path, "".join(out).encode("utf-8", "surrogateescape"), 0o640)


__all__ = [
    "GROUPS_SET_ERROR",
    "AgentDatabase",
    "AgentInfoBatch",
    "AgentInfoSetResult",
    "AgentSummary",
    "GroupsApplyResult",
    "GroupsChunksTally",
    "GroupsPage",
    "GroupsSetResult",
    "Keepalive",
    "ReconcileResult",
    "SqlParam",
    "database_path",
    "global_group_hash_of",
    "group_hash",
]
