"""Encoded answers of agent listings, kept while the agent database and the clock's second
stay the same.

A native listing function (``get_agents`` and the like) reads nothing but its arguments, the
node's agent database and the current second (``older_than=7d`` and the other timeframes). Its
encoded answer is therefore the same bytes for the same request as long as none of the three
changes; a node asked the same page many times a second (a dashboard refreshed by many users,
a script) answers the repeats with the bytes it already encoded instead of reading, formatting
and encoding the page again.

The key is the request: function, arguments, user, RBAC permissions, nodes, broadcasting. An
entry is valid for one *stamp*: the embedded database's generation (every row written
through its connection and every commit by any other connection changes it) and the clock's
whole second. An answer is kept only when the stamp read before running the function is the
stamp read after it: no write and no second boundary came in between, so the bytes are exactly
what the function gives for that database and that second. Concurrent identical requests with
the same stamp wait for the first one's bytes (or its error: a timeout, a missing agent)
instead of running the function again; when the first one is cancelled or keeps nothing,
each of them runs it.

Only encoded answers are kept (bytes cannot be changed by their users), only successful ones,
only for the embedded database (the wazuh-db backend has no generation: other daemons write
its database), and only up to ``max_entries`` answers of at most ``max_bytes`` each and
:data:`MAX_TOTAL_BYTES` together.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable, Coroutine
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from wazuhcluster.dapi import codec
from wazuhcluster.dapi.codec import DapiRequest, RawAnswer
from wazuhcluster.dapi.results import WazuhException
from wazuhcluster.interfaces import IAgentPageReader

#: Functions whose answer depends only on the request, the agent database and the second.
CACHEABLE = frozenset({
    "wazuh.agent.get_agents",
    "wazuh.core.agent.Agent.get_agents_overview",
    "wazuh.agent.get_agents_summary_status",
    "wazuh.agent.get_agents_summary_os",
})

#: Largest answer kept (a 500-agent page is ~120 kB).
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: The most bytes all kept answers may hold together (the oldest go first).
MAX_TOTAL_BYTES = 32 * 1024 * 1024

Key = tuple[Any, ...]


def answer_digest(data: bytes) -> bytes:
    """The digest by which our nodes compare an answer's bytes: hex SHA-256 (64 ASCII
    bytes). Blocking for big answers: run it off the reactor."""
    return hashlib.sha256(data).hexdigest().encode("ascii")


def encode_kept(answer: Any) -> tuple[bytes, bytes]:
    """The tagged JSON bytes of ``answer`` and their digest (blocking: for the runner)."""
    data = codec.dumps(answer).encode()
    return data, answer_digest(data)


@attrs.define(eq=False)
class _Entry:
    stamp: tuple[Any, int] | None
    data: RawAnswer | None = None
    waiters: list[Deferred[Any]] = attrs.Factory(list)


class AnswerCache:
    """Encoded answers of :data:`CACHEABLE` functions per request and stamp.

    :param db: returns the node's agent database (it may be replaced while the node runs).
    :param clock: the reactor's time (the second in the stamp, as the functions read it).
    :param run: runs a blocking callable off the reactor (the node's runner), for encoding.
    :param max_entries: how many requests' answers are kept (the oldest goes first).
    """

    def __init__(self, db: Callable[[], Any], clock: IReactorTime,
                 run: Callable[..., Deferred[Any]], max_entries: int,
                 max_bytes: int = MAX_ANSWER_BYTES,
                 max_total: int = MAX_TOTAL_BYTES) -> None:
        self._db = db
        self._clock = clock
        self._run = run
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_total = max_total
        self._entries: collections.OrderedDict[Key, _Entry] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.data is not None)

    @property
    def size(self) -> int:
        """Bytes held by the kept answers."""
        return sum(len(e.data.data) for e in self._entries.values() if e.data is not None)

    @staticmethod
    def key(request: DapiRequest) -> Key | None:
        """The request's identity for the cache, or None when it is not cacheable."""
        name = request.f.dotted
        if name not in CACHEABLE:
            return None
        try:
            kwargs = codec.dumps(request.f_kwargs)
            rbac = codec.dumps(request.rbac_permissions)
        except (TypeError, ValueError):
            return None
        return (name, kwargs, request.current_user, rbac, tuple(request.nodes),
                request.broadcasting, request.wait_for_complete, request.api_timeout)

    def _trim(self) -> None:
        """Forget the oldest answers until the kept ones fit in ``max_total`` bytes."""
        total = self.size
        for key in list(self._entries):
            if total <= self.max_total:
                return
            entry = self._entries[key]
            if entry.data is not None:
                total -= len(entry.data.data)
                del self._entries[key]

    async def _stamp(self, db: Any) -> tuple[Any, int] | None:
        """The database's generation and the second, or None when the generation cannot be
        read (the database stopped: the function reports that itself)."""
        try:
            generation = await db.generation()
        except Exception:  # noqa: BLE001 - no stamp, no cache
            return None
        return generation, int(self._clock.seconds())

    async def answer(self, request: DapiRequest,
                     compute: Callable[[], Coroutine[Any, Any, Any]],
                     objects: bool = False) -> Any:
        """The answer to ``request``: kept bytes (a RawAnswer) when valid, else what
        ``compute()`` answers (encoded into a RawAnswer when it succeeded).

        With ``objects`` (an in-process caller that reads the result, such as this node's
        REST API) kept bytes are decoded into fresh objects, off the reactor, and a computed
        answer is returned as it is (its encoding is only kept)."""
        key = self.key(request) if self.max_entries > 0 else None
        db = self._db()
        if key is None or not IAgentPageReader.providedBy(db):
            return await compute()
        stamp = await self._stamp(db)
        if stamp is None:
            return await compute()
        entry = self._entries.get(key)
        if entry is not None and entry.stamp == stamp:
            if entry.data is None:  # the same request is being answered: wait for it
                waiter: Deferred[Any] = Deferred()
                entry.waiters.append(waiter)
                outcome = await waiter
            else:
                outcome = entry.data
            if isinstance(outcome, RawAnswer):
                self.hits += 1
                if objects:
                    return await self._run(codec.loads, outcome.data)
                return outcome
            if isinstance(outcome, BaseException):
                return outcome  # the same request's error (a timeout, a missing agent)
            return await self.answer(request, compute, objects)  # it kept nothing: run it
        entry = _Entry(stamp)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        self.misses += 1
        answer: Any = None
        try:
            answer = await compute()
            if isinstance(answer, (BaseException, RawAnswer)):
                return answer
            try:
                data, digest = await self._run(encode_kept, answer)
            except (TypeError, ValueError):
                return answer  # the caller reports what cannot be encoded
            if len(data) > self.max_bytes:
                return answer if objects else RawAnswer(data)
            encoded = RawAnswer(data, digest)  # fresh and successful: a worker may keep it
            if await self._stamp(db) == stamp and self._entries.get(key) is entry:
                entry.data = encoded
                self._trim()
            return answer if objects else encoded
        finally:
            if entry.data is None and self._entries.get(key) is entry:
                del self._entries[key]
            waiters, entry.waiters = entry.waiters, []
            shared = entry.data if entry.data is not None else (
                answer if isinstance(answer, WazuhException) else None)
            for waiter in waiters:
                if not waiter.called:
                    waiter.callback(shared)
