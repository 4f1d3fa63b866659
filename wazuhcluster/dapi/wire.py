"""The DAPI on the wire: ``dapi``/``dapi_res``/``dapi_err`` on the cluster link (both roles)
and ``dapi``/``dapi_fwd``/``get_hash`` on the local socket.

An answer (tagged JSON of a result, a plain value or an exception) travels as a long string
(``new_str``/``str_upd``) then ``dapi_res "<id> <string id>"`` toward a cluster peer, or
``dapi_res "<string id>"`` toward a local client; a failure of the relay itself as
``dapi_err "<id> <text>"`` / ``dapi_err "<text>"``.

Between our own nodes (beyond Wazuh 4.7.5): both roles announce the ``dapi-answers``
capability; toward a peer that announced it, an answer of at most one frame travels as one
``wzc_dapi_a "<id> <answer>"`` request (one round trip instead of three: ``new_str``,
``str_upd``, ``dapi_res``). Bigger answers, and every answer toward a Wazuh peer (which never
announces it), take the long-string path. On the local socket our own clients send
``wzc_dapi`` (payload as ``dapi``) and get the answer as its ``ok`` reply.

Answers revalidated (capability ``dapi-revalidate``, :mod:`wazuhcluster.dapi.revalidate`): the
master sends keepable answers to our workers as ``wzc_dapi_k "<id> <digest> <answer>"``; a
worker asks again with ``wzc_dapi_r "<id> <digest> <request>"`` and gets ``ok "unchanged"``
(or, after :data:`UNCHANGED_GRACE`, ``wzc_dapi_u "<id>"``) when the master's answer of that
moment has that digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wazuhcluster.config import Role
from wazuhcluster.dapi import codec
from wazuhcluster.dapi.codec import CodecError, DapiRequest
from wazuhcluster.dapi.results import WazuhClusterError, WazuhException, WazuhInternalError
from wazuhcluster.dapi.revalidate import (
    DIGEST_SIZE,
    REVALIDATE_CAPABILITY,
    UNCHANGED,
    UNCHANGED_REPLY,
    valid_digest,
)
from wazuhcluster.dapi.service import ADDED, DistributedAPI
from wazuhcluster.errors import ClusterError
from wazuhcluster.interfaces import ILocalExtension, IMasterExtension, IPeer, IWorkerExtension
from wazuhcluster.protocol.chunks import REQUEST_CHUNK
from wazuhcluster.protocol.commands import (
    DAPI,
    DAPI_ANSWER,
    DAPI_EARLY,
    DAPI_ERR,
    DAPI_FWD,
    DAPI_KEEP,
    DAPI_RES,
    DAPI_REVALIDATE,
    DAPI_SYNC,
    DAPI_UNCHANGED,
    EARLY_ANSWER,
    EARLY_IS_ANSWER,
    GET_HASH,
    Reply,
)
from wazuhcluster.protocol.transfers import send_string

Responder = Callable[[bytes], Coroutine[Any, Any, Reply | None]]

#: Directories whose files get_hash reports (relative to the home).
HASHED_DIRS = ("etc/rules", "etc/decoders", "etc/lists")

#: The capability with which a node asks for DAPI answers in one ``wzc_dapi_a`` message.
DAPI_ANSWERS_CAPABILITY = "dapi-answers"
#: The largest request id a ``wzc_dapi_a`` may carry (ours are a few digits).
MAX_REQUEST_ID = 64

_log = Logger()


def inline_fits(request_id: bytes, data: bytes) -> bool:
    """Whether ``wzc_dapi_a "<id> <data>"`` fits in one frame: a frame is what every
    connection's memory share keeps room for (the same size as one ``str_upd``), so the
    receiver never holds more than with a long string."""
    return len(request_id) + 1 + len(data) <= REQUEST_CHUNK


async def encode_answer(node: Any, answer: Any) -> bytes:
    """The tagged JSON bytes of ``answer`` (already bytes for a :class:`codec.RawAnswer`)."""
    try:
        return answer.data if isinstance(answer, codec.RawAnswer) else \
            (await node.run(codec.dumps, answer)).encode()
    except (TypeError, ValueError) as e:
        return codec.dumps(WazuhInternalError(1000, extra_message=f"unencodable result: {e}")
                           ).encode()


def keep_fits(request_id: bytes, digest: bytes, data: bytes) -> bool:
    """Whether ``wzc_dapi_k "<id> <digest> <data>"`` fits in one frame."""
    return len(request_id) + len(digest) + 2 + len(data) <= REQUEST_CHUNK


#: How long the master waits for the answer to a ``wzc_dapi_r`` before replying ``Added``:
#: an answer ready by then and unchanged is the reply itself (``ok "unchanged"``). Far below
#: the link's request timeout; a kept answer is ready within one database-thread round trip.
UNCHANGED_GRACE = 0.5


def unchanged(answer: Any, held: bytes | None) -> bool:
    """Whether ``answer`` is a keepable answer (it carries its digest) whose digest is
    ``held``, the one the worker offered."""
    digest = answer.digest if isinstance(answer, codec.RawAnswer) else None
    return digest is not None and held is not None and hmac.compare_digest(digest, held)


async def deliver_revalidated(node: Any, peer: IPeer, request_id: bytes, answer: Any,
                              held: bytes | None, inline: bool) -> None:
    """Master, toward a worker that announced ``dapi-revalidate``: ``wzc_dapi_u "<id>"``
    when ``answer`` is a keepable one (it carries its digest) whose digest is ``held``, the
    one the worker offered; ``wzc_dapi_k "<id> <digest> <answer>"`` for another keepable
    answer that fits in a frame; anything else as :func:`deliver` sends it."""
    digest = answer.digest if isinstance(answer, codec.RawAnswer) else None
    if digest is None or (held is None and not keep_fits(request_id, digest, answer.data)):
        await deliver(node, peer, request_id, answer, inline)
        return
    if unchanged(answer, held):
        command, payload = DAPI_UNCHANGED, request_id
    elif keep_fits(request_id, digest, answer.data):
        command, payload = DAPI_KEEP, b"%s %s %s" % (request_id, digest, answer.data)
    else:
        await deliver(node, peer, request_id, answer, inline)
        return
    try:
        await peer.request(command, payload)
    except ClusterError as e:
        with contextlib.suppress(ClusterError):
            await peer.request(DAPI_ERR, request_id + b" " + str(e).encode())


async def deliver(node: Any, peer: IPeer, request_id: bytes | None, answer: Any,
                  inline: bool = False) -> None:
    """Send ``answer`` to ``peer``: long string + ``dapi_res`` (``dapi_err`` if that fails),
    or one ``wzc_dapi_a`` when ``inline`` (the peer announced ``dapi-answers``) and it fits
    in a frame."""
    prefix = request_id + b" " if request_id is not None else b""
    data = await encode_answer(node, answer)
    if inline and request_id is not None and inline_fits(request_id, data):
        try:
            await peer.request(DAPI_ANSWER, prefix + data)
        except ClusterError as e:
            with contextlib.suppress(ClusterError):
                await peer.request(DAPI_ERR, prefix + str(e).encode())
        return
    try:
        string_id = await send_string(peer, data)
        if string_id.startswith(b"Error"):
            raise ClusterError(3016, string_id.decode("utf-8", "replace"))
        await peer.request(DAPI_RES, prefix + string_id)
    except ClusterError as e:
        with contextlib.suppress(ClusterError):
            await peer.request(DAPI_ERR, prefix + str(e).encode())


def _decode_request(body: bytes) -> DapiRequest | WazuhException:
    try:
        return DapiRequest.from_json(body)
    except (CodecError, UnicodeDecodeError) as e:
        return WazuhInternalError(3036, extra_message=str(e)[:500])


#: Requests up to this size are decoded in the reactor thread: a few kB of JSON decode in
#: tens of microseconds, less than a hand-off to the pool and back costs.
INLINE_REQUEST = 16 * 1024


async def decode_request(node: Any, body: bytes) -> DapiRequest | WazuhException:
    """The request in ``body`` (or the error that says why not), big ones decoded off the
    reactor."""
    if len(body) <= INLINE_REQUEST:
        return _decode_request(body)
    decoded: DapiRequest | WazuhException = await node.run(_decode_request, body)
    return decoded


class _ClusterSide:
    """``dapi``/``dapi_res``/``dapi_err`` on the cluster link, for either role."""

    def __init__(self, api: DistributedAPI, node: Any) -> None:
        self._api = api
        self._node = node
        self._tasks: dict[str, set[Deferred[None]]] = {}

    #: announced in ``wzc_caps`` (by the worker, and in the master's answer to it)
    capabilities: tuple[str, ...] = (DAPI_ANSWERS_CAPABILITY,)

    def responders_for(self, peer_of: Callable[[], IPeer | None], peer_name: Callable[[], str],
                       strings: Any,
                       peer_caps: Callable[[], frozenset[str]] = frozenset
                       ) -> dict[bytes, Responder]:
        async def dapi(payload: bytes) -> Reply:
            request_id, _, body = payload.partition(b" ")
            if not request_id:
                raise ClusterError(3036, "dapi needs '<id> <request>'")
            request = await decode_request(self._node, body)
            name = peer_name()
            origin = f"{name}*{request_id.decode('ascii', 'replace')}"
            self._spawn(name, self._serve(peer_of(), request_id, request, origin,
                                          peer_caps()))
            return Reply.ok(ADDED)

        async def dapi_res(payload: bytes) -> Reply:
            request_id, _, string_id = payload.partition(b" ")
            data = strings.take(string_id.strip())
            if not self._api.answered(request_id.decode("ascii", "replace"),
                                      codec.RawAnswer(data)):
                raise ClusterError(3032, f"no pending DAPI request {request_id[:64]!r}")
            return Reply.ok(b"Response forwarded to worker")

        async def dapi_answer(payload: bytes) -> Reply:
            request_id, _, data = payload.partition(b" ")
            if not request_id or len(request_id) > MAX_REQUEST_ID:
                raise ClusterError(3036, "wzc_dapi_a needs '<id> <answer>'")
            if not self._api.answered(request_id.decode("ascii", "replace"),
                                      codec.RawAnswer(data)):
                raise ClusterError(3032, f"no pending DAPI request {request_id[:64]!r}")
            return Reply.ok(b"Response received")

        async def dapi_err(payload: bytes) -> Reply:
            request_id, _, text = payload.partition(b" ")
            error = codec.error_from_text(text.decode("utf-8", "replace"))
            if not self._api.answered(request_id.decode("ascii", "replace"), error):
                raise ClusterError(3032, f"no pending DAPI request {request_id[:64]!r}")
            return Reply.ok(b"Response received")

        return {DAPI: dapi, DAPI_RES: dapi_res, DAPI_ERR: dapi_err, DAPI_ANSWER: dapi_answer}

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Run the serving of a peer's request; cancelled when that peer goes away."""
        task = Deferred.fromCoroutine(work)
        if not task.called:
            tasks = self._tasks.setdefault(name, set())
            tasks.add(task)
            task.addBoth(_passthrough(lambda: tasks.discard(task)))
        task.addErrback(_ignore_cancel)
        task.addErrback(lambda f: _log.failure("[D API] Relay failed", f))

    async def _serve(self, peer: IPeer | None, request_id: bytes,
                     request: DapiRequest | WazuhException, origin: str,
                     caps: frozenset[str] = frozenset()) -> None:
        answer = request if isinstance(request, WazuhException) else \
            await self._api.handle(request, origin, raw=True)
        if peer is None:
            return
        inline = DAPI_ANSWERS_CAPABILITY in caps
        if self._revalidates and inline and REVALIDATE_CAPABILITY in caps:
            await deliver_revalidated(self._node, peer, request_id, answer, None, inline)
        else:
            await deliver(self._node, peer, request_id, answer, inline)

    #: whether this side answers ``wzc_dapi_r`` and sends ``wzc_dapi_u``/``wzc_dapi_k``
    #: (the master only: a worker never keeps what it sends)
    _revalidates = False

    def lost(self, name: str, error: WazuhException) -> None:
        """The peer ``name`` is gone: its requests are cancelled, ours to it fail now."""
        self._api.peer_gone(name, error)
        for task in list(self._tasks.pop(name, set())):
            task.cancel()


@implementer(IMasterExtension)
class DapiMaster(_ClusterSide):
    """The DAPI commands of one worker connection on the master."""

    capabilities = (DAPI_ANSWERS_CAPABILITY, REVALIDATE_CAPABILITY)
    _revalidates = True

    def master_responders(self, commands: Any) -> dict[bytes, Responder]:
        def peer_caps() -> frozenset[str]:
            return commands.session.capabilities if commands.session else frozenset()

        def peer_name() -> str:
            return commands.session.name if commands.session else ""

        responders = self.responders_for(lambda: commands.peer, peer_name, commands.strings,
                                         peer_caps)

        async def dapi_revalidate(payload: bytes) -> Reply:
            """``wzc_dapi_r "<id> <digest> <request>"``: ``dapi`` from a worker holding an
            answer to it with that digest. When the answer is ready within
            :data:`UNCHANGED_GRACE` seconds and has that digest, the reply itself says so
            (``ok "unchanged"``: one message, nothing follows); otherwise the reply is
            ``dapi``'s and the answer follows (``wzc_dapi_u`` if unchanged after all)."""
            request_id, _, rest = payload.partition(b" ")
            digest, _, body = rest.partition(b" ")
            if not request_id or len(request_id) > MAX_REQUEST_ID or not valid_digest(digest):
                raise ClusterError(3036, "wzc_dapi_r needs '<id> <digest> <request>'")
            request = await decode_request(self._node, body)
            name = peer_name()
            origin = f"{name}*{request_id.decode('ascii', 'replace')}"
            quick: Deferred[bool] = Deferred()
            timer = self._api.clock.callLater(
                UNCHANGED_GRACE, lambda: None if quick.called else quick.callback(False))

            async def serve() -> None:
                answer = request if isinstance(request, WazuhException) else \
                    await self._api.handle(request, origin, raw=True)
                if not quick.called:
                    same = unchanged(answer, digest)
                    quick.callback(same)
                    if same:
                        return  # the reply carries it
                peer = commands.peer
                if peer is not None:
                    await deliver_revalidated(self._node, peer, request_id, answer, digest,
                                              DAPI_ANSWERS_CAPABILITY in peer_caps())
            self._spawn(name, serve())
            try:
                same = await quick
            finally:
                if timer.active():
                    timer.cancel()
            return Reply.ok(UNCHANGED_REPLY if same else ADDED)

        responders[DAPI_REVALIDATE] = dapi_revalidate
        return responders

    def worker_lost(self, session: Any) -> None:
        self.lost(session.name, WazuhClusterError(
            3022, extra_message=f"node {session.name!r} disconnected"))

    def health_status(self, session: Any) -> dict[str, Any]:
        return {}


@implementer(IWorkerExtension)
class DapiWorker(_ClusterSide):
    """The DAPI commands the master sends to this worker."""

    @property
    def capabilities(self) -> tuple[str, ...]:  # type: ignore[override]
        """``dapi-revalidate`` only while this worker keeps relayed answers."""
        if self._api.relayed.enabled:
            return (DAPI_ANSWERS_CAPABILITY, REVALIDATE_CAPABILITY)
        return (DAPI_ANSWERS_CAPABILITY,)

    def worker_responders(self, commands: Any) -> dict[bytes, Responder]:
        responders = self.responders_for(lambda: commands.peer, lambda: "master",
                                         commands.strings,
                                         lambda: self._node.master_capabilities)

        async def dapi_unchanged(payload: bytes) -> Reply:
            """``wzc_dapi_u "<id>"``: the answer is the one whose digest we offered."""
            request_id = payload.strip()
            if not request_id or len(request_id) > MAX_REQUEST_ID:
                raise ClusterError(3036, "wzc_dapi_u needs '<id>'")
            if not self._api.answered(request_id.decode("ascii", "replace"), UNCHANGED):
                raise ClusterError(3032, f"no pending DAPI request {request_id[:64]!r}")
            return Reply.ok(b"Response received")

        async def dapi_keep(payload: bytes) -> Reply:
            """``wzc_dapi_k "<id> <digest> <answer>"``: an answer we may keep."""
            # the answer is copied out of the payload once (no intermediate "<digest>
            # <answer>" slice)
            space = payload.find(b" ", 0, MAX_REQUEST_ID + 1)
            request_id = payload[:space] if space > 0 else b""
            digest = payload[space + 1:space + 1 + DIGEST_SIZE] if request_id else b""
            if not request_id or not valid_digest(digest) \
                    or payload[space + 1 + DIGEST_SIZE:space + 2 + DIGEST_SIZE] != b" ":
                raise ClusterError(3036, "wzc_dapi_k needs '<id> <digest> <answer>'")
            data = payload[space + 2 + DIGEST_SIZE:]
            if not self._api.answered(request_id.decode("ascii", "replace"),
                                      codec.RawAnswer(data, digest)):
                raise ClusterError(3032, f"no pending DAPI request {request_id[:64]!r}")
            return Reply.ok(b"Response received")

        responders[DAPI_UNCHANGED] = dapi_unchanged
        responders[DAPI_KEEP] = dapi_keep
        return responders

    def connected(self, peer: IPeer, capabilities: frozenset[str]) -> None:
        """Nothing to do: requests find the link through the node."""

    def disconnected(self) -> None:
        self.lost("master", WazuhClusterError(
            3023, extra_message="connection with the master lost"))
        self._api.relayed.clear()  # the next master may be another node: start afresh


def ruleset_hashes(home: str) -> dict[str, str]:
    """``{relative path: blake2b hex}`` of the user rules, decoders and CDB lists (blocking)."""
    out: dict[str, str] = {}
    for sub in HASHED_DIRS:
        top = os.path.join(home, sub)
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                digest = hashlib.blake2b()
                try:
                    with open(path, "rb") as f:
                        while block := f.read(1 << 20):
                            digest.update(block)
                except OSError:
                    continue
                out[os.path.relpath(path, home)] = digest.hexdigest()
    return out


@implementer(ILocalExtension)
class DapiLocal:
    """``dapi``, ``dapi_fwd`` (master) and ``get_hash`` on the local socket."""

    def __init__(self, api: DistributedAPI, node: Any) -> None:
        self._api = api
        self._node = node

    @property
    def _is_master(self) -> bool:
        return bool(self._node.config.role is Role.MASTER)

    def local_responders(self, commands: Any) -> dict[bytes, Responder]:
        tasks: set[Deferred[None]] = set()

        def cancel_all() -> None:
            for task in list(tasks):
                task.cancel()
        on_lost = getattr(commands, "on_lost", None)
        if on_lost is not None:
            on_lost.append(cancel_all)

        def spawn(work: Coroutine[Any, Any, None]) -> None:
            task = Deferred.fromCoroutine(work)
            if not task.called:
                tasks.add(task)
                task.addBoth(_passthrough(lambda: tasks.discard(task)))
            task.addErrback(_ignore_cancel)
            task.addErrback(lambda f: _log.failure("[{tag}] [D API] Request failed", f,
                                                   tag=commands.tag))

        async def admitted(payload: bytes) -> DapiRequest:
            """A request this node takes: well formed (3036), and with a master to send
            it to when it must go there (3023)."""
            request = await decode_request(self._node, payload)
            if isinstance(request, WazuhException):
                raise ClusterError(3036, request.extra_message
                                   if isinstance(request.extra_message, str) else None)
            if (not self._is_master and self._node.peer is None
                    and request.request_type != "local_any"):
                raise ClusterError(3023)
            return request

        async def dapi(payload: bytes) -> Reply:
            request = await admitted(payload)
            spawn(self._answer(commands, self._api.handle(request, str(commands.client_id),
                                                          raw=True)))
            return Reply.ok(ADDED)

        async def dapi_fwd(payload: bytes) -> Reply:
            if not self._is_master:
                raise ClusterError(3000, "dapi_fwd is only served by the master")
            node_name, _, body = payload.partition(b" ")
            name = node_name.decode("utf-8", "replace")
            own = name == self._node.config.node_name
            session = None if own else self._node.registry.get(name)
            if not own and session is None:
                raise ClusterError(3022, f"node {name!r} is not connected")
            request = await decode_request(self._node, body)
            if isinstance(request, WazuhException):
                raise ClusterError(3036, request.extra_message
                                   if isinstance(request.extra_message, str) else None)
            share = request.copy(from_cluster=True)
            origin = str(commands.client_id)
            if session is None:
                work = self._api.run_local(share, origin, raw=True)
            else:
                work = self._api.send_to(session.peer, name, share, raw=True)
            spawn(self._answer(commands, work))
            return Reply.ok(b"Request forwarded to worker node")

        async def get_hash(payload: bytes) -> Reply:
            hashes = await self._node.run(ruleset_hashes, self._node.config.home)
            return Reply.ok(codec.dumps(hashes).encode())

        async def answered(payload: bytes, early: Callable[[bytes], None] | None) -> Any:
            """The answer to the request in ``payload``, run for this client (cancelled
            when it goes away)."""
            request = await admitted(payload)
            task = Deferred.fromCoroutine(self._api.handle(request, str(commands.client_id),
                                                           raw=True, early=early))
            if not task.called:
                tasks.add(task)  # type: ignore[arg-type]
                task.addBoth(_passthrough(lambda: tasks.discard(task)))  # type: ignore[arg-type]
            try:
                return await task
            except WazuhException as e:
                return e
            except CancelledError:
                raise ClusterError(3009, "the local client went away") from None

        async def dapi_sync(payload: bytes) -> Reply:
            return Reply.ok(await encode_answer(self._node, await answered(payload, None)))

        async def dapi_early(payload: bytes) -> Reply:
            """``wzc_dapi_e``: ``wzc_dapi`` from a client that takes an early answer. When
            this worker revalidates a kept answer with the master, the kept bytes go to the
            client at once (``wzc_early``, no reply), while the master is asked; the reply
            ``ok "="`` then says they are the answer, which it is only when the master said
            "unchanged" (the answer is that very kept object). Any other answer is the
            reply itself, as for ``wzc_dapi``: the client drops the early bytes."""
            sent: list[bytes] = []

            def early(data: bytes) -> None:
                peer = commands.peer
                if peer is None or not getattr(peer, "connected_ok", True):
                    return
                sent.append(data)
                peer.notify(EARLY_ANSWER, data).addErrback(_ignore_lost)
            answer = await answered(payload, early)
            if sent and isinstance(answer, codec.RawAnswer) and answer.data is sent[0]:
                return Reply.ok(EARLY_IS_ANSWER)
            return Reply.ok(await encode_answer(self._node, answer))

        return {DAPI: dapi, DAPI_FWD: dapi_fwd, GET_HASH: get_hash, DAPI_SYNC: dapi_sync,
                DAPI_EARLY: dapi_early}

    async def _answer(self, commands: Any, work: Coroutine[Any, Any, Any]) -> None:
        try:
            answer = await work
        except WazuhException as e:
            answer = e
        peer = commands.peer
        if peer is not None:
            await deliver(self._node, peer, None, answer)


def _passthrough(action: Callable[[], Any]) -> Callable[[Any], Any]:
    def run(result: Any) -> Any:
        action()
        return result
    return run


def _ignore_lost(failure: Failure) -> None:
    """A frame toward a local client that went away meanwhile: nothing to do."""
    failure.trap(ClusterError)


def _ignore_cancel(failure: Failure) -> None:
    from twisted.internet.defer import CancelledError
    failure.trap(CancelledError)


def install(node: Any, reactor: Any) -> DistributedAPI:
    """Give ``node`` its DAPI: the native functions, the cluster-link and local commands."""
    from wazuhcluster.dapi.functions import ALL_FUNCTIONS
    from wazuhcluster.dapi.functions.cluster import FUNCTIONS as CLUSTER_FUNCTIONS

    functions: dict[str, Any] = {**ALL_FUNCTIONS, **CLUSTER_FUNCTIONS}
    api = DistributedAPI(node, reactor, functions)
    node.dapi = api
    side: Any = DapiMaster(api, node) if node.config.role is Role.MASTER else DapiWorker(api,
                                                                                        node)
    node.extensions.append(side)
    node.local_extensions.append(DapiLocal(api, node))
    return api
