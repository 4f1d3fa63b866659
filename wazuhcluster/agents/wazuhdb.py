"""``WazuhDbAgentDatabase``: the agent database of a real Wazuh manager, through wazuh-db.

Drop-in mode (settings ``agent_db: {backend: wazuh-db, socket: queue/db/wdb}``): wazuhcluster
replaces wazuh-clusterd on an existing Wazuh 4.7 manager, where ``global.db`` belongs to
wazuh-db. Every IAgentDatabase operation becomes wazuh-db ``global`` commands over one
persistent connection to ``queue/db/wdb`` (4-byte little-endian length + text; answers
``ok <payload>``, ``due <payload>`` or ``err <text>``), issued one at a time in call order:

* the cluster's own commands, with the exact texts wazuh-clusterd 4.7.5 sends:
  ``global sync-agent-info-get `` (repeated while the answer is ``due``),
  ``global sync-agent-info-set <json array>``,
  ``global sync-agent-groups-get {"condition": "sync_status", "set_synced": true,
  "get_global_hash": true}`` (and the ``all``/``last_id`` and hash-only forms),
  ``global set-agent-groups {"mode": ..., "sync_status": ..., "data": [...]}``,
  ``global recalculate-agent-group-hashes``;
* other wazuh-db global commands where one exists (``insert-agent``, ``insert-agent-group``,
  ``update-agent-name``, ``delete-agent``);
* ``global sql <SELECT>`` for reads, paged by agent id so that no answer exceeds wazuh-db's
  64 KiB output buffer (a result that does not fit arrives cut; the page is then
  halved), and ``global sql UPDATE`` for the few writes wazuh-db has no command
  for (keepalive fields recorded through the local API, a changed key).

Differences from the embedded database, all inherited from wazuh-db:

* ``sync-agent-info-get`` marks agents synced as it reads them, so
  ``mark_agent_info_synced`` has nothing left to do, and an update that lands during a sync, or
  a sync the master never applies, is not sent again.
* wazuh-db does not report how many rows a command changed: counts of updated/unknown agents are
  computed from reads made just before the write.

Groups are created before they are assigned (wazuh-db refuses unknown groups), and a full
agent-groups dump clears the groups of agents it does not list, as the embedded backend does.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.agents import keys as _keys
from wazuhcluster.agents.db import (
    AgentInfoBatch,
    AgentInfoSetResult,
    AgentSummary,
    GroupsApplyResult,
    GroupsChunksTally,
    GroupsPage,
    GroupsSetResult,
    Keepalive,
    ReconcileResult,
)
from wazuhcluster.agents.payloads import (
    MAX_GROUPS_PER_AGENT,
    PayloadError,
    check_group_name,
    decode_agent_info_rows,
)
from wazuhcluster.agents.schema import AGENT_INFO_COLUMNS, AGENT_INFO_SET_COLUMNS
from wazuhcluster.interfaces import IAgentDatabase
from wazuhcluster.protocol.lenprefix import LengthPrefixDecoder, LengthPrefixError, encode

#: wazuh-db answers at most about 64 KiB; anything far bigger is a broken peer.
MAX_ANSWER = 1024 * 1024
#: Keep each command well under wazuh-db's 64 KiB input buffer.
MAX_COMMAND = 60 * 1024
#: wazuh-db writes at most this many bytes of answer (its OS_MAXSTR buffer); a ``global sql``
#: result that does not fit arrives cut, as invalid JSON.
WDB_OUTPUT_LIMIT = 65536
#: Rows asked per ``global sql`` page (halved when wazuh-db says the answer is too big).
SQL_PAGE = 500
#: Empty agent-groups pages the master drops.
_EMPTY_PAGES = ("[]", '[{"data":[]}]')


class WazuhDbError(sqlite3.OperationalError):
    """wazuh-db answered ``err``, answered nonsense, or could not be reached."""


def sql_literal(value: Any) -> str:
    """An SQL literal for ``global sql`` (which takes no parameters).

    :raises ValueError: for a type that has no safe literal, or text with a NUL byte.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text with a NUL byte")
        return "'" + value.replace("'", "''") + "'"
    raise ValueError(f"no SQL literal for {type(value).__name__}")


class WdbProtocol(Protocol):
    """One connection to wazuh-db: requests answered in order."""

    def __init__(self) -> None:
        self._decoder = LengthPrefixDecoder(MAX_ANSWER)
        self._waiting: list[Deferred[bytes]] = []
        self.lost = False

    def ask(self, command: bytes) -> Deferred[bytes]:
        """Send one command; fire with its raw answer."""
        d: Deferred[bytes] = Deferred()
        if self.lost or self.transport is None:
            d.errback(WazuhDbError("wazuh-db connection is closed"))
            return d
        self._waiting.append(d)  # before writing: a loopback may answer at once
        self.transport.write(encode(command))
        return d

    def dataReceived(self, data: bytes) -> None:
        try:
            answers = self._decoder.feed(data)
        except LengthPrefixError as e:
            self._fail(WazuhDbError(f"wazuh-db answer refused: {e}"))
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        for answer in answers:
            if self._waiting:
                d = self._waiting.pop(0)
                if not d.called:  # a timed-out request is already answered
                    d.callback(answer)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        self._fail(WazuhDbError(f"wazuh-db closed the connection: {reason.getErrorMessage()}"))

    def abort(self) -> None:
        """Drop the connection (after a timeout: later answers would be misattributed)."""
        self.lost = True
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _fail(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:
                d.errback(error)


Connector = Callable[[], Awaitable[WdbProtocol]]


@attrs.frozen
class WdbAnswer:
    """One parsed answer: ``status`` is ``ok`` or ``due`` (``err`` raises)."""

    status: Literal["ok", "due"]
    payload: str


def unix_connector(reactor: Any, path: str) -> Connector:
    """Connect to wazuh-db's socket at ``path`` with a Twisted endpoint."""
    async def connect() -> WdbProtocol:
        protocol = WdbProtocol()
        try:
            await connectProtocol(UNIXClientEndpoint(reactor, path, timeout=5), protocol)
        except (ConnectError, OSError) as e:
            raise WazuhDbError(f"cannot connect to wazuh-db at {path}: {e}") from None
        return protocol
    return connect


@implementer(IAgentDatabase)
class WazuhDbAgentDatabase(Service):
    """IAgentDatabase over wazuh-db.

    :param clock: times the answers.
    :param connect: opens a connection to wazuh-db (``unix_connector``; tests use a loopback).
    :param run: runs blocking callables off the reactor (reading client.keys).
    :param timeout: seconds to wait for one answer.
    """

    _log = Logger()

    def __init__(self, clock: Any, connect: Connector,
                 run: Callable[..., Deferred[Any]], timeout: float = 30.0) -> None:
        self._clock = clock
        self._connect = connect
        self._run = run
        self._timeout = timeout
        self._protocol: WdbProtocol | None = None
        self._lock = DeferredLock()  # one operation at a time, in call order

    def stopService(self) -> None:
        """Close the connection."""
        super().stopService()
        if self._protocol is not None:
            self._protocol.abort()
            self._protocol = None

    # -- the connection -------------------------------------------------------------------
    async def query(self, command: str) -> WdbAnswer:
        """Send one command; ``ok``/``due`` answers returned, ``err`` raised as WazuhDbError."""
        data = command.encode("utf-8")
        if len(data) > MAX_ANSWER:
            raise WazuhDbError("command too long for wazuh-db")
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = self._protocol = await self._connect()
        d = protocol.ask(data)
        d.addTimeout(self._timeout, self._clock, onTimeoutCancel=None)
        try:
            raw = await d
        except DeferredTimeout:
            protocol.abort()
            self._protocol = None
            raise WazuhDbError(f"no answer from wazuh-db within {self._timeout:g} s") from None
        except WazuhDbError:
            self._protocol = None
            raise
        text = raw.decode("utf-8", "replace")
        status, _, payload = text.partition(" ")
        if status in ("ok", "due"):
            return WdbAnswer(status, payload)  # type: ignore[arg-type]
        if status == "err":
            raise WazuhDbError(payload or "wazuh-db error")
        raise WazuhDbError(f"unexpected wazuh-db answer {text[:80]!r}")

    async def query_all(self, command: str) -> list[str]:
        """Repeat ``command`` while wazuh-db answers ``due``; every payload, in order."""
        payloads: list[str] = []
        while True:
            answer = await self.query(command)
            payloads.append(answer.payload)
            if answer.status == "ok":
                return payloads

    async def _sql_rows(self, sql: str) -> list[dict[str, Any]]:
        """One ``global sql`` read (small results only)."""
        return await self._select_once(sql)

    async def select_paged(self, columns: str, where: str = "",
                           page: int = SQL_PAGE) -> list[dict[str, Any]]:
        """Read ``SELECT columns FROM agent`` in pages keyed by id (``columns`` includes id)."""
        rows: list[dict[str, Any]] = []
        after = -1
        condition = f" AND ({where})" if where else ""
        while True:
            sql = (f"SELECT {columns} FROM agent WHERE id > {after}{condition}"
                   f" ORDER BY id LIMIT {page}")
            try:
                batch = await self._sql_rows(sql)
            except WazuhDbError:
                if page <= 1:
                    raise
                page //= 2  # the answer did not fit in wazuh-db's response buffer
                continue
            rows.extend(batch)
            if len(batch) < page:
                return rows
            after = int(batch[-1]["id"])

    def _op(self, f: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Run one operation after the ones before it."""
        async def run() -> Any:
            await self._lock.acquire()
            try:
                return await f(*args, **kwargs)
            finally:
                self._lock.release()
        return Deferred.fromCoroutine(run())

    def idle(self) -> Deferred[None]:
        """Fires once the operations asked for before it have run (one at a time, in order)."""
        async def nothing() -> None:
            return None
        return self._op(nothing)

    async def _known_ids(self, ids: Sequence[int]) -> set[int]:
        known: set[int] = set()
        unique = sorted({int(i) for i in ids})
        for start in range(0, len(unique), SQL_PAGE):
            part = ",".join(str(i) for i in unique[start:start + SQL_PAGE])
            known.update(int(r["id"]) for r in await self._sql_rows(
                f"SELECT id FROM agent WHERE id IN ({part})"))
        return known

    # -- agent-info (worker) --------------------------------------------------------------
    def get_agent_info_sync(self, rows: bool = False) -> Deferred[AgentInfoBatch]:
        """``global sync-agent-info-get `` until ``ok`` (wazuh-db marks the rows synced)."""
        return self._op(self._get_agent_info_sync, rows)

    async def _get_agent_info_sync(self, rows: bool) -> AgentInfoBatch:
        chunks: list[str] = []
        versions: list[tuple[int, int]] = []
        for payload in await self.query_all("global sync-agent-info-get "):
            agents = json.loads(payload) if payload else []
            if not agents:
                continue
            versions.extend((int(a["id"]), 0) for a in agents)
            chunks.append(_rows_chunk(agents) if rows else payload)
        return AgentInfoBatch(tuple(chunks), tuple(versions))

    def mark_agent_info_synced(self, versions: Sequence[tuple[int, int]]) -> Deferred[int]:
        """Nothing to do: wazuh-db marked them when they were read."""
        return self._op(_constant, len(versions))

    def update_agent_info(self, agent_id: int, fields: Mapping[str, Any]) -> Deferred[bool]:
        """``global sql UPDATE`` of agent-info columns, marking the agent ``syncreq``."""
        unknown = set(fields) - set(AGENT_INFO_SET_COLUMNS)
        if unknown:
            raise ValueError(f"not agent-info columns: {sorted(unknown)}")
        return self._op(self._update_agent_info, int(agent_id), dict(fields))

    async def _update_agent_info(self, agent_id: int, fields: dict[str, Any]) -> bool:
        if not fields or agent_id == 0 or not await self._known_ids([agent_id]):
            return False
        assignments = ", ".join(f"{c} = {sql_literal(v)}" for c, v in fields.items())
        await self.query(f"global sql UPDATE agent SET {assignments}, sync_status = 'syncreq'"
                         f" WHERE id = {agent_id}")
        return True

    def record_keepalives(self, keepalives: Sequence[Keepalive]) -> Deferred[int]:
        """Keepalive fields through ``global sql UPDATE`` (remoted does this on a manager)."""
        return self._op(self._record_keepalives, list(keepalives))

    async def _record_keepalives(self, keepalives: list[Keepalive]) -> int:
        known = await self._known_ids([k.agent_id for k in keepalives if k.agent_id > 0])
        updated = 0
        for k in keepalives:
            if k.agent_id not in known:
                continue
            optional = "".join(
                f", {column} = COALESCE({sql_literal(value)}, {column})"
                for column, value in (("os_name", k.os_name), ("os_version", k.os_version),
                                      ("version", k.version)))
            await self.query(
                f"global sql UPDATE agent SET last_keepalive = {int(k.when)},"
                " connection_status = 'active', disconnection_time = 0, status_code = 0,"
                f" node_name = {sql_literal(k.node_name)}{optional},"
                f" sync_status = 'syncreq' WHERE id = {int(k.agent_id)}")
            updated += 1
        return updated

    # -- agent-info (master) --------------------------------------------------------------
    def set_agent_info(self, chunks: Sequence[Any]) -> Deferred[AgentInfoSetResult]:
        """``global sync-agent-info-set <json array>`` per chunk."""
        return self._op(self._set_agent_info, list(chunks))

    async def _set_agent_info(self, chunks: list[Any]) -> AgentInfoSetResult:
        updated_chunks = updated_agents = unknown_agents = 0
        errors: list[str] = []
        for chunk in chunks:
            try:
                agents = _standard_agents(chunk)
            except PayloadError as e:
                errors.append(f"Invalid JSON syntax; {e}")
                continue
            ids = [int(a["id"]) for a in agents]
            known = await self._known_ids([i for i in ids if i > 0])
            text = chunk if isinstance(chunk, str) else _compact(agents)
            try:
                await self.query(f"global sync-agent-info-set {text}")
            except WazuhDbError as e:
                errors.append(str(e))
                continue
            updated_chunks += 1
            updated_agents += sum(1 for i in ids if i in known)
            unknown_agents += sum(1 for i in ids if i not in known)
        return AgentInfoSetResult(updated_chunks, tuple(errors), updated_agents, unknown_agents)

    # -- agent-groups ---------------------------------------------------------------------
    def create_groups(self, names: Sequence[str]) -> Deferred[int]:
        """``global insert-agent-group <name>`` for each missing group."""
        for name in names:
            check_group_name(name)
        return self._op(self._create_groups, list(dict.fromkeys(names)))

    async def _create_groups(self, names: list[str]) -> int:
        existing = set(await self._list_groups())
        created = 0
        for name in names:
            if name not in existing:
                await self.query(f"global insert-agent-group {name}")
                created += 1
        return created

    def list_groups(self) -> Deferred[list[str]]:
        """``global sql SELECT name FROM `group```."""
        return self._op(self._list_groups)

    async def _list_groups(self) -> list[str]:
        names: list[str] = []
        after = ""
        while True:
            batch = await self._sql_rows(
                f"SELECT name FROM `group` WHERE name > {sql_literal(after)} ORDER BY name"
                f" LIMIT {SQL_PAGE}")
            names.extend(str(r["name"]) for r in batch)
            if len(batch) < SQL_PAGE:
                return names
            after = names[-1]

    def set_agent_groups(self, assignments: Sequence[tuple[int, Sequence[str]]],
                         mode: str = "override",
                         sync_status: str = "synced") -> Deferred[GroupsSetResult]:
        """``global set-agent-groups`` (groups created first; unknown agents counted)."""
        if sync_status not in ("synced", "syncreq"):
            raise ValueError(f"invalid sync_status {sync_status!r}")
        if mode not in ("override", "append", "empty_only", "remove"):
            raise ValueError(f"invalid mode {mode!r}")
        return self._op(self._set_agent_groups, list(assignments), mode, sync_status)

    async def _set_agent_groups(self, assignments: list[tuple[int, Sequence[str]]], mode: str,
                                sync_status: str) -> GroupsSetResult:
        known = await self._known_ids([a for a, _ in assignments])
        with_groups: set[int] = set()
        if mode in ("empty_only", "append") and known:
            with_groups = await self._agents_with_groups(sorted(known))
        data: list[dict[str, Any]] = []
        failed: list[int] = []
        unknown = skipped = 0
        for agent_id, groups in assignments:
            if agent_id not in known:
                unknown += 1
                continue
            try:
                names = list(dict.fromkeys(check_group_name(g) for g in groups))
            except PayloadError:
                failed.append(agent_id)
                continue
            if len(names) > MAX_GROUPS_PER_AGENT:
                failed.append(agent_id)
                continue
            if mode == "empty_only" and agent_id in with_groups:
                skipped += 1
                continue
            data.append({"id": agent_id, "groups": names})
        await self._create_groups(list(dict.fromkeys(g for d in data for g in d["groups"])))
        for batch in _batches(data):
            command = json.dumps({"mode": mode, "sync_status": sync_status, "data": batch})
            try:
                await self.query(f"global set-agent-groups {command}")
            except WazuhDbError:
                failed.extend(d["id"] for d in batch)
        done = len(data) - sum(1 for d in data if d["id"] in set(failed))
        return GroupsSetResult(done, unknown, tuple(failed), skipped)

    async def _agents_with_groups(self, ids: list[int]) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(ids), SQL_PAGE):
            part = ",".join(str(i) for i in ids[start:start + SQL_PAGE])
            found.update(int(r["id_agent"]) for r in await self._sql_rows(
                f"SELECT DISTINCT id_agent FROM belongs WHERE id_agent IN ({part})"))
        return found

    def apply_agent_groups_chunks(self, chunks: Sequence[str], mode: str = "override",
                                  sync_status: str = "synced",
                                  full: bool = False) -> Deferred[GroupsApplyResult]:
        """Worker: apply ``syn_g_m_w`` / ``syn_g_m_w_c`` chunks with ``set-agent-groups``."""
        return self._op(self._apply_chunks, list(chunks), mode, sync_status, full)

    async def _apply_chunks(self, chunks: list[str], mode: str, sync_status: str,
                            full: bool) -> GroupsApplyResult:
        tally = GroupsChunksTally()
        for assignments in tally.decode(chunks):
            tally.record(await self._set_agent_groups(list(assignments), mode, sync_status))
        listed = tally.listed
        cleared = 0
        if full:
            if tally.complete:
                stale = [int(r["id"]) for r in await self.select_paged(
                    "id", "id > 0 AND (`group` IS NOT NULL OR group_hash IS NOT NULL"
                          " OR id IN (SELECT id_agent FROM belongs))")
                         if int(r["id"]) not in listed]
                for batch in _batches([{"id": i, "groups": []} for i in stale]):
                    command = json.dumps({"mode": "override", "sync_status": "synced",
                                          "data": batch})
                    await self.query(f"global set-agent-groups {command}")
                cleared = len(stale)
            await self._recalculate()
        return tally.result(cleared)

    def sync_agent_groups_get(self, condition: str | None, now: int, last_id: int = 0,
                              set_synced: bool = False, get_global_hash: bool = False,
                              registration_delta: int = 0) -> Deferred[GroupsPage]:
        """One ``global sync-agent-groups-get`` answer (wazuh-db uses its own clock, not
        ``now``, for the registration delta)."""
        return self._op(self._groups_get, condition, last_id, set_synced, get_global_hash,
                        registration_delta)

    async def _groups_get(self, condition: str | None, last_id: int, set_synced: bool,
                          get_global_hash: bool, registration_delta: int) -> GroupsPage:
        answer = await self.query(groups_get_command(condition, last_id, set_synced,
                                                     get_global_hash, registration_delta))
        page_last = last_id
        try:
            parsed = json.loads(answer.payload) if answer.payload else []
            if parsed and isinstance(parsed[0], dict) and parsed[0].get("data"):
                page_last = int(parsed[0]["data"][-1]["id"])
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise WazuhDbError(f"invalid sync-agent-groups-get answer: {e}") from None
        return GroupsPage(answer.status, answer.payload, page_last)

    def get_agent_groups_chunks(self, condition: str, now: int, set_synced: bool = False,
                                get_global_hash: bool = False,
                                registration_delta: int = 0) -> Deferred[list[str]]:
        """Every non-empty page of ``sync-agent-groups-get``, paged by ``last_id``."""
        return self._op(self._groups_chunks, condition, set_synced, get_global_hash,
                        registration_delta)

    async def _groups_chunks(self, condition: str, set_synced: bool, get_global_hash: bool,
                             registration_delta: int) -> list[str]:
        chunks: list[str] = []
        last_id = 0
        while True:
            page = await self._groups_get(condition, last_id, set_synced, get_global_hash,
                                          registration_delta)
            if page.payload not in _EMPTY_PAGES:
                chunks.append(page.payload)
            if page.status == "ok":
                return chunks
            if page.last_id == last_id:
                raise WazuhDbError("sync-agent-groups-get made no progress")
            last_id = page.last_id

    def global_group_hash(self) -> Deferred[str | None]:
        """``global sync-agent-groups-get {"get_global_hash": true}``."""
        return self._op(self._global_hash)

    async def _global_hash(self) -> str | None:
        answer = await self.query(groups_get_command(None, 0, False, True, 0))
        try:
            value = json.loads(answer.payload)[0].get("hash")
        except (ValueError, TypeError, IndexError, AttributeError) as e:
            raise WazuhDbError(f"invalid sync-agent-groups-get answer: {e}") from None
        return str(value) if value else None

    def recalculate_group_hashes(self) -> Deferred[int]:
        """``global recalculate-agent-group-hashes``; fires with how many agents changed."""
        return self._op(self._recalculate)

    async def _recalculate(self) -> int:
        columns = "id, `group`, group_hash"
        before = {r["id"]: (r.get("group"), r.get("group_hash"))
                  for r in await self.select_paged(columns, "id > 0")}
        await self.query("global recalculate-agent-group-hashes")
        after = await self.select_paged(columns, "id > 0")
        return sum(1 for r in after
                   if before.get(r["id"]) != (r.get("group"), r.get("group_hash")))

    # -- client.keys ----------------------------------------------------------------------
    def reconcile_keys(self, entries: Sequence[_keys.KeyEntry],
                       now: int) -> Deferred[ReconcileResult]:
        """Make wazuh-db's agents agree with client.keys (``insert-agent``,
        ``update-agent-name``, ``delete-agent``); on a manager where authd and wazuh-db
        already keep them in step, nothing is left to do."""
        return self._op(self._reconcile, list(entries), int(now))

    async def _reconcile(self, entries: list[_keys.KeyEntry], now: int) -> ReconcileResult:
        stored = {int(r["id"]): _keys.StoredAgent(str(r.get("name", "")), r.get("register_ip"),
                                                  r.get("internal_key"))
                  for r in await self.select_paged("id, name, register_ip, internal_key",
                                                   "id > 0")}
        plan = _keys.plan_reconcile(stored, entries)
        for e in plan.insert:
            agent = {"id": e.agent_id, "name": e.name, "register_ip": _keys.register_ip(e.ip),
                     "internal_key": e.key, "date_add": now}
            await self.query(f"global insert-agent {json.dumps(agent)}")
        for e in plan.update:
            old = stored[e.agent_id]
            if old.name != e.name:
                await self.query("global update-agent-name "
                                 + json.dumps({"id": e.agent_id, "name": e.name}))
            if (old.register_ip, old.internal_key) != (_keys.register_ip(e.ip), e.key):
                await self.query(
                    f"global sql UPDATE agent SET register_ip ="
                    f" {sql_literal(_keys.register_ip(e.ip))}, internal_key ="
                    f" {sql_literal(e.key)} WHERE id = {int(e.agent_id)}")
        for agent_id in plan.remove:
            await self.query(f"global delete-agent {int(agent_id)}")
        return ReconcileResult(len(plan.insert), len(plan.update), len(plan.remove))

    def reconcile_keys_file(self, path: str, now: int) -> Deferred[ReconcileResult]:
        """Read client.keys off the reactor, then reconcile (a missing file changes nothing)."""
        async def run() -> ReconcileResult:
            entries = await self._run(_read_keys_if_present, path)
            if entries is None:
                return ReconcileResult(0, 0, 0)
            result: ReconcileResult = await self.reconcile_keys(entries, now)
            return result
        return Deferred.fromCoroutine(run())

    # -- queries --------------------------------------------------------------------------
    def list_agents(self, node_name: str | None = None) -> Deferred[list[AgentSummary]]:
        """Agents for the CLI (``global sql``, paged)."""
        return self._op(self._list_agents, node_name)

    async def _list_agents(self, node_name: str | None) -> list[AgentSummary]:
        where = f"node_name = {sql_literal(node_name)}" if node_name is not None else ""
        rows = await self.select_paged(
            "id, name, ip, connection_status, node_name, last_keepalive, version, `group`",
            where)
        return [AgentSummary(int(r["id"]), str(r.get("name", "")), r.get("ip"),
                             str(r.get("connection_status", "never_connected")),
                             r.get("node_name"), r.get("last_keepalive"), r.get("version"),
                             tuple(r["group"].split(",")) if r.get("group") else ())
                for r in rows]

    def count_active_agents_by_node(self) -> Deferred[dict[str, int]]:
        """Active agents per node, agent 000 excluded."""
        return self._op(self._count_active)

    async def _count_active(self) -> dict[str, int]:
        rows = await self._sql_rows(
            "SELECT node_name, COUNT(*) AS n FROM agent WHERE id > 0 AND"
            " connection_status = 'active' GROUP BY node_name")
        return {(r["node_name"] if r.get("node_name") is not None else "unknown"): int(r["n"])
                for r in rows}


    # -- enrolment ------------------------------------------------------------------------
    def registration_status(self, ids: Sequence[int]) -> Deferred[dict[int, tuple[str, int, int]]]:
        """``(connection_status, disconnection_time, date_add)`` of the listed agents
        (``global sql``, paged)."""
        return self._op(self._registration_status, sorted({int(i) for i in ids if int(i) > 0}))

    async def _registration_status(self, ids: list[int]) -> dict[int, tuple[str, int, int]]:
        found: dict[int, tuple[str, int, int]] = {}
        for start in range(0, len(ids), SQL_PAGE):
            part = ",".join(str(i) for i in ids[start:start + SQL_PAGE])
            for r in await self._sql_rows(
                    "SELECT id, connection_status, disconnection_time, date_add FROM agent"
                    f" WHERE id IN ({part})"):
                found[int(r["id"])] = (str(r.get("connection_status", "never_connected")),
                                       int(r.get("disconnection_time") or 0),
                                       int(r.get("date_add") or 0))
        return found

    def apply_key_changes(self, entries: Sequence[_keys.KeyEntry], removed: Sequence[int],
                          now: int) -> Deferred[ReconcileResult]:
        """The given agents only: ``insert-agent`` for new ones, name/IP/key updates for
        changed ones, ``delete-agent`` for ``removed`` (never 000)."""
        return self._op(self._apply_key_changes, [e for e in entries if e.agent_id > 0],
                        sorted({int(i) for i in removed if int(i) > 0}), int(now))

    async def _apply_key_changes(self, entries: list[_keys.KeyEntry], removed: list[int],
                                 now: int) -> ReconcileResult:
        ids = sorted({e.agent_id for e in entries})
        stored: dict[int, _keys.StoredAgent] = {}
        for start in range(0, len(ids), SQL_PAGE):
            part = ",".join(str(i) for i in ids[start:start + SQL_PAGE])
            for r in await self._sql_rows(
                    "SELECT id, name, register_ip, internal_key FROM agent"
                    f" WHERE id IN ({part})"):
                stored[int(r["id"])] = _keys.StoredAgent(str(r.get("name", "")),
                                                         r.get("register_ip"),
                                                         r.get("internal_key"))
        inserted = updated = 0
        for e in entries:
            old = stored.get(e.agent_id)
            if old is None:
                agent = {"id": e.agent_id, "name": e.name,
                         "register_ip": _keys.register_ip(e.ip), "internal_key": e.key,
                         "date_add": now}
                await self.query(f"global insert-agent {json.dumps(agent)}")
                inserted += 1
                continue
            if (old.name, old.register_ip, old.internal_key) == (
                    e.name, _keys.register_ip(e.ip), e.key):
                continue
            if old.name != e.name:
                await self.query("global update-agent-name "
                                 + json.dumps({"id": e.agent_id, "name": e.name}))
            await self.query(
                f"global sql UPDATE agent SET register_ip ="
                f" {sql_literal(_keys.register_ip(e.ip))}, internal_key ="
                f" {sql_literal(e.key)} WHERE id = {int(e.agent_id)}")
            updated += 1
        existing = sorted(await self._known_ids(removed)) if removed else []
        for agent_id in existing:
            await self.query(f"global delete-agent {agent_id}")
        return ReconcileResult(inserted, updated, len(existing))

    # -- DAPI operations ------------------------------------------------------------------
    def select(self, sql: str, params: Sequence[str | int | float | None] = ()
               ) -> Deferred[list[dict[str, Any]]]:
        """One read-only SELECT through ``global sql`` (parameters bound as literals, since
        wazuh-db takes none); an answer too big for wazuh-db is read again in pages."""
        text = bind_select(sql, params)
        return self._op(self._select_any, text)

    def count(self, sql: str, params: Sequence[str | int | float | None] = ()
              ) -> Deferred[int]:
        """The first column of the first row of a ``SELECT COUNT(...)`` (0 without a row).
        Not remembered: wazuh-db's database is written by other daemons too, so there is no
        generation here to key a cache on."""
        return Deferred.fromCoroutine(self._count(sql, params))

    async def _count(self, sql: str, params: Sequence[str | int | float | None]) -> int:
        rows = await self.select(sql, params)
        return int(next(iter(rows[0].values()), 0)) if rows else 0

    async def _select_any(self, sql: str) -> list[dict[str, Any]]:
        try:
            return await self._select_once(sql)
        except WazuhDbError as e:
            if not _too_big(e):
                raise
        rows: list[dict[str, Any]] = []
        page, offset = SQL_PAGE, 0
        while True:
            try:
                batch = await self._select_once(
                    f"SELECT * FROM ({sql}) LIMIT {page} OFFSET {offset}")
            except WazuhDbError as e:
                if page <= 1 or not _too_big(e):
                    raise
                page //= 2
                continue
            rows.extend(batch)
            offset += len(batch)
            if len(batch) < page:
                return rows

    async def _select_once(self, sql: str) -> list[dict[str, Any]]:
        answer = await self.query(f"global sql {sql}")
        if len(answer.payload) + 3 >= WDB_OUTPUT_LIMIT:
            try:
                return _rows(answer.payload)
            except WazuhDbError:  # wazuh-db cuts its output at 64 KiB: cut JSON
                raise WazuhDbError("global sql answer too big (cut by wazuh-db)") from None
        return _rows(answer.payload)

    def delete_agents(self, agent_ids: Sequence[int], keys_path: str | None = None,
                      purge: bool = True) -> Deferred[list[int]]:
        """client.keys first (rewritten off the reactor), then ``global delete-agent <id>``."""
        ids = sorted({int(i) for i in agent_ids if int(i) > 0})
        return self._op(self._delete_agents, ids, keys_path, purge)

    async def _delete_agents(self, ids: list[int], keys_path: str | None,
                             purge: bool) -> list[int]:
        if not ids:
            return []
        if keys_path is not None:
            await self._run(_rewrite_keys_if_present, keys_path, set(ids), purge)
        existing = sorted(await self._known_ids(ids))
        for agent_id in existing:
            await self.query(f"global delete-agent {agent_id}")
        return existing

    def delete_groups(self, names: Sequence[str], sync_status: str = "syncreq"
                      ) -> Deferred[dict[str, list[int]]]:
        """``global delete-group <name>`` for each existing group; fires with its members."""
        if sync_status not in ("synced", "syncreq"):
            raise ValueError(f"invalid sync_status {sync_status!r}")
        for name in names:
            check_group_name(name)
        return self._op(self._delete_groups, list(dict.fromkeys(names)), sync_status)

    async def _delete_groups(self, names: list[str],
                             sync_status: str) -> dict[str, list[int]]:
        existing = set(await self._list_groups())
        removed: dict[str, list[int]] = {}
        for name in names:
            if name not in existing:
                continue
            members = sorted(int(r["id_agent"]) for r in await self._select_any(
                "SELECT b.id_agent FROM belongs b JOIN `group` g ON g.id = b.id_group"
                f" WHERE g.name = {sql_literal(name)}"))
            await self.query(f"global delete-group {name}")
            if members:
                part = ",".join(map(str, members))
                await self.query(f"global sql UPDATE agent SET group_sync_status ="
                                 f" {sql_literal(sync_status)} WHERE id IN ({part})")
            removed[name] = members
        return removed


# -- helpers -------------------------------------------------------------------------------
async def _constant(value: Any) -> Any:
    return value


def groups_get_command(condition: str | None, last_id: int, set_synced: bool,
                       get_global_hash: bool, registration_delta: int) -> str:
    """The ``sync-agent-groups-get`` text, spelled as wazuh-clusterd 4.7.5 spells it."""
    args: dict[str, Any] = {}
    if condition is not None:
        args["condition"] = condition
        args["set_synced"] = set_synced
    args["get_global_hash"] = get_global_hash
    if condition == "all" or last_id:
        args["last_id"] = last_id
    if registration_delta:
        args["agent_registration_delta"] = registration_delta
    return f"global sync-agent-groups-get {json.dumps(args)}"


def _rows(payload: str) -> list[dict[str, Any]]:
    try:
        rows = json.loads(payload) if payload else []
    except ValueError as e:
        raise WazuhDbError(f"invalid global sql answer: {e}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise WazuhDbError("invalid global sql answer: not a list of rows")
    return rows


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _standard_agents(chunk: Any) -> list[dict[str, Any]]:
    """The agents of a standard chunk (text) or a compact rows chunk (parsed), as objects."""
    if isinstance(chunk, str):
        try:
            agents = json.loads(chunk)
        except ValueError as e:
            raise PayloadError(str(e)) from None
        if not isinstance(agents, list) or not all(
                isinstance(a, dict) and isinstance(a.get("id"), int) for a in agents):
            raise PayloadError("an agent-info chunk must be an array of agents with ids")
        return agents
    rows, labels = decode_agent_info_rows(chunk)
    by_id = dict(labels)
    out = []
    for row in rows:
        agent = {c: v for c, v in zip(AGENT_INFO_COLUMNS, row, strict=True) if v is not None}
        if agent["id"] in by_id:
            agent["labels"] = [{"id": agent["id"], "key": k, "value": v}
                               for k, v in by_id[agent["id"]]]
        out.append(agent)
    return out


def _rows_chunk(agents: list[dict[str, Any]]) -> str:
    """A standard chunk's agents in the compact rows form between our nodes."""
    rows = [[a.get(c) for c in AGENT_INFO_COLUMNS] for a in agents]
    labels = [[a["id"], [[lb["key"], lb["value"]] for lb in a["labels"]]]
              for a in agents if a.get("labels")]
    return _compact({"rows": rows, "labels": labels})


def _batches(data: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split set-agent-groups data so that each command stays under MAX_COMMAND."""
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for item in data:
        length = len(json.dumps(item)) + 2
        if current and size + length > MAX_COMMAND:
            batches.append(current)
            current, size = [], 0
        current.append(item)
        size += length
    if current:
        batches.append(current)
    return batches


def _read_keys_if_present(path: str) -> list[_keys.KeyEntry] | None:
    import os

    if not os.path.exists(path):
        return None
    return _keys.read_client_keys(path)


def _too_big(error: WazuhDbError) -> bool:
    """wazuh-db refused an answer that does not fit its response buffer."""
    text = str(error).lower()
    return "too big" in text or "too long" in text


def _rewrite_keys_if_present(path: str, ids: set[int], purge: bool) -> None:
    import os

    from wazuhcluster.agents.db import _rewrite_client_keys

    if os.path.exists(path):
        _rewrite_client_keys(path, ids, purge)


def bind_select(sql: str, params: Sequence[str | int | float | None]) -> str:
    """``sql`` with its ``?`` parameters replaced by SQL literals, for ``global sql``.

    :raises ValueError: not a single SELECT statement, a parameter count that does not match,
        or a parameter without a safe literal.
    """
    if not isinstance(sql, str) or sql.lstrip()[:6].upper() != "SELECT":
        raise ValueError("only SELECT statements are allowed")
    values = list(params)
    out: list[str] = []
    quote: str | None = None
    used = 0
    closing = {"'": "'", '"': '"', "`": "`", "[": "]"}
    for i, ch in enumerate(sql):
        if quote is not None:
            out.append(ch)
            if ch == closing[quote]:
                quote = None
            continue
        if ch in closing:
            quote = ch
            out.append(ch)
        elif ch == "?":
            if used >= len(values):
                raise ValueError("more ? placeholders than parameters")
            out.append(_param_literal(values[used]))
            used += 1
        elif ch == ";":
            if sql[i + 1:].strip():
                raise ValueError("only one statement is allowed")
        elif ch == "\x00":
            raise ValueError("NUL byte in statement")
        else:
            out.append(ch)
    if quote is not None:
        raise ValueError("unterminated quoted text")
    if used != len(values):
        raise ValueError("more parameters than ? placeholders")
    return "".join(out).strip()


def _param_literal(value: Any) -> str:
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("no SQL literal for a non-finite number")
        return repr(value)
    return sql_literal(value)
