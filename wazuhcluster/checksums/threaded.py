"""A service-owned, bounded thread pool for blocking work (hashing, zlib, file I/O, crypto)."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from wazuhcluster.interfaces import IBlockingRunner


@implementer(IBlockingRunner)
class ThreadedRunner(Service):
    """Runs blocking callables on a private pool (never the reactor's shared one).

    :param reactor: used to deliver results back to the reactor thread.
    :param max_threads: the pool's size (``process_pool_size``).
    """

    name = "blocking-pool"

    def __init__(self, reactor: IReactorFromThreads, max_threads: int,
                 pool_name: str = "wazuhcluster") -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=max_threads, name=pool_name)

    def startService(self) -> None:
        super().startService()
        self._pool.start()

    def stopService(self) -> None:
        super().stopService()
        self._pool.stop()

    def run(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Call ``f`` on the pool; the Deferred fires on the reactor thread."""
        return deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)


@implementer(IBlockingRunner)
class SynchronousRunner:
    """Test double: runs the callable inline and returns a fired Deferred."""

    def run(self, f: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """Call ``f`` now."""
        from twisted.internet.defer import fail

        try:
            return succeed(f(*args, **kwargs))
        except BaseException:  # noqa: BLE001 - handed to the caller as a Failure
            return fail()
