"""The node's Distributed API: where a request runs, how it travels, and its local execution.

Decision (whoever holds the request object): run locally for ``local_any``, for
``local_master`` on the master, and for ``distributed_master`` once ``from_cluster`` is set;
a worker sends anything else to the master with ``dapi "<id> <json>"``; the master routes a
``distributed_master`` request to the nodes that own its agents (or the nodes named by
``node_id``/``node_list``), runs its own share locally, sends the other shares to the workers
with ``dapi "<id> <json>"``, OR-merges the answers and re-applies pagination and sorting.
Answers travel as long strings (``new_str``/``str_upd``) referenced by ``dapi_res "<id>
<string id>"``; failures of the relay itself by ``dapi_err "<id> <text>"``.

Beyond Wazuh 4.7.5 (one request at a time per queue): requests run concurrently, at most
``dapi.max_concurrent`` at once and ``dapi.max_concurrent_per_origin`` per origin (a worker,
the master, or the node's local clients), waiting origins served in turn.
"""

from __future__ import annotations

import collections
import json
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from wazuhcluster.agents.schema import NODE_NAMES_SQL
from wazuhcluster.config import Role
from wazuhcluster.dapi import codec
from wazuhcluster.dapi.answers import AnswerCache
from wazuhcluster.dapi.codec import DapiRequest, FunctionName
from wazuhcluster.dapi.context import DapiContext
from wazuhcluster.dapi.query import id_condition, process_array
from wazuhcluster.dapi.results import (
    AffectedItemsWazuhResult,
    WazuhClusterError,
    WazuhException,
    WazuhInternalError,
)
from wazuhcluster.dapi.revalidate import (
    REVALIDATE_CAPABILITY,
    UNCHANGED,
    UNCHANGED_REPLY,
    Kept,
    RelayCache,
)
from wazuhcluster.errors import ClusterError
from wazuhcluster.interfaces import IAgentPageReader, IDistributedAPI, IPeer
from wazuhcluster.protocol.commands import DAPI_REVALIDATE, GET_NODES
from wazuhcluster.settings import section

#: Settings of the ``dapi`` section of etc/wazuhcluster.yaml, with their defaults.
DAPI_SETTINGS: dict[str, Any] = {
    "max_concurrent": 32,
    "max_concurrent_per_origin": 8,
    "request_timeout": 10,
    # encoded answers of agent listings kept per request while the agent database and the
    # second stay the same (wazuhcluster/dapi/answers.py); 0 keeps none
    "answer_cache_entries": 32,
    # answers a worker relayed from the master, kept to be revalidated by digest instead of
    # crossing the link again (wazuhcluster/dapi/revalidate.py); 0 for either keeps none
    "relay_cache_entries": 32,
    "relay_cache_bytes": 32 * 1024 * 1024,
}
#: Settings for which 0 is valid (it turns the feature off).
ZERO_OFF = frozenset({"answer_cache_entries", "relay_cache_entries", "relay_cache_bytes"})

ADDED = b"Added request to API requests queue"
LOCAL_ORIGIN = "local"

Implementation = Callable[..., Coroutine[Any, Any, Any]]
#: Told the bytes of a kept answer while the master revalidates it (:meth:`send_to`).
Early = Callable[[bytes], None]


class FairLimiter:
    """At most ``total`` holders at once and ``per_origin`` per origin; waiters are served
    one origin after the other (round robin), in arrival order within an origin."""

    def __init__(self, total: int, per_origin: int) -> None:
        self.total = max(1, total)
        self.per_origin = max(1, min(per_origin, self.total))
        self.running: collections.Counter[str] = collections.Counter()
        self._waiting: collections.OrderedDict[str, collections.deque[Deferred[None]]] = (
            collections.OrderedDict())

    @property
    def active(self) -> int:
        return sum(self.running.values())

    def acquire(self, origin: str) -> Deferred[None]:
        """Fire when ``origin`` may run one more request."""
        if self.active < self.total and self.running[origin] < self.per_origin \
                and not self._waiting.get(origin):
            self.running[origin] += 1
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d

        def forget(d: Deferred[None]) -> None:
            queue = self._waiting.get(origin)
            if queue is not None and d in queue:
                queue.remove(d)
                if not queue:
                    del self._waiting[origin]

        waiter: Deferred[None] = Deferred(forget)
        self._waiting.setdefault(origin, collections.deque()).append(waiter)
        return waiter

    def release(self, origin: str) -> None:
        """One request of ``origin`` ended; start the next waiters that may run."""
        self.running[origin] -= 1
        if self.running[origin] <= 0:
            del self.running[origin]
        self._wake()

    def _wake(self) -> None:
        progress = True
        while progress and self.active < self.total and self._waiting:
            progress = False
            for origin in list(self._waiting):
                if self.active >= self.total:
                    return
                if self.running[origin] >= self.per_origin:
                    continue
                queue = self._waiting.pop(origin)
                waiter = queue.popleft()
                if queue:
                    self._waiting[origin] = queue  # to the back: the others go first
                self.running[origin] += 1
                progress = True
                waiter.callback(None)


def origin_key(origin: str) -> str:
    """The fairness key of an origin chain: the peer before ``*``, else local clients."""
    return origin.split("*", 1)[0] if "*" in origin else LOCAL_ORIGIN


@implementer(IDistributedAPI)
class DistributedAPI:
    """The DAPI of one role node (master or worker).

    :param node: the role node.
    :param clock: the reactor's time (timeouts).
    :param functions: native functions, by Wazuh dotted name.
    """

    _log = Logger()

    def __init__(self, node: Any, clock: IReactorTime,
                 functions: Mapping[str, Implementation] | None = None) -> None:
        self._node = node
        self._clock = clock
        self.config = node.config
        settings = section(node.config.settings, "dapi", DAPI_SETTINGS)
        for key in DAPI_SETTINGS:
            value = settings[key]
            zero_ok = key in ZERO_OFF
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                    or (value == 0 and not zero_ok):
                from wazuhcluster.errors import ConfigError
                raise ConfigError(f"etc/wazuhcluster.yaml: dapi.{key} = {value!r} is invalid: "
                                  "expected a positive number"
                                  + (" or 0" if zero_ok else ""))
        self.settings = settings
        self.limiter = FairLimiter(int(settings["max_concurrent"]),
                                   int(settings["max_concurrent_per_origin"]))
        self._functions: dict[str, Implementation] = dict(functions or {})
        #: Requests this node sent to a peer: id -> (peer name, answer).
        self._pending: dict[str, tuple[str, Deferred[Any]]] = {}
        self.executed = 0  # requests run locally (for tests and stats)
        self.answers = AnswerCache(lambda: getattr(node, "agent_db", None), clock,
                                   lambda f, *a: node.run(f, *a),
                                   int(settings["answer_cache_entries"]))
        #: a worker's relayed answers, revalidated with a master that can (revalidate.py)
        self.relayed = RelayCache(lambda f, *a: node.run(f, *a),
                                  int(settings["relay_cache_entries"]),
                                  int(settings["relay_cache_bytes"]), self.tag)

    @property
    def is_master(self) -> bool:
        return bool(self.config.role is Role.MASTER)

    @property
    def tag(self) -> str:
        return "Master" if self.is_master else f"Worker {self.config.node_name}"

    # -- IDistributedAPI -------------------------------------------------------------------
    def register(self, function: str, implementation: Any) -> None:
        """Add a native function under its Wazuh dotted name."""
        self._functions[function] = implementation

    def registered(self) -> list[str]:
        """Names of every native function."""
        return sorted(self._functions)

    def call(self, function: str, f_kwargs: Mapping[str, Any] | None = None,
             request_type: str = "local_master", *, wait_for_complete: bool = False,
             current_user: str = "", rbac_permissions: Mapping[str, Any] | None = None,
             broadcasting: bool = False, api_timeout: float | None = None) -> Deferred[Any]:
        """Run ``function`` where ``request_type`` says; fail with the WazuhException."""
        if request_type not in codec.REQUEST_TYPES:
            return Deferred.fromCoroutine(_raise(WazuhInternalError(
                1000, extra_message=f"unknown request_type {request_type!r}")))
        request = DapiRequest(f=FunctionName.from_dotted(function),
                              f_kwargs=dict(f_kwargs or {}), request_type=request_type,
                              wait_for_complete=wait_for_complete, current_user=current_user,
                              rbac_permissions=dict(rbac_permissions or {"rbac_mode": "black"}),
                              broadcasting=broadcasting, api_timeout=api_timeout,
                              **codec.request_fields(function))

        async def go() -> Any:
            result = await self.handle(request, LOCAL_ORIGIN, cached=True)
            if isinstance(result, BaseException):
                raise result
            return result
        return Deferred.fromCoroutine(go())

    # -- the decision ------------------------------------------------------------------------
    async def handle(self, request: DapiRequest, origin: str, raw: bool = False,
                     cached: bool = False, early: Early | None = None) -> Any:
        """Answer ``request`` (a result, a plain value, or the WazuhException as a value;
        with ``raw``, an answer relayed from a peer may stay encoded, as a RawAnswer; with
        ``cached``, an in-process caller's answer run here may come from the answer cache,
        decoded; ``early``: see :meth:`send_to`)."""
        if (self.is_master and not request.nodes and not request.from_cluster
                and names_nodes(request)):
            request = request.copy(nodes=self.all_node_names())  # as Wazuh's API fills it
        try:
            if (request.request_type == "local_any"
                    or (request.request_type == "local_master" and self.is_master)
                    or (request.request_type == "distributed_master" and request.from_cluster)):
                return await self.run_local(request, origin, raw, cached)
            if self.is_master:
                if request.request_type == "distributed_master":
                    return await self.route(request, origin, raw)
                return await self.run_local(request, origin, raw, cached)
            return await self.ask_master(request, raw, early)
        except WazuhException as e:
            return e
        except ClusterError as e:
            return WazuhClusterError(e.code, extra_message=e.extra_message)

    async def run_local(self, request: DapiRequest, origin: str, raw: bool = False,
                        cached: bool = False) -> Any:
        """Run the native function (bounded per origin, ``api_timeout`` unless
        ``wait_for_complete``): the exception it raises is the answer. The node's
        ``events`` are told the function and the outcome. With ``raw`` (the answer goes on
        the wire as it is), a successful answer may come encoded, as a RawAnswer, from the
        answer cache (:mod:`wazuhcluster.dapi.answers`); with ``cached`` (an in-process
        caller, e.g. the REST API on the master) it may come from that cache decoded:
        decoding a kept page costs less than reading, formatting and tagging it again."""
        if raw or cached:
            answer = await self.answers.answer(request,
                                               lambda: self._run_local(request, origin),
                                               objects=not raw)
        else:
            answer = await self._run_local(request, origin)
        events = getattr(self._node, "events", None)
        if events is not None:
            name = request.f.dotted
            if name not in self._functions:
                name, outcome = "unknown", "unknown_function"  # a bounded label set
            elif not isinstance(answer, BaseException):
                outcome = "ok"
            elif getattr(answer, "code", None) == 3021:
                outcome = "timeout"
            else:
                outcome = "error"
            events.dapi_request(name, outcome)
        return answer

    async def _run_local(self, request: DapiRequest, origin: str) -> Any:
        name = request.f.dotted
        implementation = self._functions.get(name)
        if implementation is None:
            self._log.warn("[{tag}] [D API] Refused request for unknown function {name!r}.",
                           tag=self.tag, name=name[:200])
            return codec.unknown_function(name)
        kwargs = dict(request.f_kwargs)
        if kwargs.get("agent_list") == "*":
            del kwargs["agent_list"]
        ctx = DapiContext.for_node(self._node, current_user=request.current_user,
                                   rbac_permissions=dict(request.rbac_permissions),
                                   nodes=tuple(request.nodes),
                                   broadcasting=request.broadcasting)
        key = origin_key(origin)
        await self.limiter.acquire(key)
        collected = False
        try:
            self.executed += 1
            work: Deferred[Any] = Deferred.fromCoroutine(_call(implementation, ctx, kwargs))
            if not request.wait_for_complete:
                timeout = max(float(request.api_timeout or 0),
                              float(self.settings["request_timeout"]))
                work.addTimeout(timeout, self._clock)
            try:
                return await work
            except TimeoutError:
                return WazuhInternalError(3021, extra_message=name)
            except WazuhException as e:
                return e
            except TypeError as e:
                return WazuhInternalError(1000, extra_message=f"{name}: {e}")
            except CancelledError:
                raise
            except GeneratorExit:
                collected = True  # garbage-collected while suspended: wake nothing up
                raise
            except Exception as e:  # noqa: BLE001 - any failure of f is its answer
                self._log.failure("[{tag}] [D API] Error executing {name}", tag=self.tag,
                                  name=name)
                return WazuhInternalError(1000, extra_message=f"{type(e).__name__}: {e}")
        finally:
            if not collected:
                self.limiter.release(key)

    # -- worker -> master ---------------------------------------------------------------------
    async def ask_master(self, request: DapiRequest, raw: bool = False,
                         early: Early | None = None) -> Any:
        """Worker: send the request to the master and wait for its answer.

        A request made here that names nodes (or asks a ``wazuh.cluster`` function) carries
        the cluster's node names in ``nodes``, as Wazuh's API fills it: a Wazuh 4.7.5
        master only answers for nodes listed there (1730 "Node does not exist" otherwise)."""
        peer = self._node.peer
        if peer is None:
            raise WazuhClusterError(3023)
        if not request.nodes and not request.from_cluster and names_nodes(request):
            request = request.copy(nodes=await self._master_node_names())
        return await self.send_to(peer, "master", request, raw, early)

    async def _master_node_names(self) -> list[str]:
        """The cluster's node names, as the master answers ``get_nodes``."""
        try:
            raw = await self._node.request_master(GET_NODES, json.dumps(GET_NODES_ALL).encode())
            answer = json.loads(raw)
            if isinstance(answer, str):  # some answers are a JSON text holding the JSON
                answer = json.loads(answer)
            return [str(n["name"]) for n in answer["items"]]
        except ClusterError as e:
            raise WazuhClusterError(e.code, extra_message=e.extra_message) from None
        except (ValueError, KeyError, TypeError) as e:
            raise WazuhClusterError(3018, extra_message=f"get_nodes answer: {e}") from None

    async def send_to(self, peer: IPeer, peer_name: str, request: DapiRequest,
                      raw: bool = False, early: Early | None = None) -> Any:
        """Send ``dapi "<id> <json>"`` on ``peer`` and wait for ``dapi_res``/``dapi_err``
        (decoded, unless ``raw``).

        A worker whose master announced ``dapi-revalidate`` sends ``wzc_dapi_r "<id>
        <digest> <json>"`` instead when it keeps an answer to the same request; the master's
        ``wzc_dapi_u`` (unchanged) then means the kept bytes (revalidate.py). ``early`` is
        then given the kept bytes as soon as ``wzc_dapi_r`` is on its way, so that its
        caller can pass them on while the master is asked (they are the answer only if this
        returns them: a RawAnswer whose ``data`` is that very object)."""
        request_id = uuid.uuid4().hex
        answer: Deferred[Any] = Deferred()
        key = self.relayed.key(request) if self._revalidating(peer_name) else None
        held: Kept | None = self.relayed.get(key) if key is not None else None
        # toward a master of ours (it revalidates), the request's bytes as they came: it
        # decodes them as this node did (a Wazuh master gets the request encoded here)
        body = request.wire if key is not None and request.wire is not None \
            else request.to_json().encode()
        if held is not None:
            command = DAPI_REVALIDATE
            payload = b"%s %s %s" % (request_id.encode(), held.digest, body)
        else:
            command, payload = b"dapi", b"%s %s" % (request_id.encode(), body)
        self._pending[request_id] = (peer_name, answer)
        try:
            try:
                replied = peer.request(command, payload)
                if held is not None and early is not None:
                    early(held.data)
                reply = await replied
            except ClusterError as e:
                if e.code in (3022, 3023):
                    raise WazuhClusterError(e.code, extra_message=e.extra_message) from None
                detail = e.extra_message if e.code == 3018 else str(e)  # said once
                raise WazuhClusterError(3018, extra_message=detail) from None
            if held is not None and reply == UNCHANGED_REPLY:
                answer.callback(UNCHANGED)  # the reply said it: nothing follows
            if not request.wait_for_complete and not answer.called:
                answer.addTimeout(self.config.intervals.timeout_dapi_request, self._clock)
            try:
                value = await answer
            except TimeoutError:
                raise WazuhClusterError(3021, extra_message=f"no answer from {peer_name}"
                                        ) from None
        finally:
            self._pending.pop(request_id, None)
        if value is UNCHANGED:
            if held is None:  # the master said "unchanged" to a request that offered nothing
                value = WazuhInternalError(3036, extra_message="unchanged answer to a request "
                                           "that offered no digest")
            else:
                self.relayed.revalidated += 1
                value = codec.RawAnswer(held.data, held.digest)
        elif key is not None and isinstance(value, codec.RawAnswer) \
                and value.digest is not None:
            self.relayed.offer(key, value)
        if isinstance(value, codec.RawAnswer) and not raw:
            try:
                value = await self._node.run(codec.loads, value.data)
            except codec.CodecError as e:
                value = WazuhInternalError(3036, extra_message=str(e)[:500])
        return value

    @property
    def clock(self) -> IReactorTime:
        return self._clock

    def _revalidating(self, peer_name: str) -> bool:
        """Whether requests to ``peer_name`` may offer kept answers: a worker's, to a master
        that announced ``dapi-revalidate``."""
        return (not self.is_master and peer_name == "master" and self.relayed.enabled
                and REVALIDATE_CAPABILITY in getattr(self._node, "master_capabilities", ()))

    def answered(self, request_id: str, value: Any) -> bool:
        """A peer answered request ``request_id`` (a decoded value or an exception)."""
        entry = self._pending.get(request_id)
        if entry is None or entry[1].called:
            return False
        entry[1].callback(value)
        return True

    def peer_gone(self, peer_name: str, error: WazuhException) -> None:
        """Every request waiting on ``peer_name`` fails at once with ``error``."""
        for _request_id, (name, answer) in list(self._pending.items()):
            if name == peer_name and not answer.called:
                answer.callback(error)

    # -- master routing ------------------------------------------------------------------------
    async def solver_nodes(self, request: DapiRequest) -> dict[str, list[str]]:
        """Node name -> agent ids the request concerns on it (docs/protocol.md)."""
        kwargs = request.f_kwargs
        db = self._node.agent_db
        agent_key = "agent_id" if "agent_id" in kwargs else (
            "agent_list" if "agent_list" in kwargs else None)
        node_filter = kwargs.get("node_id")
        if agent_key is not None and db is not None:
            agents = kwargs[agent_key]
            params: list[Any] = []
            if agents == "*":
                sql = "SELECT id, node_name FROM agent"
                wanted: list[str] = []
            else:
                wanted = [str(a) for a in (agents if isinstance(agents, list) else [agents])]
                numbers = [int(a) for a in wanted if str(a).isdigit()]
                sql = ("SELECT id, node_name FROM agent WHERE "
                       + id_condition(numbers, params) if numbers
                       else "SELECT id, node_name FROM agent WHERE 0")
            rows = await db.select(sql, params)
            found: dict[str, str] = {}
            for row in rows:
                found[f"{int(row['id']):03d}"] = str(row.get("node_name") or "")
            mapping: dict[str, list[str]] = {}
            for agent_id, node in sorted(found.items()):
                mapping.setdefault(node, []).append(agent_id)
            missing = [a for a in wanted if _agent_text(a) not in found]
            if missing:
                mapping.setdefault(self.config.node_name, []).extend(missing)
            if node_filter:
                names = node_filter if isinstance(node_filter, list) else [node_filter]
                mapping = {n: ids for n, ids in mapping.items() if n in names}
                for n in names:
                    mapping.setdefault(str(n), [])
            return mapping
        node_list = kwargs.get("node_list")
        if node_filter or (node_list is not None and node_list != "*"):
            given = node_filter if node_filter else node_list
            return {str(n): [] for n in (given if isinstance(given, list) else [given])}
        if request.broadcasting or node_list == "*" or db is None:
            return {}  # every node
        # the embedded database walks its (connection_status, node_name) index instead of
        # reading all of it: same names, same order (NODE_NAMES_SQL)
        rows = await db.select(NODE_NAMES_SQL if IAgentPageReader.providedBy(db)
                               else "SELECT DISTINCT node_name FROM agent", [])
        return {str(r.get("node_name") or ""): [] for r in rows}

    def all_node_names(self) -> list[str]:
        return [n["name"] for n in self._node.node_list()]

    async def route(self, request: DapiRequest, origin: str, raw: bool = False) -> Any:
        """Master: run a ``distributed_master`` request on every node concerned; merge."""
        kwargs = request.f_kwargs
        mapping = await self.solver_nodes(request)
        known = self.all_node_names()
        if not mapping:  # nodes named explicitly are kept: unknown ones become failed items
            mapping = {n: [] for n in known}
        own = self.config.node_name
        merged: dict[str, list[str]] = {}
        for node, ids in mapping.items():
            target = own if node in ("unknown", "", "None") else node
            merged.setdefault(target, []).extend(ids)
        agent_key = "agent_id" if "agent_id" in kwargs else (
            "agent_list" if "agent_list" in kwargs else None)
        several = len(merged) > 1
        shares: list[tuple[str, DapiRequest]] = []
        for node, ids in merged.items():
            share = request.copy(from_cluster=True)
            share.f_kwargs.pop("node_id", None)
            share.f_kwargs.pop("node_list", None)
            if agent_key is not None and ids:
                single = agent_key == "agent_id" and not isinstance(kwargs[agent_key], list)
                share.f_kwargs[agent_key] = ids[0] if single and len(ids) == 1 else ids
            if several:  # only the keys the caller gave: not every function takes them
                offset = _int(kwargs.get("offset"), 0)
                limit = kwargs.get("limit")
                if "offset" in kwargs:
                    share.f_kwargs["offset"] = 0
                if isinstance(limit, int) and not isinstance(limit, bool):
                    share.f_kwargs["limit"] = offset + limit
            shares.append((node, share))
        raw = raw and len(shares) == 1
        answers = await _gather([self._run_share(node, share, origin, raw)
                                 for node, share in shares])
        results: list[Any] = []
        for (node, _share), answer in zip(shares, answers, strict=True):
            # a node not connected, or whose link failed while the request was being
            # sent (3018), is a failed item of its own: the other nodes' answers stand
            if isinstance(answer, WazuhClusterError) and answer.code in (3018, 3022, 3023):
                failed = AffectedItemsWazuhResult(none_msg="Could not reach some nodes")
                failed.add_failed_item(id_=node, error=answer)
                failed.total_affected_items = 0
                answer = failed
            results.append(answer)
        if len(results) == 1:
            return results[0]
        response = results[0]
        for other in results[1:]:
            try:
                response = response | other
            except (TypeError, WazuhException) as e:
                if isinstance(e, WazuhException):
                    return e
                response = other
        if isinstance(response, AffectedItemsWazuhResult):
            _reapply(response, kwargs)
        return response

    async def _run_share(self, node: str, share: DapiRequest, origin: str,
                         raw: bool = False) -> Any:
        try:
            if node == self.config.node_name:
                return await self.run_local(share, origin, raw)
            session = self._node.registry.get(node)
            if session is None:
                return WazuhClusterError(3022, extra_message=f"node {node!r} is not connected")
            return await self.send_to(session.peer, node, share, raw)
        except WazuhException as e:
            return e


#: What ``get_nodes`` is asked with to learn every node's name (cluster_control -l's).
GET_NODES_ALL = {"filter_node": None, "offset": 0, "limit": None, "sort": None,
                 "search": None, "select": None, "filter_type": "all"}


def names_nodes(request: DapiRequest) -> bool:
    """Whether Wazuh's API would send ``request`` with the cluster's node names: it names
    nodes (``node_id``, ``node_list``, ``filter_node``) or is a ``wazuh.cluster`` function."""
    return (request.f.module == "wazuh.cluster"
            or any(k in request.f_kwargs for k in ("node_id", "node_list", "filter_node")))


def _agent_text(value: Any) -> str:
    text = str(value)
    return f"{int(text):03d}" if text.isdigit() else text


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _reapply(result: AffectedItemsWazuhResult, kwargs: Mapping[str, Any]) -> None:
    """Offset, limit, sort and select of the request applied to the merged items."""
    sort = kwargs.get("sort")
    if sort is None and kwargs.get("fields"):
        sort = {"fields": kwargs.get("fields"), "order": kwargs.get("order", "asc")}
    try:
        data = process_array(result.affected_items, offset=kwargs.get("offset", 0) or 0,
                             limit=kwargs.get("limit"), sort=sort, select=kwargs.get("select"))
    except WazuhException:
        return
    result.affected_items = list(data["items"])


async def _call(implementation: Implementation, ctx: DapiContext,
                kwargs: dict[str, Any]) -> Any:
    return await implementation(ctx, **kwargs)


async def _raise(error: BaseException) -> Any:
    raise error


async def _gather(coroutines: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Run coroutines concurrently; cancelling the gather cancels them all."""
    from twisted.internet.defer import gatherResults

    deferreds = [Deferred.fromCoroutine(c) for c in coroutines]
    try:
        return list(await gatherResults(deferreds, consumeErrors=True))
    except CancelledError:
        for d in deferreds:
            d.cancel()
        raise
