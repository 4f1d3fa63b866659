"""Agents on a worker: agent-info sync toward the master, agent-groups from the master.

Agent-info ("Agent-info sync", every ``sync_agent_info`` seconds): ``syn_a_w_m_p`` → read the
agents marked for sync → long string (Wazuh 4.7.5 format; the compact rows form when the master
announced ``agent-info-rows``, i.e. is one of ours; compressed with zlib when it also
announced ``agent-info-rows-zlib``) → ``syn_a_w_m <id>`` → wait for
the master's ``syn_m_a_e`` / ``syn_m_a_err``. Unlike Wazuh, rows are marked synced only after a
``syn_m_a_e`` without errors, and only if they did not change since they were read
(:meth:`~wazuhcluster.agents.db.AgentDatabase.mark_agent_info_synced`): a dropped link, an
error or a timeout leaves them marked and they go again next round.

Correlation: one sync is in flight at a time (the loop waits for it, and the master's lock
refuses another). The in-flight record is armed *before* ``syn_a_w_m`` is sent, so a result
that overtakes the ``ok`` reply is still matched; a ``syn_m_a_e`` that arrives when nothing is
in flight (e.g. after our wait timed out) is only logged.

Agent-groups ("Agent-groups recv" / "Agent-groups recv full"): strings received with
``syn_g_m_w`` / ``syn_g_m_w_c`` are applied one at a time in arrival order on the database
thread; the result goes back with ``syn_w_g_e`` / ``syn_wgc_e`` (or ``…_err``). After a
periodic push the local global group hash is compared with the master's; after
``agent_groups_mismatch_limit`` consecutive mismatches the worker asks for a full dump
(``syn_w_g_c``). Loops Wazuh can fall into are avoided: the counter is reset when the request is
sent and after a full dump is applied, and full dumps are requested at most once per
:func:`full_resync_min_interval`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, DeferredLock, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.agents.keyswatch import ClientKeysWatcher
from wazuhcluster.agents.payloads import (
    AGENT_INFO_ROWS_CAPABILITY,
    AGENT_INFO_ZLIB_CAPABILITY,
    PayloadError,
    SyncResult,
    decode_groups_string,
    decode_sync_result,
    encode_agent_info_rows_string,
    encode_agent_info_rows_zlib,
    encode_agent_info_string,
    encode_sync_result,
    master_groups_hash,
)
from wazuhcluster.config import ClusterConfig
from wazuhcluster.errors import ClusterError
from wazuhcluster.interfaces import IAgentDatabase, IPeer, IWorkerExtension
from wazuhcluster.logsafe import peer_text
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
    from wazuhcluster.worker.commands import WorkerCommands
    from wazuhcluster.worker.node import WorkerNode

Responder = Callable[[bytes], Coroutine[Any, Any, Reply | None]]

#: Seconds from agents becoming active on a worker (the local keepalive command) to the
#: agent-info sync that tells the master (keepalives arriving meanwhile go with it).
PROMPT_DELAY = 0.5


def full_resync_min_interval(config: ClusterConfig) -> float:
    """Least time between two ``syn_w_g_c`` requests of this worker (seconds)."""
    intervals = config.intervals
    return max(60.0, 6 * intervals.agent_groups_mismatch_limit * intervals.sync_agent_groups)


class AgentInfoOutcome(Exception):
    """The master answered ``syn_m_a_err``: the sync failed as a whole."""


@attrs.define(eq=False)
class _InFlight:
    """The agent-info sync waiting for the master's result."""

    peer: IPeer
    versions: tuple[tuple[int, int], ...]
    result: Deferred[SyncResult]


@implementer(IWorkerExtension)
class AgentsWorker:
    """The worker's agent synchronisation (an :class:`IWorkerExtension`).

    :param node: the worker node (for ``run``, ``config`` and the tag).
    :param db: the worker's agent database.
    :param clock: the reactor's time.
    """

    _log = Logger()

    def __init__(self, node: WorkerNode, db: IAgentDatabase, clock: IReactorTime) -> None:
        self._node = node
        self._db = db
        self._clock = clock
        self._config = node.config
        self._peer: IPeer | None = None
        self._in_flight: _InFlight | None = None
        #: Send agent-info in the compact rows form (set on connection from the master's
        #: capabilities).
        self.rows_format = False
        #: Compress the compact rows form with zlib (the master announced it accepts that).
        self.rows_zlib = False
        self._groups_lock = DeferredLock()
        self.mismatches = 0
        #: A sync of agent-info is running (periodic or prompt): none starts beside it.
        self._syncing = False
        #: Agents became active during a sync: one more right after it.
        self._again = False
        #: The prompt sync scheduled by :meth:`agents_activated`.
        self._prompt: IDelayedCall | None = None
        self.last_full_request: float | None = None
        self.full_requests = 0
        self.synced_rounds = 0

    @property
    def tag(self) -> str:
        """Wazuh log tag of this worker."""
        return f"Worker {self._config.node_name}"

    # -- IWorkerExtension ------------------------------------------------------------------------
    def worker_responders(self, commands: WorkerCommands) -> dict[bytes, Responder]:
        """The agent commands the master sends."""
        return {
            SYN_M_A_E: self._agent_info_end,
            SYN_M_A_ERR: self._agent_info_error,
            SYN_G_M_W: lambda payload: self._groups(commands, payload, full=False),
            SYN_G_M_W_C: lambda payload: self._groups(commands, payload, full=True),
        }

    def connected(self, peer: IPeer, capabilities: frozenset[str]) -> None:
        """The master link is up; agent-info goes in the compact rows form if the master
        announced that it accepts it (a real Wazuh master gets the 4.7.5 form)."""
        self._peer = peer
        self.rows_format = AGENT_INFO_ROWS_CAPABILITY in capabilities
        self.rows_zlib = AGENT_INFO_ZLIB_CAPABILITY in capabilities

    def disconnected(self) -> None:
        """The link is gone: a sync in flight ends without marking anything."""
        self._peer = None
        if self._prompt is not None and self._prompt.active():
            self._prompt.cancel()
        self._prompt = None
        self._again = False
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None and not in_flight.result.called:
            in_flight.result.errback(ClusterError(3018, "connection with the master lost"))

    # -- agent-info ------------------------------------------------------------------------------
    def agents_activated(self) -> None:
        """Agents connected to this node that were not active (the local keepalive command
        saw them): their agent-info goes to the master within :data:`PROMPT_DELAY` instead
        of at the next round of ``sync_agent_info`` (10 s by default), so that the master
        shows them active promptly. Calls within the delay, or during a sync, make one sync.
        Keepalives of agents already active wait for the periodic round as before."""
        if self._peer is None:
            return
        if self._syncing:
            self._again = True
        elif self._prompt is None or not self._prompt.active():
            self._prompt = self._clock.callLater(PROMPT_DELAY, self._prompt_sync)

    def _prompt_sync(self) -> None:
        self._prompt = None
        Deferred.fromCoroutine(self.sync_agent_info())

    async def sync_agent_info(self) -> None:
        """"Agent-info sync" tick (periodic, or prompt after :meth:`agents_activated`)."""
        if self._syncing:
            return
        self._syncing = True
        try:
            await self._sync_agent_info_once()
        finally:
            self._syncing = False
            if self._again:
                self._again = False
                self.agents_activated()

    async def _sync_agent_info_once(self) -> None:
        with self._log.failuresHandled("[{tag}] [Agent-info sync] Error", tag=self.tag):
            peer = self._peer
            if peer is None or self._in_flight is not None:
                return
            try:
                await self._sync_agent_info(peer)
            except (ClusterError, AgentInfoOutcome, TimeoutError) as e:
                self._log.error("[{tag}] [Agent-info sync] Error: {error}. Nothing was marked "
                                "synced; the agents go again next time.", tag=self.tag,
                                error=str(e) or e.__class__.__name__)
            finally:
                in_flight, self._in_flight = self._in_flight, None
                if in_flight is not None:
                    if not in_flight.result.called:
                        in_flight.result.cancel()
                    in_flight.result.addErrback(lambda _: None)  # consumed or abandoned

    async def _sync_agent_info(self, peer: IPeer) -> None:
        start = self._clock.seconds()
        self._log.info("[{tag}] [Agent-info sync] Starting.", tag=self.tag)
        permission = await peer.request(SYN_A_W_M_P, b"")
        if permission != b"True":
            self._log.info("[{tag}] [Agent-info sync] Master didn't grant permission to start "
                           "a new synchronization.", tag=self.tag)
            return
        rows_format = self.rows_format
        batch = await self._db.get_agent_info_sync(rows=rows_format)
        if not batch.chunks:
            self._log.info("[{tag}] [Agent-info sync] Finished in {spent:.3f}s. Updated 0 "
                           "chunks.", tag=self.tag, spent=self._clock.seconds() - start)
            return
        encode = encode_agent_info_string
        if rows_format:
            encode = (encode_agent_info_rows_zlib if self.rows_zlib
                      else encode_agent_info_rows_string)
        data = await self._node.run(encode, batch.chunks)
        string_id = await send_string(peer, data)
        if peer is not self._peer:
            raise ClusterError(3018, "connection with the master lost")
        waiting: Deferred[SyncResult] = Deferred()
        self._in_flight = _InFlight(peer, batch.versions, waiting)
        intervals = self._config.intervals
        waiting.addTimeout(intervals.timeout_agent_info + 2 * intervals.timeout_cluster_request,
                           self._clock)
        await peer.request(SYN_A_W_M, string_id)
        result = await waiting
        if result.error_messages:
            for message in result.error_messages:
                self._log.error("[{tag}] [Agent-info sync] Master error: {message}",
                                tag=self.tag, message=message)
            raise AgentInfoOutcome(f"the master reported {len(result.error_messages)} errors")
        marked = await self._db.mark_agent_info_synced(batch.versions)
        self.synced_rounds += 1
        self._log.info("[{tag}] [Agent-info sync] Finished in {spent:.3f}s. Updated {n} chunks.",
                       tag=self.tag, spent=self._clock.seconds() - start,
                       n=result.updated_chunks)
        self._log.debug("[{tag}] [Agent-info sync] {marked} of {sent} agents marked synced.",
                        tag=self.tag, marked=marked, sent=len(batch.versions))

    async def _agent_info_end(self, payload: bytes) -> Reply:
        in_flight = self._in_flight
        try:
            result = decode_sync_result(payload)
        except PayloadError as e:
            if in_flight is not None and not in_flight.result.called:
                in_flight.result.errback(AgentInfoOutcome(f"invalid syn_m_a_e: {e}"))
            return Reply.ok(b"Thanks")
        if in_flight is None or in_flight.result.called:
            self._log.warn("[{tag}] [Agent-info sync] Result received with no sync in "
                           "progress: ignored.", tag=self.tag)
        else:
            in_flight.result.callback(result)
        return Reply.ok(b"Thanks")

    async def _agent_info_error(self, payload: bytes) -> Reply:
        text = peer_text(payload, 1000)
        in_flight = self._in_flight
        if in_flight is not None and not in_flight.result.called:
            in_flight.result.errback(AgentInfoOutcome(f"master error: {text}"))
        else:
            self._log.error("[{tag}] [Agent-info sync] Master error: {error}", tag=self.tag,
                            error=text)
        return Reply.ok(b"Thanks")

    # -- agent-groups ----------------------------------------------------------------------------
    async def _groups(self, commands: WorkerCommands, payload: bytes, full: bool) -> Reply:
        string_id = payload.strip()
        try:
            data: bytes | None = commands.strings.take(string_id)
            problem = ""
        except ClusterError as e:
            data, problem = None, str(e)
        peer = commands.peer
        assert peer is not None
        d = Deferred.fromCoroutine(self._apply_groups(peer, data, problem, full))
        d.addErrback(self._log_unexpected, "Agent-groups recv full" if full else
                     "Agent-groups recv")
        return Reply.ok(string_id)

    async def _apply_groups(self, peer: IPeer, data: bytes | None, problem: str,
                            full: bool) -> None:
        task = "Agent-groups recv full" if full else "Agent-groups recv"
        await self._groups_lock.acquire()
        try:
            start = self._clock.seconds()
            self._log.info("[{tag}] [{task}] Starting.", tag=self.tag, task=task)
            try:
                if data is None:
                    raise PayloadError(problem)
                received = await self._node.run(decode_groups_string, data)
                # The time limit is for applying these chunks, not for waiting behind the
                # database's earlier work (a first client.keys of 200 000 agents held it
                # for 40 s on the 100-worker test bed). Both are asked for at once, so that
                # nothing can come between them: once ``ready`` fires, the apply runs.
                ready = self._db.idle()
                work = self._db.apply_agent_groups_chunks(
                    received.chunks, received.mode, received.sync_status, full)
                try:
                    await ready
                except BaseException:
                    work.addErrback(lambda _: None)  # the same failure, said once
                    raise
                work.addTimeout(self._config.intervals.timeout_agent_groups, self._clock)
                result = await work
                has_hash, master_hash = (False, None) if full else await self._node.run(
                    master_groups_hash, received.chunks)
            except TimeoutError:
                error = (f"Timeout applying agent-groups chunks "
                         f"({self._config.intervals.timeout_agent_groups:g} s)")
                self._log.error("[{tag}] [{task}] Error: {error}", tag=self.tag, task=task,
                                error=error)
                await self._tell(peer, SYN_WGC_ERR if full else SYN_W_G_ERR, error.encode())
                return
            except PayloadError as e:
                error = str(e) or "invalid agent-groups data"
                self._log.error("[{tag}] [{task}] Error: {error}", tag=self.tag, task=task,
                                error=error)
                await self._tell(peer, SYN_WGC_ERR if full else SYN_W_G_ERR, error.encode())
                return
            spent = self._clock.seconds() - start
            await self._tell(peer, SYN_WGC_E if full else SYN_W_G_E, encode_sync_result(
                SyncResult(result.updated_chunks, result.error_messages, spent)))
            self._log.info("[{tag}] [{task}] Finished in {spent:.3f}s. Updated {n} chunks.",
                           tag=self.tag, task=task, spent=spent, n=result.updated_chunks)
            if full:
                self.mismatches = 0
            elif has_hash:
                await self._compare_hash(peer, master_hash)
        finally:
            self._groups_lock.release()

    async def _tell(self, peer: IPeer, command: bytes, payload: bytes) -> None:
        try:
            await peer.request(command, payload)
        except ClusterError as e:
            self._log.error("[{tag}] [Agent-groups recv] Could not send {command}: {error}",
                            tag=self.tag, command=command.decode(), error=str(e))

    async def _compare_hash(self, peer: IPeer, master_hash: str | None) -> None:
        local_hash = await self._db.global_group_hash()
        if local_hash == master_hash:
            self.mismatches = 0
            return
        self.mismatches += 1
        limit = self._config.intervals.agent_groups_mismatch_limit
        self._log.debug("[{tag}] [Agent-groups recv] The master's checksum and the worker's "
                        "checksum are different ({n}/{limit}). Local checksum: {local} | "
                        "Master checksum: {master}.", tag=self.tag, n=self.mismatches,
                        limit=limit, local=local_hash, master=master_hash)
        if self.mismatches < limit:
            return
        now = self._clock.seconds()
        wait = full_resync_min_interval(self._config)
        if self.last_full_request is not None and now - self.last_full_request < wait:
            self._log.debug("[{tag}] [Agent-groups recv] Full resync requested {ago:.0f} s ago;"
                            " next request allowed after {wait:.0f} s.", tag=self.tag,
                            ago=now - self.last_full_request, wait=wait)
            return
        self.mismatches = 0
        self.last_full_request = now
        self.full_requests += 1
        self._log.info("[{tag}] [Agent-groups recv] Sent request to obtain all agent-groups "
                       "information from the master node.", tag=self.tag)
        await self._tell(peer, SYN_W_G_C, b"")

    def _log_unexpected(self, failure: Failure, task: str) -> None:
        self._log.failure("[{tag}] [{task}] Unexpected error", failure, tag=self.tag, task=task)


def install(node: WorkerNode, reactor: Any) -> None:
    """Add the agent database and the agent loops to the worker ``node``."""
    import os

    from wazuhcluster.agents.local_side import AgentsLocal

    config = node.config
    from wazuhcluster.agents.backend import make_agent_backend

    db: Any = make_agent_backend(config, reactor, node.run)  # settings agent_db
    db.setServiceParent(node)
    node.services.remove(db)
    node.services.insert(0, db)  # started first, stopped last: every user finds it open
    node.agent_db = db
    ClientKeysWatcher(db, reactor, os.path.join(config.home, "etc", "client.keys"),
                      node.tag, inotify_reactor=reactor).setServiceParent(node)
    agents = AgentsWorker(node, db, reactor)
    node.extensions.append(agents)
    node.local_extensions.append(AgentsLocal(node, db, on_activated=agents.agents_activated))
    periodic("agent-info-sync", config.intervals.sync_agent_info, agents.sync_agent_info,
             reactor).setServiceParent(node)
