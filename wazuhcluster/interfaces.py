"""Every zope.interface of wazuhcluster. Implementations are checked with verifyObject."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure


class IPeer(Interface):
    """The other end of one cluster or local-socket connection, as command tables see it."""

    peer_address = Attribute("str: the peer's address, e.g. '127.0.0.1' or 'local'.")
    last_received = Attribute("float: clock seconds when the peer last sent any byte.")
    bytes_received = Attribute("int: bytes received from the peer so far (liveness checks).")

    def request(command: bytes, payload: bytes, timeout: float | None = None) -> Deferred[bytes]:
        """Send a request; fire with the reply payload.

        Fails with RemoteCommandError on an ``err`` reply, TimeoutError after the request
        timeout, or the connection-loss reason if the connection goes away first.
        """

    def notify(command: bytes, payload: bytes) -> Deferred[None]:
        """Send a frame that expects no reply (used only toward local clients)."""

    def delivering(within: float) -> bool:
        """True when data we sent is in flight and the peer's TCP acknowledged some of it in the
        last ``within`` seconds: a slow but live link (False where unknown)."""

    def set_limits(max_frame_payload: int | None = None, max_message: int | None = None) -> None:
        """Change the frame and message limits of this connection (after authentication)."""

    def disconnect(reason: str) -> None:
        """Close the connection, logging ``reason``."""


class ICommandHandler(Interface):
    """Answers the requests arriving on one connection (one object per connection)."""

    def connection_made(peer: IPeer) -> None:
        """The connection is up; ``peer`` sends requests to the other side."""

    def handle(command: bytes, payload: bytes) -> Deferred[Any]:
        """Produce the reply (a Reply, or None for no reply at all).

        Fail with UnknownCommand for commands this role does not serve, or ClusterError for
        expected refusals; any other failure is answered as an internal error and logged.
        """

    def peer_lost(reason: Failure) -> None:
        """The connection is gone; release per-connection state."""


class IBlockingRunner(Interface):
    """Runs blocking callables off the reactor thread."""

    def run(f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Call ``f(*args, **kwargs)`` in a worker thread; fire with its result."""


class IMasterExtension(Interface):
    """A master feature (integrity, agents, ...) plugged into every worker connection."""

    def master_responders(commands: Any) -> dict[bytes, Any]:
        """Extra responders for one worker connection's MasterCommands."""

    def worker_lost(session: Any) -> None:
        """A worker's registration ended; drop its locks and tasks."""

    def health_status(session: Any) -> dict[str, Any]:
        """Fields this feature adds to the worker's ``status`` in get_health."""


class IWorkerExtension(Interface):
    """A worker feature plugged into the master link."""

    def worker_responders(commands: Any) -> dict[bytes, Any]:
        """Extra responders for requests the master sends."""

    def connected(peer: IPeer, capabilities: frozenset[str]) -> None:
        """The master link is up (after hello); ``capabilities`` are the master's."""

    def disconnected() -> None:
        """The master link is gone."""


if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from wazuhcluster.agents.db import (
        AgentInfoBatch,
        AgentInfoSetResult,
        AgentSummary,
        GroupsApplyResult,
        GroupsPage,
        GroupsSetResult,
        Keepalive,
        ReconcileResult,
    )
    from wazuhcluster.agents.keys import KeyEntry


class IAgentPageReader(Interface):
    """An agent database that reads one page of a listing, its count and its formatting as
    one job on its own thread (the embedded database; the DAPI's agent listings use it when
    the node's IAgentDatabase provides it, else :meth:`IAgentDatabase.select` and
    :meth:`IAgentDatabase.count`)."""

    def select_page(sql: str, params: Sequence[str | int | float | None],
                    count_sql: str | None, count_params: Sequence[str | int | float | None],
                    shape: Callable[[list[str], list[tuple[Any, ...]]], Any]
                    ) -> Deferred[tuple[Any, int]]:
        """``(shape(column names, row tuples), total)``: the rows of the read-only ``sql``
        (NULL columns as None) and the first column of ``count_sql`` (the number of rows
        when None), read as ``select`` and ``count`` read them; ``shape`` runs on the
        database's thread, so it must only compute."""

    def generation() -> Deferred[Any]:
        """A value that changes whenever the data may have changed (a row written through
        the database's connection, a commit by any other connection): answers read at one
        generation stay valid while it stays the same."""


class IAgentDatabase(Interface):
    """The node's agent database (embedded: ``queue/db/wazuhcluster-agents.db``), never
    blocking the reactor.

    Every method runs the matching ``wazuhcluster.agents.db.AgentDatabase`` operation on the
    implementation's single database thread, in call order, and returns a Deferred that fires
    (in the reactor thread) with its result or fails with its exception (``sqlite3.Error``,
    ``ValueError``/``PayloadError`` for invalid arguments). See ``wazuhcluster/agents/db.py``
    for the semantics of each operation.
    """

    def idle() -> Deferred[None]:
        """Fires once every operation asked for before it has run (a long one, such as a
        worker's first ``client.keys`` of 200 000 agents, can hold the database thread for
        many seconds on a busy machine): time limits of later operations start there."""

    def get_agent_info_sync(rows: bool = False) -> Deferred[AgentInfoBatch]:
        """Worker: chunks of agents marked for agent-info sync, and their versions.

        ``rows=True``: chunks in the compact rows form (only for a master that announced
        ``agent-info-rows``).
        """

    def mark_agent_info_synced(versions: Sequence[tuple[int, int]]) -> Deferred[int]:
        """Worker: mark sent agents synced unless they changed since; fires with the count."""

    def update_agent_info(agent_id: int, fields: Mapping[str, Any]) -> Deferred[bool]:
        """Change agent-info columns of a local agent and mark it for sync."""

    def record_keepalives(keepalives: Sequence[Keepalive]) -> Deferred[int]:
        """Record keepalives (active, node, time, optional OS/version); fires with the count."""

    def set_agent_info(chunks: Sequence[Any]) -> Deferred[AgentInfoSetResult]:
        """Master: apply agent-info chunks received from a worker (standard chunk texts or
        parsed chunks of the compact rows form)."""

    def create_groups(names: Sequence[str]) -> Deferred[int]:
        """Create missing groups; fires with how many were created."""

    def list_groups() -> Deferred[list[str]]:
        """Names of all groups."""

    def set_agent_groups(assignments: Sequence[tuple[int, Sequence[str]]],
                         mode: str = "override",
                         sync_status: str = "synced") -> Deferred[GroupsSetResult]:
        """Assign groups to agents (modes override, append, empty_only, remove)."""

    def apply_agent_groups_chunks(chunks: Sequence[str], mode: str = "override",
                                  sync_status: str = "synced",
                                  full: bool = False) -> Deferred[GroupsApplyResult]:
        """Worker: apply syn_g_m_w (full=False) or syn_g_m_w_c (full=True) chunks."""

    def sync_agent_groups_get(condition: str | None, now: int, last_id: int = 0,
                              set_synced: bool = False, get_global_hash: bool = False,
                              registration_delta: int = 0) -> Deferred[GroupsPage]:
        """One page of group assignments, as wazuh-db's sync-agent-groups-get."""

    def get_agent_groups_chunks(condition: str, now: int, set_synced: bool = False,
                                get_global_hash: bool = False,
                                registration_delta: int = 0) -> Deferred[list[str]]:
        """Master: every non-empty page of group assignments, as the chunks to push."""

    def global_group_hash() -> Deferred[str | None]:
        """The global group hash (None when no agent has groups)."""

    def recalculate_group_hashes() -> Deferred[int]:
        """Recompute every agent's group CSV and group hash; fires with the number changed."""

    def reconcile_keys(entries: Sequence[KeyEntry], now: int) -> Deferred[ReconcileResult]:
        """Make the agent table agree with parsed client.keys entries."""

    def reconcile_keys_file(path: str, now: int) -> Deferred[ReconcileResult]:
        """Read client.keys at ``path`` (in the database thread) and reconcile with it."""

    def list_agents(node_name: str | None = None) -> Deferred[list[AgentSummary]]:
        """Agents for the CLI, optionally only those of one node."""

    def count_active_agents_by_node() -> Deferred[dict[str, int]]:
        """Active agents per node, agent 000 excluded."""

    def apply_key_changes(entries: Sequence[KeyEntry], removed: Sequence[int],
                          now: int) -> Deferred[ReconcileResult]:
        """Insert or update the agents of ``entries`` and delete ``removed`` (never 000),
        without reading the whole table (enrolment's changes to client.keys)."""

    def registration_status(ids: Sequence[int]) -> Deferred[dict[int, tuple[str, int, int]]]:
        """``(connection_status, disconnection_time, date_add)`` of the listed agents that
        exist, by id (enrolment's replacement rules)."""

    def select(sql: str, params: Sequence[str | int | float | None] = ()
               ) -> Deferred[list[dict[str, Any]]]:
        """One read-only ``SELECT`` over Wazuh's global.db tables (``agent``, ``group``,
        ``belongs``, ``labels``) with positional ``?`` parameters; rows as dicts by column
        name, NULL columns left out (as wazuh-db's ``global sql``). Anything but a single
        SELECT fails with ValueError. Used by the DAPI's agent and group functions."""

    def count(sql: str, params: Sequence[str | int | float | None] = ()) -> Deferred[int]:
        """The first column of the first row of a read-only ``SELECT COUNT(...)`` run as
        :meth:`select` runs it (0 when there is no row). A backend may remember answers
        while its data is unchanged (the embedded database does); never a stale one."""

    def delete_agents(agent_ids: Sequence[int], keys_path: str | None = None,
                      purge: bool = True) -> Deferred[list[int]]:
        """Remove agents (never 000) from ``client.keys`` (``purge=False`` marks the lines
        removed) and from the database; fires with the ids deleted from the database."""

    def delete_groups(names: Sequence[str], sync_status: str = "syncreq"
                      ) -> Deferred[dict[str, list[int]]]:
        """Delete groups (members left without groups get ``default``; group hashes
        recomputed); fires with ``{deleted group: ids of its former members}``."""


class ILocalExtension(Interface):
    """A feature adding commands to the local Unix-socket API."""

    def local_responders(commands: Any) -> dict[bytes, Any]:
        """Extra responders for one local client's LocalCommands."""


class IDistributedAPI(Interface):
    """The node's Distributed API (DAPI): runs a Wazuh framework function where it can be
    answered (locally, on the master, or on the workers that own the agents), as Wazuh 4.7.5
    does (docs/protocol.md, "Distributed API"). Implemented by ``wazuhcluster.dapi``; used by
    the REST API, the control CLI and any feature that needs an answer from another node.

    Functions are named as Wazuh names them, module and qualified name joined by a dot, e.g.
    ``wazuh.agent.get_agents`` or ``wazuh.core.agent.Agent.get_agents_overview``. Only
    functions registered natively (``register``) ever run: nothing named in a request is
    imported, evaluated or instantiated.
    """

    def call(function: str, f_kwargs: Mapping[str, Any] | None = None,
             request_type: str = "local_master", *, wait_for_complete: bool = False,
             current_user: str = "", rbac_permissions: Mapping[str, Any] | None = None,
             broadcasting: bool = False, api_timeout: float | None = None) -> Deferred[Any]:
        """Run ``function`` where ``request_type`` (``local_any`` | ``local_master`` |
        ``distributed_master``) says.

        Fires with the decoded result: a ``wazuhcluster.dapi.results.WazuhResult`` or
        ``AffectedItemsWazuhResult`` (``render()`` gives the API's JSON body). Fails with a
        ``wazuhcluster.dapi.results.WazuhException`` (code, message, remediation, title,
        ``dapi_errors``) for an error raised by the function or by the cluster (3020-3023,
        unknown function, ...).
        """

    def register(function: str, implementation: Any) -> None:
        """Add a native function under its Wazuh dotted name. ``implementation`` is
        ``async def f(ctx: wazuhcluster.dapi.context.DapiContext, **f_kwargs)`` returning a
        result object (or raising a WazuhException). Features register theirs when the node
        is built (e.g. the REST API registers its permission lookup)."""


class IClusterEvents(Interface):
    """What happens in a node, told to observers (the Prometheus metrics, the status page's
    sync history). Features call it through ``node.events``; calls are cheap, synchronous and
    never raise. Times are clock seconds.
    """

    def sync_done(worker: str, kind: str, started: float, ended: float, ok: bool,
                  counts: Mapping[str, int]) -> None:
        """A synchronisation with ``worker`` ended (seen by the master). ``kind``:
        ``integrity_check``, ``integrity_sync`` or ``agent_info``; ``counts`` may hold
        ``created``, ``updated``, ``deleted``, ``bytes`` (pushed) and ``rows`` (agent-info
        rows applied)."""

    def link_traffic(direction: str, frames: int, nbytes: int) -> None:
        """Frames and bytes that went ``in`` or ``out`` on a cluster link."""

    def connection_dropped(reason: str) -> None:
        """A cluster connection ended; ``reason`` is a short label (``keepalive``,
        ``liveness_probe``, ``malformed``, ``peer_closed``, ...)."""

    def dapi_request(function: str, outcome: str) -> None:
        """A DAPI request ran on this node: ``outcome`` is ``ok``, ``error``, ``timeout`` or
        ``unknown_function``."""

    def reactor_lag(seconds: float) -> None:
        """The node's reactor lag since the previous report (``ReactorLag``: the worst of
        the reactor's turns and of its tick's lateness)."""


class ITurnMeter(Interface):
    """Measures the reactor's turns (:class:`wazuhcluster.turns.BoundedPoller`)."""

    def take_worst() -> float:
        """The longest the reactor could not answer anything since the previous call
        (seconds): its longest turn, or how much later than due it woke from a timed-out
        wait; the measure then starts again."""


class IAPIAuth(Interface):
    """What the REST API lends to the pages it serves: its users, tokens and request log."""

    def login(name: str, password: str, address: str) -> Deferred[str]:
        """Check an API user's password (with the API's failed-login blocking); fire with a
        new bearer token, or fail with the API's Problem (401, 403)."""

    def authenticate_token(token: str) -> Deferred[tuple[str, str]]:
        """Fire with ``(user, role)`` for a valid bearer token, or fail with a Problem."""

    def log_request(user: str, address: str, method: str, path: str, status: int,
                    took: float) -> None:
        """One line in ``logs/api.log`` (never a query string, a token or a body)."""


class IWebPage(Interface):
    """A page the REST API serves under its own path (``prefix`` and below), e.g. the status
    page at ``/ui``. Mounted with ``APIResource.mount``."""

    prefix = Attribute("str: the path served, e.g. '/ui'; '/ui/...' goes to the page too.")

    def serve(request: Any, auth: IAPIAuth) -> Deferred[None]:
        """Answer one twisted.web request completely (status, headers, body, finish)."""
