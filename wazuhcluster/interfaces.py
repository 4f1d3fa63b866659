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

    def request(command: bytes, payload: bytes, timeout: float | None = None) -> Deferred[bytes]:
        """Send a request; fire with the reply payload.

        Fails with RemoteCommandError on an ``err`` reply, TimeoutError after the request
        timeout, or the connection-loss reason if the connection goes away first.
        """

    def notify(command: bytes, payload: bytes) -> Deferred[None]:
        """Send a frame that expects no reply (used only toward local clients)."""

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
