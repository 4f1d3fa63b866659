"""Agents on the master: agent-info reception, agent-groups push, merged.mg, health.

Wire behaviour follows Wazuh 4.7.5 (docs/protocol.md):

* ``syn_a_w_m_p`` answers ``True`` while the worker's agent-info lock is free; ``syn_a_w_m
  <string id>`` takes the lock, answers ``ok <id>`` at once, and the chunks are written on the
  agent-database thread; the outcome goes back as a new request, ``syn_m_a_e`` (JSON counters)
  or ``syn_m_a_err`` (text). The lock is released when that is done, and forcibly when it has
  been held longer than ``timeout_agent_info`` plus the request timeout.
* "Local agent-groups" reads the assignments changed since its last run (and the global group
  hash) every ``sync_agent_groups`` seconds after ``agent_group_start_delay``; "Agent-groups
  send" pushes them (``syn_g_m_w``) to every connected worker, one job queue per worker so
  pushes reach a worker in the order they were read. ``syn_w_g_c`` queues a full dump
  (``syn_g_m_w_c``), at most one at a time per worker and rate-limited.
* ``merged.mg`` files of groups whose files or membership changed are rewritten off the
  reactor.

wazuhcluster extensions: ``wzc_ag_mlst`` (the master's agent list, for ``wazuhcluster-control
-a`` on a worker) is served to workers; our master announces it as the ``agents`` capability.
It also announces ``agent-info-rows``: our workers then send agent-info in the compact rows form
(``wazuhcluster.agents.payloads``), which the master accepts besides the 4.7.5 form.
"""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.agents import merged as _merged
from wazuhcluster.agents.keyswatch import ClientKeysWatcher
from wazuhcluster.agents.listing import (
    AGENTS_CAPABILITY,
    WZC_AG_MLST,
    agents_json,
    master_listing,
    parse_list_request,
)
from wazuhcluster.agents.payloads import (
    AGENT_INFO_ROWS_CAPABILITY,
    AGENT_INFO_ZLIB_CAPABILITY,
    PayloadError,
    SyncResult,
    decode_agent_info_string,
    decode_sync_result,
    encode_groups_chunk,
    encode_groups_string,
    encode_sync_result,
)
from wazuhcluster.errors import ClusterError
from wazuhcluster.interfaces import IAgentDatabase, IMasterExtension
from wazuhcluster.logsafe import peer_text
from wazuhcluster.master.registry import WorkerSession
from wazuhcluster.periodic import periodic
from wazuhcluster.protocol.commands import (
    SYN_A_W_M,
    SYN_A_W_M_P,
    SYN_G_M_W,
    SYN_G_M_W_C,
    SYN_M_A_E,
    SYN_M_A_ERR,
    SYN_W_G_C,
    SYN_W_G_E,
    SYN_W_G_ERR,
    SYN_WGC_E,
    SYN_WGC_ERR,
    Reply,
)
from wazuhcluster.protocol.transfers import send_string

if TYPE_CHECKING:
    from wazuhcluster.master.commands import MasterCommands
    from wazuhcluster.master.node import MasterNode

Responder = Callable[[bytes], Coroutine[Any, Any, Reply | None]]
Job = Callable[[], Coroutine[Any, Any, None]]

#: A worker may not get two full agent-groups dumps closer than this (seconds).
FULL_PUSH_MIN_INTERVAL = 10.0
#: At most this many agent-groups pushes wait for one worker; older ones are dropped (the
#: worker's checksum comparison repairs what a dropped push carried).
MAX_QUEUED_PUSHES = 16
#: Seconds between two checks of etc/shared for merged.mg.
MERGED_CHECK_INTERVAL = 2.0


def _info_status() -> dict[str, Any]:
    return {"date_start_master": 0.0, "date_end_master": 0.0, "n_synced_chunks": 0}


def _groups_status() -> dict[str, Any]:
    return {"date_start": 0.0, "date_end": 0.0, "n_synced_chunks": 0}


class _Shared:
    """One result (or failure) handed to every follower, early or late."""

    def __init__(self, source: Deferred[Any]) -> None:
        self._done = False
        self._result: Any = None
        self._waiters: list[Deferred[Any]] = []
        source.addBoth(self._fire)

    @property
    def failed(self) -> bool:
        return self._done and isinstance(self._result, Failure)

    def _fire(self, result: Any) -> None:
        self._done, self._result = True, result
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._deliver(waiter)

    def _deliver(self, waiter: Deferred[Any]) -> None:
        if isinstance(self._result, Failure):
            waiter.errback(self._result)
        else:
            waiter.callback(self._result)

    def follow(self) -> Deferred[Any]:
        waiter: Deferred[Any] = Deferred()
        if self._done:
            self._deliver(waiter)
        else:
            self._waiters.append(waiter)
        return waiter


def full_dump_chunks(chunks: list[str]) -> list[str]:
    """The chunks of a full agent-groups push; never an empty list.

    A Wazuh 4.7.5 worker reads ``chunks[-1]`` of a full push and fails on an empty list
    (seen against the real code), and sending nothing would leave a worker whose agents have
    stale groups unconverged (Wazuh's loop). One chunk without assignments works for both:
    Wazuh's worker applies it, ours clears every group the dump does not list.
    """
    return chunks or [encode_groups_chunk([])]


@attrs.define(eq=False)
class WorkerAgentsState:
    """What the master tracks about one registered worker for the agent syncs."""

    session: WorkerSession
    info_busy_since: float | None = None
    info_task: Deferred[None] | None = None
    info_status: dict[str, Any] = attrs.Factory(_info_status)
    groups_status: dict[str, Any] = attrs.Factory(_groups_status)
    full_status: dict[str, Any] = attrs.Factory(_groups_status)
    jobs: collections.deque[tuple[str, Job]] = attrs.Factory(collections.deque)
    job_running: Deferred[None] | None = None
    full_queued: bool = False
    last_full_push: float | None = None
    lost: bool = False
    pushes: int = 0
    full_pushes: int = 0


@implementer(IMasterExtension)
class AgentsMaster:
    """The master's agent synchronisation (an :class:`IMasterExtension`).

    :param node: the master node.
    :param db: the master's agent database.
    :param clock: the reactor's time.
    """

    _log = Logger()
    capabilities = (AGENTS_CAPABILITY, AGENT_INFO_ROWS_CAPABILITY, AGENT_INFO_ZLIB_CAPABILITY)

    def __init__(self, node: MasterNode, db: IAgentDatabase, clock: IReactorTime) -> None:
        self._node = node
        self._db = db
        self._clock = clock
        self._config = node.config
        self._states: dict[WorkerSession, WorkerAgentsState] = {}
        self._started_at: float | None = None
        self._membership_changed = True
        self._shared_signature: dict[str, Any] = {}
        self.group_rounds = 0
        # Full agent-groups dumps: one read shared by the workers that ask together, and a
        # bound on how many are sent at once (each costs the encrypted copy in flight).
        self._full_dump: tuple[int, _Shared] | None = None  # (periodic reads before it, dump)
        self._periodic_reads = 0
        self._full_sends = DeferredSemaphore(node.config.ext.max_concurrent_full_group_pushes)
        # Agent-info applies run a few at a time: 100 workers sending together would all
        # wait in the database's queue at once and time out there (timeout_agent_info counts
        # from admission, not from arrival). The worker's own wait covers the line.
        self._info_applies = DeferredSemaphore(node.config.ext.max_concurrent_agent_info_applies)
        self.full_dumps_read = 0

    # -- IMasterExtension ----------------------------------------------------------------------
    def master_responders(self, commands: MasterCommands) -> dict[bytes, Responder]:
        """The agent commands of one worker connection."""
        def bind(method: Callable[[MasterCommands, bytes], Coroutine[Any, Any, Reply]]
                 ) -> Responder:
            return lambda payload: method(commands, payload)
        return {
            SYN_A_W_M_P: bind(self._agent_info_permission),
            SYN_A_W_M: bind(self._agent_info),
            SYN_W_G_C: bind(self._full_request),
            SYN_W_G_E: bind(self._groups_end),
            SYN_WGC_E: bind(self._full_end),
            SYN_W_G_ERR: bind(self._groups_error),
            SYN_WGC_ERR: bind(self._full_error),
            WZC_AG_MLST: bind(self._master_list),
        }

    def worker_lost(self, session: Any) -> None:
        """Forget the worker's locks and queued pushes; cancel its agent-info write wait."""
        state = self._states.pop(session, None)
        if state is None:
            return
        state.lost = True
        state.jobs.clear()
        for task in (state.info_task, state.job_running):
            if task is not None and not task.called:
                task.cancel()

    def health_status(self, session: Any) -> dict[str, Any]:
        """The agent fields of the worker's ``status`` in get_health."""
        state = self._states.get(session)
        if state is None:
            return {}
        return {
            "sync_agent_info_free": state.info_busy_since is None,
            "last_sync_agentinfo": dict(state.info_status),
            "last_sync_agentgroup": dict(state.groups_status),
            "last_sync_full_agentgroup": dict(state.full_status),
        }

    async def active_agents_by_node(self) -> dict[str, int]:
        """Active agents per node name (for get_health's n_active_agents): one query for
        every node of the answer."""
        counts: dict[str, int] = await self._db.count_active_agents_by_node()
        return counts

    def state_of(self, session: WorkerSession) -> WorkerAgentsState:
        """The agent-sync state of a registered worker (created on first use)."""
        state = self._states.get(session)
        if state is None:
            state = self._states[session] = WorkerAgentsState(session)
        return state

    def _state(self, commands: MasterCommands) -> WorkerAgentsState:
        session = commands.session
        assert session is not None  # responders only run after hello
        return self.state_of(session)

    # -- agent-info ------------------------------------------------------------------------------
    def _info_lock_limit(self) -> float:
        intervals = self._config.intervals
        return intervals.timeout_agent_info + intervals.timeout_cluster_request

    async def _agent_info_permission(self, commands: MasterCommands, payload: bytes) -> Reply:
        state = self._state(commands)
        if state.info_busy_since is not None:
            held = self._clock.seconds() - state.info_busy_since
            if held <= self._info_lock_limit():
                return Reply.ok(b"False")
            self._log.warn("[{tag}] [Agent-info sync] Lock held for {held:.0f} s; releasing it.",
                           tag=commands.tag, held=held)
            task, state.info_task, state.info_busy_since = state.info_task, None, None
            if task is not None and not task.called:
                task.cancel()
        return Reply.ok(b"True")

    async def _agent_info(self, commands: MasterCommands, payload: bytes) -> Reply:
        state = self._state(commands)
        string_id = payload.strip()
        if state.info_busy_since is not None:
            raise ClusterError(3000, "an agent-info synchronisation is already in progress")
        try:
            data: bytes | None = commands.strings.take(string_id)
            problem = ""
        except ClusterError as e:
            data, problem = None, str(e)
        state.info_busy_since = self._clock.seconds()
        task = Deferred.fromCoroutine(self._apply_agent_info(commands, state, data, problem))
        if not task.called:
            state.info_task = task
        task.addErrback(self._log_unexpected, commands.tag, "Agent-info sync")
        return Reply.ok(string_id)

    async def _apply_agent_info(self, commands: MasterCommands, state: WorkerAgentsState,
                                data: bytes | None, problem: str) -> None:
        tag = commands.tag
        start = self._clock.seconds()
        state.info_status["date_start_master"] = start
        self._log.info("[{tag}] [Agent-info sync] Starting.", tag=tag)
        command, answer = SYN_M_A_ERR, problem.encode()
        admitted = False
        try:
            if data is not None:
                await self._info_applies.acquire()
                admitted = True
                chunks = await self._node.run(decode_agent_info_string, data)
                work = self._db.set_agent_info(chunks)
                work.addTimeout(self._config.intervals.timeout_agent_info, self._clock)
                result = await work
                spent = self._clock.seconds() - start
                command = SYN_M_A_E
                answer = encode_sync_result(SyncResult(result.updated_chunks,
                                                       result.error_messages, spent))
                state.info_status.update(date_end_master=self._clock.seconds(),
                                         n_synced_chunks=result.updated_chunks)
                events = getattr(self._node, "events", None)
                if events is not None:
                    events.sync_done(state.session.name, "agent_info", start,
                                     self._clock.seconds(), True,
                                     {"rows": result.updated_agents,
                                      "chunks": result.updated_chunks})
                self._log.info("[{tag}] [Agent-info sync] Finished in {spent:.3f}s. Updated "
                               "{n} chunks.", tag=tag, spent=spent, n=result.updated_chunks)
                for message in result.error_messages:
                    self._log.error("[{tag}] [Agent-info sync] {message}", tag=tag,
                                    message=message)
        except PayloadError as e:
            answer = f"Error processing agent-info: {e}".encode()
        except TimeoutError:
            answer = (f"Timeout processing agent-info chunks "
                      f"({self._config.intervals.timeout_agent_info} s)").encode()
        except CancelledError:
            return  # the worker is gone or the lock was forcibly released
        finally:
            if admitted:
                self._info_applies.release()
        if command == SYN_M_A_ERR:
            self._log.error("[{tag}] [Agent-info sync] {error}", tag=tag,
                            error=peer_text(answer, 1000))
        try:
            if not state.lost and commands.peer is not None:
                await commands.peer.request(command, answer)
        except ClusterError as e:
            self._log.error("[{tag}] [Agent-info sync] Could not send the result: {error}",
                            tag=tag, error=str(e))
        finally:
            state.info_busy_since = None
            state.info_task = None

    # -- agent-groups: periodic push --------------------------------------------------------------
    async def local_agent_groups(self) -> None:
        """"Local agent-groups" tick: read changed assignments and queue one push per worker."""
        with self._log.failuresHandled("[Master] [Local agent-groups] Error"):
            now = self._clock.seconds()
            if self._started_at is None:
                self._started_at = now
            if now - self._started_at < self._config.intervals.agent_group_start_delay:
                return
            if not len(self._node.registry):
                return
            self._log.debug("[Master] [Local agent-groups] Starting.")
            self._periodic_reads += 1
            chunks = await self._db.get_agent_groups_chunks(
                "sync_status", int(now), set_synced=True, get_global_hash=True)
            self._log.debug("[Master] [Local agent-groups] Obtained {n} chunks of data in "
                            "{spent:.3f}s.", n=len(chunks), spent=self._clock.seconds() - now)
            self.group_rounds += 1
            if len(chunks) > 1 or _has_data(chunks):
                self._membership_changed = True
            data = await self._node.run(encode_groups_string, chunks)
            # A push starts on the reactor with its first request encrypted and sent: started
            # for 100 workers at once they made master turns of 0.1-0.2 s on the scale bed.
            # At most max_events_per_turn start per turn; timers and reads run in between.
            sessions: list[WorkerSession] = list(self._node.registry)
            per_turn = self._config.ext.max_events_per_turn
            for first in range(0, len(sessions), per_turn):
                if first:
                    await deferLater(self._clock, 0)
                for session in sessions[first:first + per_turn]:
                    if self._node.registry.get(session.name) is not session:
                        continue  # gone meanwhile
                    state = self.state_of(session)
                    self._enqueue(state, "periodic", functools.partial(self._push, state, data))

    def _enqueue(self, state: WorkerAgentsState, kind: str, job: Job) -> None:
        """Run ``job`` after the worker's earlier agent-groups jobs."""
        if len(state.jobs) >= MAX_QUEUED_PUSHES:
            dropped, _ = state.jobs.popleft()
            self._log.warn("[Worker {worker}] [Agent-groups send] Worker is slow: dropped a "
                           "queued {kind} push.", worker=state.session.name, kind=dropped)
        state.jobs.append((kind, job))
        if state.job_running is None:
            state.job_running = Deferred.fromCoroutine(self._run_jobs(state))

    async def _run_jobs(self, state: WorkerAgentsState) -> None:
        try:
            while state.jobs and not state.lost:
                kind, job = state.jobs.popleft()
                try:
                    await job()
                except CancelledError:
                    return
                except ClusterError as e:
                    self._log.error("[Worker {worker}] [Agent-groups send{full}] Error: {error}",
                                    worker=state.session.name,
                                    full=" full" if kind == "full" else "", error=str(e))
                except Exception:  # noqa: BLE001 - logged; the queue goes on
                    self._log.failure("[Worker {worker}] [Agent-groups send] Unexpected error",
                                      worker=state.session.name)
        finally:
            state.job_running = None

    async def _push(self, state: WorkerAgentsState, data: bytes) -> None:
        """"Agent-groups send": one periodic push to one worker."""
        tag = f"Worker {state.session.name}"
        peer = state.session.peer
        self._log.debug("[{tag}] [Agent-groups send] Starting.", tag=tag)
        state.groups_status["date_start"] = self._clock.seconds()
        string_id = await send_string(peer, data)
        await peer.request(SYN_G_M_W, string_id)
        state.pushes += 1

    # -- agent-groups: full push ----------------------------------------------------------------
    async def _full_request(self, commands: MasterCommands, payload: bytes) -> Reply:
        state = self._state(commands)
        now = self._clock.seconds()
        if state.full_queued:
            return Reply.ok(b"A full agent-groups synchronization is already queued")
        if (state.last_full_push is not None
                and now - state.last_full_push < FULL_PUSH_MIN_INTERVAL):
            self._log.warn("[{tag}] [Agent-groups send full] Refused: the last full push was "
                           "{ago:.0f} s ago.", tag=commands.tag, ago=now - state.last_full_push)
            return Reply.ok(b"Full agent-groups synchronization rate-limited")
        state.full_queued = True
        self._enqueue(state, "full", functools.partial(self._full_push, state))
        return Reply.ok(b"Full agent-groups synchronization queued")

    async def _full_push(self, state: WorkerAgentsState) -> None:
        """"Agent-groups send full": every assignment, to one worker."""
        tag = f"Worker {state.session.name}"
        peer = state.session.peer
        try:
            start = self._clock.seconds()
            state.last_full_push = start
            state.full_status["date_start"] = start
            self._log.info("[{tag}] [Agent-groups send full] Starting.", tag=tag)
            count, data = await self._shared_full_dump()
            await self._full_sends.acquire()
            try:
                string_id = await send_string(peer, data)
                await peer.request(SYN_G_M_W_C, string_id)
            finally:
                self._full_sends.release()
            state.full_pushes += 1
            self._log.info("[{tag}] [Agent-groups send full] Sent {n} chunks.", tag=tag,
                           n=count)
        finally:
            state.full_queued = False

    def _shared_full_dump(self) -> Deferred[tuple[int, bytes]]:
        """Every assignment as one encoded full push: ``(chunk count, data)``.

        A dump read after the last periodic read is shared: the periodic push marks what it
        read as synced, so a dump older than that read could undo newer assignments on a
        worker; a dump at least as new can only miss changes still pending for the next
        periodic push. With 100 workers asking at once (new agents everywhere), this reads
        and encodes the table once instead of 100 times.
        """
        if self._full_dump is not None:
            reads, shared = self._full_dump
            if reads == self._periodic_reads and not shared.failed:
                return shared.follow()  # a failed read is not shared with later askers
        shared = _Shared(Deferred.fromCoroutine(self._read_full_dump(self._clock.seconds())))
        self._full_dump = (self._periodic_reads, shared)
        return shared.follow()

    async def _read_full_dump(self, started: float) -> tuple[int, bytes]:
        self.full_dumps_read += 1
        await self._db.recalculate_group_hashes()
        chunks = full_dump_chunks(await self._db.get_agent_groups_chunks("all", int(started)))
        data: bytes = await self._node.run(encode_groups_string, chunks)
        return len(chunks), data

    # -- agent-groups: results from workers -----------------------------------------------
    async def _groups_end(self, commands: MasterCommands, payload: bytes) -> Reply:
        self._record_result(commands, payload, self._state(commands).groups_status,
                            "Agent-groups send")
        return Reply.ok(b"Thanks")

    async def _full_end(self, commands: MasterCommands, payload: bytes) -> Reply:
        self._record_result(commands, payload, self._state(commands).full_status,
                            "Agent-groups send full")
        return Reply.ok(b"Thanks")

    def _record_result(self, commands: MasterCommands, payload: bytes, status: dict[str, Any],
                       task: str) -> None:
        try:
            result = decode_sync_result(payload)
        except PayloadError as e:
            self._log.error("[{tag}] [{task}] Invalid result from worker: {error}",
                            tag=commands.tag, task=task, error=str(e))
            return
        now = self._clock.seconds()
        status.update(date_end=now, n_synced_chunks=result.updated_chunks)
        self._log.info("[{tag}] [{task}] Finished in {spent:.3f}s. Updated {n} chunks.",
                       tag=commands.tag, task=task, spent=now - float(status["date_start"]),
                       n=result.updated_chunks)
        for message in result.error_messages:
            self._log.error("[{tag}] [{task}] {message}", tag=commands.tag, task=task,
                            message=message)

    async def _groups_error(self, commands: MasterCommands, payload: bytes) -> Reply:
        self._log.error("[{tag}] [Agent-groups send] Worker error: {error}", tag=commands.tag,
                        error=peer_text(payload, 1000))
        return Reply.ok(b"Thanks")

    async def _full_error(self, commands: MasterCommands, payload: bytes) -> Reply:
        self._log.error("[{tag}] [Agent-groups send full] Worker error: {error}",
                        tag=commands.tag, error=peer_text(payload, 1000))
        return Reply.ok(b"Thanks")

    # -- listing for wazuhcluster-control -a on a worker ----------------------------------
    async def _master_list(self, commands: MasterCommands, payload: bytes) -> Reply:
        node_name = parse_list_request(payload)
        config = self._node.config
        agents = master_listing(await self._db.list_agents(None), node_name, config.node_name,
                                config.version)
        return Reply.ok(await self._node.run(agents_json, agents))

    # -- merged.mg -------------------------------------------------------------------------------
    def groups_changed(self) -> None:
        """Group membership changed here (``set-group``): rewrite merged.mg on the next check."""
        self._membership_changed = True

    async def check_merged(self) -> None:
        """"merged.mg" tick: rewrite merged.mg of groups whose files or membership changed."""
        with self._log.failuresHandled("[Master] [Agents] Could not write merged.mg"):
            home = self._config.home
            signature = await self._node.run(shared_signature, home)
            ar_changed = signature.get(_AR_KEY) != self._shared_signature.get(_AR_KEY)
            changed = [g for g, sig in signature.items() if g != _AR_KEY and (
                ar_changed or self._shared_signature.get(g) != sig)]
            membership, self._membership_changed = self._membership_changed, False
            if not changed and not membership:
                return
            written = 0
            for group in changed:
                written += bool(await self._node.run(_merged.write_group_merged, home, group))
            agents = await self._db.list_agents()
            combos = {a.groups for a in agents if len(a.groups) > 1}
            if not membership:
                combos = {c for c in combos if set(c) & set(changed)}
            for combo in sorted(combos):
                _, did = await self._node.run(_merged.write_multigroup_merged, home, combo)
                written += bool(did)
            self._shared_signature = signature
            if written:
                self._log.info("[Master] [Agents] Wrote {n} merged.mg files.", n=written)

    # -- helpers -------------------------------------------------------------------------------
    def _log_unexpected(self, failure: Any, tag: str, task: str) -> None:
        if failure.check(CancelledError):
            return
        self._log.failure("[{tag}] [{task}] Unexpected error", failure, tag=tag, task=task)


def _has_data(chunks: list[str]) -> bool:
    """True if the (single) chunk lists some agent (cheap test on the compact JSON)."""
    return bool(chunks) and not chunks[0].startswith('[{"data":[]')


_AR_KEY = "\0ar.conf"


def shared_signature(home: str) -> dict[str, Any]:
    """Per group of ``etc/shared``: the (path, size, mtime) of its files, merged.mg excluded;
    plus ``etc/shared/ar.conf`` under a key no group can have (blocking)."""
    shared = os.path.join(home, "etc", "shared")
    result: dict[str, Any] = {}
    try:
        entries = sorted(os.scandir(shared), key=lambda e: e.name)
    except FileNotFoundError:
        return result
    for entry in entries:
        if entry.name == "ar.conf" and entry.is_file():
            st = entry.stat()
            result[_AR_KEY] = (st.st_size, st.st_mtime_ns)
        elif entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            files = []
            for root, dirs, names in os.walk(entry.path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if name.startswith(".") or name.startswith(_merged.MERGED_NAME):
                        continue
                    try:
                        st = os.stat(os.path.join(root, name))
                    except OSError:
                        continue
                    files.append((os.path.relpath(os.path.join(root, name), entry.path),
                                  st.st_size, st.st_mtime_ns))
            result[entry.name] = tuple(files)
    return result


def install(node: MasterNode, reactor: Any) -> None:
    """Add the agent database and the agent loops to the master ``node``."""
    from wazuhcluster.agents.local_side import AgentsLocal

    config = node.config
    from wazuhcluster.agents.backend import make_agent_backend

    db: Any = make_agent_backend(config, reactor, node.run)  # settings agent_db
    db.setServiceParent(node)
    node.services.remove(db)
    node.services.insert(0, db)  # started first, stopped last: every user finds it open
    node.agent_db = db
    ClientKeysWatcher(db, reactor, os.path.join(config.home, "etc", "client.keys"), "Master",
                      inotify_reactor=reactor).setServiceParent(node)
    agents = AgentsMaster(node, db, reactor)
    node.extensions.append(agents)
    node.local_extensions.append(AgentsLocal(node, db, on_groups_changed=agents.groups_changed))
    node.active_agents_by_node = agents.active_agents_by_node
    periodic("local-agent-groups", config.intervals.sync_agent_groups,
             agents.local_agent_groups, reactor).setServiceParent(node)
    periodic("merged-mg", MERGED_CHECK_INTERVAL, agents.check_merged,
             reactor).setServiceParent(node)
