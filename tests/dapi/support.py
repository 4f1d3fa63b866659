"""A DAPI function environment for tests: a temporary home, an inline agent database, a
Clock, and a DapiContext; helpers to populate agents and to run a native function."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.agents.memory import inline_database, raw
from tests.support import node_config, short_tempdir
from wazuhcluster.agents.keys import KeyEntry, format_client_keys
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.dapi.context import DapiContext

NOW = 1_700_000_000


class DapiEnv:
    """One node's home and database, ready for native functions."""

    def __init__(self, testcase: SynchronousTestCase, role: str = "master") -> None:
        self.testcase = testcase
        self.config = node_config(short_tempdir(testcase), role=role,
                                  node_name="master-node" if role == "master" else "worker1")
        self.home = self.config.home
        self.clock = Clock()
        self.clock.advance(NOW)
        # backend "wazuh-db" (a class attribute of the test case): a stand-in wazuh-db
        self.db = inline_database(self.clock, self.home,
                                  getattr(testcase, "backend", "embedded"))
        testcase.addCleanup(self.db.stopService)
        if hasattr(self.db, "standin"):
            testcase.addCleanup(self.db.standin.close)
        self.node = SimpleNamespace(clock=self.clock, config=self.config, agent_db=self.db)
        self.ctx = DapiContext(node=self.node, config=self.config, agent_db=self.db,
                               run=SynchronousRunner().run)

    @property
    def conn(self) -> Any:
        return raw(self.db)._conn

    def add_agents(self, count: int, **columns: Any) -> list[KeyEntry]:
        """Agents 1..count in client.keys and the database, with ``columns`` set on all."""
        entries = [KeyEntry(i, f"agent{i}", "any", f"{i:064x}") for i in range(1, count + 1)]
        path = os.path.join(self.home, "etc", "client.keys")
        with open(path, "w") as f:
            f.write(format_client_keys(entries))
        raw(self.db).reconcile_keys(entries, NOW - 1000)
        if columns:
            self.set(range(1, count + 1), **columns)
        return entries

    def set(self, ids: Sequence[int] | range, **columns: Any) -> None:
        """Set agent columns directly (``group_`` for the ``group`` column)."""
        for agent_id in ids:
            for column, value in columns.items():
                name = "`group`" if column == "group_" else column
                self.conn.execute(f"UPDATE agent SET {name} = ? WHERE id = ?", (value, agent_id))

    def groups(self, assignments: dict[int, list[str]]) -> None:
        raw(self.db).set_agent_groups(list(assignments.items()), mode="override")

    def mkgroup(self, *names: str) -> None:
        for name in names:
            os.makedirs(os.path.join(self.home, "etc", "shared", name), exist_ok=True)
        raw(self.db).create_groups(list(names))

    def write(self, rel: str, content: str) -> None:
        path = os.path.join(self.home, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)

    def read(self, rel: str) -> str:
        with open(os.path.join(self.home, rel)) as f:
            return f.read()

    def exists(self, rel: str) -> bool:
        return os.path.exists(os.path.join(self.home, rel))

    def call(self, f: Callable[..., Awaitable[Any]], **kwargs: Any) -> Any:
        """Run a native function to completion and return its result (raises its error)."""
        d: Deferred[Any] = Deferred.fromCoroutine(f(self.ctx, **kwargs))  # type: ignore[arg-type]
        results: list[Any] = []
        d.addBoth(results.append)
        self.testcase.assertTrue(results, "the function did not complete synchronously")
        outcome = results[0]
        if isinstance(outcome, Failure):
            outcome.raiseException()
        return outcome
