"""Enrolments forwarded in batches between two wazuhcluster nodes (``wzc_en_add``).

Wazuh's way (kept for a real Wazuh master) costs four exchanges on the cluster link per
enrolment: ``sendsync`` from the worker, then ``new_str``, ``str_upd`` and ``sendsyn_res`` from
the master to carry the answer back, plus a local-socket connection on each side. Our master
announces the capability ``enrol_batch``; a worker that sees it sends the enrolments waiting at
that moment as one request::

    wzc_en_add  [<authd message>, ...]          (worker -> master, at most MAX_ITEMS)
    ok          [<authd answer>, ...]           (same order)

Each message is exactly what the worker would have sent with ``sendsync`` to daemon ``authd``
(``{"function": "add", "arguments": {...}}``, the worker-made key included), and each answer is
exactly what authd's local socket answers, so the agent gets the same bytes either way. While
one batch is in flight the next requests wait and leave together; the master's registrar applies
a whole batch in one client.keys rewrite. If the request fails (link lost, timeout, ``err``),
every enrolment of the batch fails like a failed ``sendsync`` and the forwarder's retry applies:
the key made by the worker makes a retry of an enrolment already done answer the same agent.
Without the capability (a real Wazuh master) the worker uses ``sendsync`` as before.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from zope.interface import implementer

from wazuhcluster.enrolment.forward import SendsyncError, sendsync
from wazuhcluster.enrolment.localsock import dispatch
from wazuhcluster.enrolment.registrar import Registrar
from wazuhcluster.errors import ClusterError
from wazuhcluster.interfaces import IMasterExtension, IPeer, IWorkerExtension
from wazuhcluster.protocol.commands import Reply

#: The request a worker sends, and the capability our master announces for it.
ENROL_BATCH = b"wzc_en_add"
ENROL_BATCH_CAPABILITY = "enrol_batch"
#: Most enrolments in one request (more wait for the next one).
MAX_ITEMS = 256


def decode_batch(payload: bytes) -> list[dict[str, Any]]:
    """The authd ``add`` messages of a ``wzc_en_add`` request, or ClusterError 3036."""
    try:
        items = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ClusterError(3036, "wzc_en_add: not JSON") from None
    if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS or not all(
            isinstance(i, dict) and i.get("function") == "add" for i in items):
        raise ClusterError(3036, f"wzc_en_add: expected a list of 1 to {MAX_ITEMS} authd "
                                 f"'add' messages")
    return items


def decode_answers(payload: bytes, count: int) -> list[bytes]:
    """The master's answers, one authd JSON answer per enrolment; SendsyncError if not."""
    try:
        answers = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise SendsyncError("wzc_en_add: the answer is not JSON") from None
    if not isinstance(answers, list) or len(answers) != count:
        raise SendsyncError(f"wzc_en_add: expected {count} answers")
    return [json.dumps(a, separators=(",", ":")).encode() for a in answers]


@implementer(IMasterExtension)
class MasterEnrolBatch:
    """The master's side: answers ``wzc_en_add`` with the registrar, as authd's socket would."""

    capabilities = (ENROL_BATCH_CAPABILITY,)

    def __init__(self, registrar: Registrar) -> None:
        self._registrar = registrar
        self.requests = 0

    def master_responders(self, commands: Any) -> dict[bytes, Any]:
        """``wzc_en_add`` from one worker connection."""
        async def enrol_batch(payload: bytes) -> Reply:
            items = decode_batch(payload)
            self.requests += 1
            with self._registrar.held():  # one registrar batch for the whole request
                pending = [Deferred.fromCoroutine(dispatch(self._registrar,
                                                           json.dumps(item).encode()))
                           for item in items]
            answers = await gatherResults(pending)
            return Reply.ok(json.dumps(answers, separators=(",", ":")).encode())
        return {ENROL_BATCH: enrol_batch}

    def worker_lost(self, session: Any) -> None:
        """Nothing to stop: enrolments under way complete (a retry is answered the same)."""

    def health_status(self, session: Any) -> dict[str, Any]:
        """Nothing added to health."""
        return {}


_Send = Callable[[Any, str, dict[str, Any], float], Awaitable[bytes]]


@implementer(IWorkerExtension)
class WorkerEnrolBatch:
    """The worker's side: a ``send`` for the forwarder that batches when the master can.

    :param request_master: sends one request on the master link (the worker node's).
    :param reactor: schedules the sending of a batch after the current reactor turn.
    :param fallback: the Wazuh way (``sendsync`` through the local cluster socket).
    """

    _log = Logger()

    def __init__(self, request_master: Callable[[bytes, bytes], Deferred[bytes]],
                 reactor: Any, fallback: _Send = sendsync) -> None:
        self._request_master = request_master
        self._reactor = reactor
        self._fallback = fallback
        self.enabled = False
        self._queue: list[tuple[dict[str, Any], Deferred[bytes]]] = []
        self._in_flight = False
        self._scheduled = False
        self.batches = 0

    # IWorkerExtension
    def worker_responders(self, commands: Any) -> dict[bytes, Any]:
        """Nothing from the master."""
        return {}

    def connected(self, peer: IPeer, capabilities: frozenset[str]) -> None:
        """Batch only when this master said it can."""
        self.enabled = ENROL_BATCH_CAPABILITY in capabilities

    def disconnected(self) -> None:
        """The next master may be a real Wazuh one: back to sendsync until told otherwise."""
        self.enabled = False

    async def send(self, reactor: Any, socket_path: str, payload: dict[str, Any],
                   timeout: float) -> bytes:
        """The forwarder's exchange: the answer of authd to ``payload["message"]``."""
        if not self.enabled:
            return await self._fallback(reactor, socket_path, payload, timeout)
        done: Deferred[bytes] = Deferred()
        self._queue.append((payload["message"], done))
        self._schedule()
        done.addTimeout(timeout, self._reactor)
        try:
            return await done
        except SendsyncError:
            raise
        except Exception as e:  # noqa: BLE001 - timeout: the forwarder retries
            raise SendsyncError(str(e) or type(e).__name__) from None

    def _schedule(self) -> None:
        if not self._in_flight and not self._scheduled and self._queue:
            self._scheduled = True
            self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        batch = [(m, d) for m, d in self._queue[:MAX_ITEMS] if not d.called]  # not timed out
        self._queue = self._queue[MAX_ITEMS:]
        if not batch:
            self._schedule()
            return
        self._in_flight = True
        self.batches += 1
        body = json.dumps([m for m, _ in batch], separators=(",", ":")).encode()
        d = self._request_master(ENROL_BATCH, body)

        def answered(reply: bytes) -> None:
            try:
                answers = decode_answers(reply, len(batch))
            except SendsyncError as e:
                failed(e)
                return
            for (_, waiter), answer in zip(batch, answers, strict=True):
                if not waiter.called:
                    waiter.callback(answer)

        def failed(error: Any) -> None:
            text = str(getattr(error, "value", error))
            for _, waiter in batch:
                if not waiter.called:
                    waiter.errback(SendsyncError(text))

        def finished(_: Any) -> None:
            self._in_flight = False
            self._schedule()
        d.addCallbacks(answered, failed)
        d.addErrback(lambda f: self._log.failure("[Agent enrolment] Unexpected failure", f))
        d.addBoth(finished)
