"""Answers a worker relayed, kept to be revalidated with the master (ours, beyond 4.7.5).

A worker asked the same agent page many times a second by its local clients relays the same
121 kB from the master each time: the master encrypts them, the worker decrypts them, and the
link carries them, only for the worker to pass on bytes it already passed on. Between our own
nodes the worker instead keeps the last answers the master marked as keepable (``wzc_dapi_k``:
answers the master's answer cache rules allow to keep) with their digest, and asks again with
``wzc_dapi_r "<id> <digest> <request>"``. The master answers the request exactly as it would
a ``dapi`` (its answer cache or a fresh call, at that moment) and, when the digest of its
answer is the one the worker sent, replies ``wzc_dapi_u "<id>"`` (unchanged) instead of the
bytes; the worker then serves the bytes it kept. The client therefore always gets the master's
answer of that moment, byte for byte: only a digest equality (SHA-256) lets kept bytes through.

The keys are the answer cache's (function, arguments, user, RBAC permissions, nodes,
broadcasting); a worker keeps at most ``dapi.relay_cache_entries`` answers and
``dapi.relay_cache_bytes`` bytes (the oldest go first; 0 for either keeps none). The digest of
an answer the master sent is checked by the worker itself, off the reactor, before the answer
is kept (never on the path of the request that brought it).
"""

from __future__ import annotations

import collections
import hmac
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from wazuhcluster.dapi.answers import MAX_ANSWER_BYTES, AnswerCache, Key, answer_digest
from wazuhcluster.dapi.codec import DapiRequest, RawAnswer

#: The capability a master announces when it answers ``wzc_dapi_r`` (and a worker when it
#: takes ``wzc_dapi_k``/``wzc_dapi_u`` answers).
REVALIDATE_CAPABILITY = "dapi-revalidate"
#: Length of a digest on the wire (hex SHA-256).
DIGEST_SIZE = 64
_HEX = frozenset(b"0123456789abcdef")


class Unchanged:
    """The master's ``wzc_dapi_u``: the answer is the one the worker offered."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged()
#: The ``ok`` payload of a ``wzc_dapi_r`` whose answer is the worker's kept one.
UNCHANGED_REPLY = b"unchanged"


def valid_digest(digest: bytes) -> bool:
    """Whether ``digest`` is a digest as our nodes write it (64 lowercase hex digits)."""
    return len(digest) == DIGEST_SIZE and _HEX.issuperset(digest)


@attrs.frozen
class Kept:
    """An answer the worker relayed and keeps: its bytes and their digest."""

    data: bytes
    digest: bytes


class RelayCache:
    """The answers a worker keeps for revalidation, by request.

    :param run: runs a blocking callable off the reactor (the node's runner): the digest
        check of an offered answer.
    :param max_entries: how many answers are kept (0: none).
    :param max_bytes: how many bytes they may hold together (0: none).
    """

    _log = Logger()

    def __init__(self, run: Callable[..., Deferred[Any]], max_entries: int,
                 max_bytes: int, tag: str = "Worker") -> None:
        self._run = run
        self.tag = tag
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._kept: collections.OrderedDict[Key, Kept] = collections.OrderedDict()
        self.size = 0
        self.revalidated = 0  # answers served from kept bytes (the master said unchanged)
        self.refused = 0  # offered answers whose digest did not match their bytes

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._kept)

    def key(self, request: DapiRequest) -> Key | None:
        """The request's key (the answer cache's), or None when nothing is kept for it."""
        return AnswerCache.key(request) if self.enabled else None

    def get(self, key: Key) -> Kept | None:
        """The answer kept for ``key`` (most recently used from now on)."""
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
        return kept

    def forget(self, key: Key) -> None:
        kept = self._kept.pop(key, None)
        if kept is not None:
            self.size -= len(kept.data)

    def clear(self) -> None:
        self._kept.clear()
        self.size = 0

    def store(self, key: Key, data: bytes, digest: bytes) -> None:
        """Keep ``data`` (whose digest is ``digest``) for ``key``, within the bounds."""
        self.forget(key)
        if not self.enabled or len(data) > min(self.max_bytes, MAX_ANSWER_BYTES):
            return
        self._kept[key] = Kept(data, digest)
        self.size += len(data)
        while self._kept and (len(self._kept) > self.max_entries
                              or self.size > self.max_bytes):
            _, old = self._kept.popitem(last=False)
            self.size -= len(old.data)

    def offer(self, key: Key, answer: RawAnswer) -> Deferred[None]:
        """Keep the master's keepable ``answer`` once its digest is checked off the reactor
        (an answer whose bytes do not give its digest is not kept)."""
        async def check() -> None:
            digest = answer.digest
            if digest is None or not valid_digest(digest):
                return
            actual = await self._run(answer_digest, answer.data)
            if not hmac.compare_digest(actual, digest):
                self.refused += 1
                self._log.warn("[{tag}] [D API] An answer's digest does not match its "
                               "bytes: not kept.", tag=self.tag)
                return
            self.store(key, answer.data, digest)
        d = Deferred.fromCoroutine(check())
        d.addErrback(lambda f: self._log.failure("[{tag}] [D API] Keeping an answer failed",
                                                 f, tag=self.tag))
        return d
