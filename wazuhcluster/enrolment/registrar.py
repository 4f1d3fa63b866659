"""The master's registrar: the only writer of ``etc/client.keys`` for enrolments and removals.

Operations queue up and are applied in batches: one batch reads the file once, applies every
waiting operation in arrival order (:func:`~wazuhcluster.enrolment.keystore.plan_batch`),
replaces the file once, atomically, then updates the agent database (rows from the keys, then
the new agents' groups, marked for the agent-groups push). Batches never overlap, so any number
of concurrent enrolments get distinct ids and a consistent file; under load a batch carries many
enrolments, which is what makes the rate high.

The file change is seen by the integrity watcher (pushed to every worker) and by the client.keys
watcher (database reconciliation; harmless repetition of what the batch already did).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from wazuhcluster.agents.keys import KeyEntry
from wazuhcluster.enrolment.authconfig import AuthConfig
from wazuhcluster.enrolment.keystore import (
    ERR_INVALID_GROUP,
    AddOp,
    AgentStatus,
    KeyIndex,
    KeyLine,
    Outcome,
    RemoveOp,
    conflicts,
    plan_batch,
    read_keys,
    write_keys,
)
from wazuhcluster.enrolment.messages import MAX_GROUPS_PER_MULTIGROUP
from wazuhcluster.interfaces import IAgentDatabase, IBlockingRunner

#: Most operations one batch applies.
MAX_BATCH = 1000


def keys_path(home: str) -> str:
    """``etc/client.keys`` of ``home``."""
    return os.path.join(home, "etc", "client.keys")


_Signature = tuple[int, int, int] | None


def _signature(path: str) -> _Signature:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _prepare(path: str, shared: str, groups: Sequence[str], known: _Signature
             ) -> tuple[KeyIndex | None, _Signature, set[str]]:
    """Blocking: the indexed keys (None when the file is still the one last read or
    written), the file's signature, and which of ``groups`` have no directory in etc/shared."""
    missing = {g for g in groups
               if g in (".", "..") or not os.path.isdir(os.path.join(shared, g))}
    signature = _signature(path)
    if signature is not None and signature == known:
        return None, signature, missing
    return KeyIndex(read_keys(path)), signature, missing


def _write(path: str, keys: KeyIndex) -> _Signature:
    write_keys(path, keys.result())
    return _signature(path)


@attrs.define
class _Pending:
    op: AddOp | RemoveOp
    done: Deferred[Outcome]


class Registrar:
    """Applies enrolments and removals to client.keys and the agent database.

    :param home: the node's home.
    :param auth: the ``<auth>`` configuration (force rules, purge).
    :param runner: runs file work off the reactor.
    :param db: the agent database (None: keys only, for tests of the file rules).
    :param clock: ``now`` for the database and the replacement rules.
    :param tag: the log tag, e.g. ``Master``.
    :param watcher: the node's client.keys watcher (``hold``/``release``), told about our
        writes so that it does not reconcile the whole database after each of them.
    """

    _log = Logger()

    def __init__(self, home: str, auth: AuthConfig, runner: IBlockingRunner,
                 db: IAgentDatabase | None, clock: IReactorTime, tag: str = "Master",
                 manager_name: str | None = None, watcher: Any = None) -> None:
        self.path = keys_path(home)
        self._shared = os.path.join(home, "etc", "shared")
        self._auth = auth
        self._runner = runner
        self._db = db
        self._clock = clock
        self._tag = tag
        self._manager_name = manager_name if manager_name is not None else socket.gethostname()
        self._queue: list[_Pending] = []
        self._keys = KeyIndex([])  # client.keys as last read or written
        self._known: _Signature = None
        self._watcher = watcher
        self._running = False
        self._held = 0
        self.batches = 0
        self.added = 0

    def add(self, op: AddOp) -> Deferred[Outcome]:
        """Queue an enrolment; fires with its outcome."""
        return self._submit(op)

    def remove(self, agent_id: int, purge: bool | None = None) -> Deferred[Outcome]:
        """Queue a removal (``purge`` None: as ``<purge>`` says); fires with its outcome."""
        return self._submit(RemoveOp(agent_id, self._auth.purge if purge is None else purge))

    async def get(self, agent_id: int) -> KeyLine | None:
        """The active agent ``agent_id`` of client.keys, or None."""
        lines: list[KeyLine] = await self._runner.run(read_keys, self.path)
        return next((ln for ln in lines if ln.agent_id == agent_id and not ln.removed), None)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Operations submitted inside wait for the end of the block, then start one batch
        together (a worker's batch of enrolments is one client.keys rewrite, not two: the
        first submission would otherwise start a batch of its own)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            self._start()

    def _submit(self, op: AddOp | RemoveOp) -> Deferred[Outcome]:
        done: Deferred[Outcome] = Deferred()
        self._queue.append(_Pending(op, done))
        self._start()
        return done

    def _start(self) -> None:
        if not self._running and not self._held and self._queue:
            self._running = True
            Deferred.fromCoroutine(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    outcomes = await self._apply([p.op for p in batch])
                except Exception as e:  # noqa: BLE001 - every waiter gets an answer
                    self._log.failure("[{tag}] [Agent enrolment] Could not update {path}",
                                      tag=self._tag, path=self.path)
                    outcomes = [Outcome(code=9001, message="Internal error",
                                        agent_error=f"Internal manager error adding agent: "
                                                    f"{getattr(p.op, 'name', '')}",
                                        log=str(e)) for p in batch]
                for pending, outcome in zip(batch, outcomes, strict=True):
                    pending.done.callback(outcome)
        finally:
            self._running = False

    async def _apply(self, ops: list[AddOp | RemoveOp]) -> list[Outcome]:
        adds = [op for op in ops if isinstance(op, AddOp)]
        wanted = sorted({g for op in adds for g in (op.groups or ())})
        fresh, self._known, missing = await self._runner.run(
            _prepare, self.path, self._shared, wanted, self._known)
        if fresh is not None:  # changed by someone else (an operator, a tool) or first read
            self._keys = fresh
        lines = self._keys
        now = int(self._clock.seconds())
        refused: dict[int, Outcome] = {}
        for index, op in enumerate(ops):
            if isinstance(op, AddOp) and op.groups:
                refusal = _check_groups(op.groups, missing)
                if refusal is not None:
                    refused[index] = refusal
        valid = [op for i, op in enumerate(ops) if i not in refused]
        statuses: dict[int, AgentStatus] = {}
        ids = conflicts(lines, [op for op in valid if isinstance(op, AddOp)])
        if ids and self._db is not None:
            found = await self._db.registration_status(sorted(ids))
            statuses = {i: AgentStatus(*v) for i, v in found.items()}
        result = plan_batch(lines, valid, statuses=statuses, default_force=self._auth.force,
                            purge=self._auth.purge, manager_name=self._manager_name, now=now)
        self.batches += 1
        planned = iter(result.outcomes)
        outcomes = [refused[i] if i in refused else next(planned) for i in range(len(ops))]
        new = [(op, out) for op, out in zip(ops, outcomes, strict=True)
               if isinstance(op, AddOp) and out.line is not None and not out.replayed]
        self.added += len(new)
        if not result.changed:
            self._report(ops, outcomes)
            return outcomes
        if self._watcher is not None:
            self._watcher.hold()
        written: _Signature = None
        try:
            self._known = None  # if the write fails, read the file again next time
            self._known = await self._runner.run(_write, self.path, result.keys)
            if self._db is not None:
                gone = {i for out in outcomes for i in out.replaced}
                gone |= {out.line.agent_id for op, out in zip(ops, outcomes, strict=True)
                         if isinstance(op, RemoveOp) and out.line is not None}
                if await self._update_db(new, sorted(gone), now):
                    written = self._known
        finally:
            if self._watcher is not None:
                self._watcher.release(written)
        self._report(ops, outcomes)
        return outcomes

    async def _update_db(self, new: Sequence[tuple[AddOp, Outcome]], gone: Sequence[int],
                         now: int) -> bool:
        """Apply the batch to the database; False when that failed."""
        assert self._db is not None
        with self._log.failuresHandled("[{tag}] [Agent enrolment] Could not update the agent "
                                       "database (the client.keys watcher retries)",
                                       tag=self._tag):
            entries = [KeyEntry(out.line.agent_id, out.line.name, out.line.ip, out.line.key)
                       for _, out in new if out.line is not None]
            await self._db.apply_key_changes(entries, gone, now)
            assignments = [(out.line.agent_id, list(op.groups or ("default",)))
                           for op, out in new if out.line is not None]
            if assignments:
                await self._db.set_agent_groups(assignments, "override", "syncreq")
            return True
        return False

    def _report(self, ops: Sequence[AddOp | RemoveOp], outcomes: Sequence[Outcome]) -> None:
        for op, out in zip(ops, outcomes, strict=True):
            if isinstance(op, RemoveOp):
                if out.line is not None:
                    self._log.info("[{tag}] [Agent enrolment] Agent '{id}' ({name}) deleted.",
                                   tag=self._tag, id=out.line.id_text, name=out.line.name)
                continue
            if out.line is None:
                self._log.warn("[{tag}] [Agent enrolment] Enrolment of '{name}' refused: "
                               "{error}. {why}", tag=self._tag, name=op.name,
                               error=out.agent_error or out.message, why=out.log)
            elif out.replayed:
                self._log.info("[{tag}] [Agent enrolment] Agent '{name}' (id '{id}') already "
                               "enrolled with this key: answered again.", tag=self._tag,
                               name=op.name, id=out.line.id_text)
            else:
                if out.log:
                    self._log.info("[{tag}] [Agent enrolment] {why}", tag=self._tag,
                                   why=out.log)
                self._log.info("[{tag}] [Agent enrolment] Agent key generated for '{name}' "
                               "(id '{id}').", tag=self._tag, name=op.name,
                               id=out.line.id_text)


def _check_groups(groups: Sequence[str], missing: set[str]) -> Outcome | None:
    """authd's group check, in its order: the count limit, then each group's directory."""
    for position, group in enumerate(groups, start=1):
        if position > MAX_GROUPS_PER_MULTIGROUP:
            return Outcome(code=ERR_INVALID_GROUP[0], message=ERR_INVALID_GROUP[1],
                           agent_error=f"Maximum multigroup reached: Limit is "
                                       f"{MAX_GROUPS_PER_MULTIGROUP}")
        if group in missing:
            return Outcome(code=ERR_INVALID_GROUP[0], message=ERR_INVALID_GROUP[1],
                           agent_error=f"Invalid group: {group}")
    return None


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """authd's local-protocol answer for an add outcome."""
    if outcome.line is None:
        return {"error": outcome.code, "message": outcome.message}
    line = outcome.line
    return {"error": 0, "data": {"id": line.id_text, "name": line.name, "ip": line.ip,
                                 "key": line.key}}
