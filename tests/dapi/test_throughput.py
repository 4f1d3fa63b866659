"""What makes a DAPI request cheaper keeps its answer the same: the master's routing query
(index walk instead of a scan), the answer cache (identical bytes, invalidated by any write
and by the clock's second), small requests decoded inline."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from tests.agents.memory import raw
from tests.dapi.support import NOW, DapiEnv
from tests.dapi.test_service import Env, request, result_of
from wazuhcluster.agents.schema import NODE_NAMES_SQL
from wazuhcluster.agents.threaded import DatabaseNotRunning
from wazuhcluster.dapi import codec
from wazuhcluster.dapi.codec import DapiRequest, RawAnswer
from wazuhcluster.dapi.functions import ALL_FUNCTIONS
from wazuhcluster.dapi.results import (
    AffectedItemsWazuhResult,
    WazuhException,
    WazuhResourceNotFound,
)
from wazuhcluster.dapi.service import DistributedAPI
from wazuhcluster.dapi.wire import INLINE_REQUEST, decode_request
from wazuhcluster.errors import ConfigError

DISTINCT = "SELECT DISTINCT node_name FROM agent"


def first_names(rows: list[dict[str, Any]]) -> list[str]:
    """Node names in first-seen order (as the DAPI's routing keeps them)."""
    out: dict[str, None] = {}
    for row in rows:
        out.setdefault(str(row.get("node_name") or ""), None)
    return list(out)


class NodeNamesQueryTests(SynchronousTestCase):
    """``NODE_NAMES_SQL`` gives the names ``SELECT DISTINCT node_name`` gives, in its order,
    without reading the whole index."""

    def setUp(self) -> None:
        self.env = DapiEnv(self)
        self.db = raw(self.env.db)

    def same(self) -> list[str]:
        expected = first_names(self.db.select(DISTINCT, []))
        got = first_names(self.db.select(NODE_NAMES_SQL, []))
        self.assertEqual(got, expected)
        return got

    def test_empty_and_manager_only(self) -> None:
        self.env.conn.execute("DELETE FROM agent")
        self.assertEqual(self.same(), [])
        self.env.add_agents(1)
        self.env.conn.execute("DELETE FROM agent WHERE id != 0")
        self.same()

    def test_statuses_nodes_and_nulls(self) -> None:
        self.env.add_agents(60)
        statuses = ["active", "disconnected", "pending", "never_connected"]
        nodes: list[str | None] = ["w2", "master-node", None, "w1", "", "unknown", "w10"]
        for i in range(1, 61):
            self.env.set([i], connection_status=statuses[i % 4], node_name=nodes[i % 7])
        names = self.same()
        self.assertEqual(set(names), {"w2", "master-node", "", "w1", "unknown", "w10"})
        # a status whose agents all lack a node name, and one with a single agent
        self.env.set(range(1, 61), node_name=None)
        self.env.set([7], connection_status="pending", node_name="zeta")
        self.assertEqual(sorted(self.same()), ["", "unknown", "zeta"])  # 000: unknown

    def test_walks_the_index(self) -> None:
        """No step of the plan scans the agent table or the whole index."""
        plan = self.env.conn.execute("EXPLAIN QUERY PLAN " + NODE_NAMES_SQL).fetchall()
        details = [str(row[-1]) for row in plan]
        self.assertFalse([d for d in details if d.startswith("SCAN agent")], details)
        self.assertTrue([d for d in details if "agent_status_node" in d], details)


def raw_answer(env: Env, req: DapiRequest) -> Any:
    """``handle`` with ``raw``, as the wire calls it (a RawAnswer or an object)."""
    return result_of(Deferred.fromCoroutine(env.api.handle(req, "w1*1", raw=True)))


def fresh_bytes(env: Env, req: DapiRequest) -> bytes:
    """The answer's bytes computed without the cache."""
    answer = result_of(Deferred.fromCoroutine(env.api.handle(req, "w1*1")))
    return codec.dumps(answer).encode()


class AnswerCacheTests(SynchronousTestCase):
    """Kept answers are the bytes the function gives now, for the same database and second."""

    def setUp(self) -> None:
        self.env = Env(self)
        self.env.dapi_env.add_agents(30, connection_status="active", node_name="master-node")
        self.page = request("wazuh.agent.get_agents", limit=10, offset=5)

    def test_repeat_is_a_hit_with_the_same_bytes(self) -> None:
        first = raw_answer(self.env, self.page)
        self.assertIsInstance(first, RawAnswer)
        self.assertEqual(first.data, fresh_bytes(self.env, self.page))
        executed = self.env.api.executed
        again = raw_answer(self.env, self.page)
        self.assertEqual(again.data, first.data)
        self.assertEqual(self.env.api.executed, executed)  # the function did not run
        self.assertEqual((self.env.api.answers.hits, self.env.api.answers.misses), (1, 1))
        # other arguments, another user: other entries
        other = request("wazuh.agent.get_agents", limit=10, offset=6)
        self.assertNotEqual(raw_answer(self.env, other).data, first.data)
        as_user = request("wazuh.agent.get_agents", limit=10, offset=5)
        as_user.current_user = "someone"
        raw_answer(self.env, as_user)
        self.assertEqual(self.env.api.answers.misses, 3)

    def test_any_write_invalidates(self) -> None:
        before = raw_answer(self.env, self.page).data
        self.env.dapi_env.set([6], name="renamed")  # a row written through the connection
        after = raw_answer(self.env, self.page)
        self.assertEqual(self.env.api.answers.hits, 0)
        self.assertNotEqual(after.data, before)
        self.assertIn(b'"renamed"', after.data)
        self.assertEqual(after.data, fresh_bytes(self.env, self.page))

    def test_commit_of_another_connection_invalidates(self) -> None:
        raw_answer(self.env, self.page)
        path = raw(self.env.dapi_env.db)._conn.execute("PRAGMA database_list").fetchone()[2]
        other = sqlite3.connect(path)
        self.addCleanup(other.close)
        other.execute("UPDATE agent SET name = 'elsewhere' WHERE id = 7")
        other.commit()
        after = raw_answer(self.env, self.page)
        self.assertEqual(self.env.api.answers.hits, 0)
        self.assertIn(b'"elsewhere"', after.data)

    def test_next_second_is_a_miss(self) -> None:
        """Timeframes are relative to the second the function runs in."""
        self.env.dapi_env.set(range(1, 31), last_keepalive=NOW - 100)
        recent = request("wazuh.agent.get_agents", limit=5, q="lastKeepAlive<2m")
        self.assertIn(b'"total_affected_items": 30', raw_answer(self.env, recent).data)
        self.env.clock.advance(30)  # keepalives now 130 s old: none within 2 minutes
        answer = raw_answer(self.env, recent)
        self.assertEqual(self.env.api.answers.hits, 0)
        self.assertIn(b'"total_affected_items": 0', answer.data)
        self.assertEqual(answer.data, fresh_bytes(self.env, recent))

    def test_write_while_running_is_not_kept(self) -> None:
        """A write between the function's start and its end: answered, not kept."""
        real = ALL_FUNCTIONS["wazuh.agent.get_agents"]

        async def writes_meanwhile(ctx: Any, **kwargs: Any) -> Any:
            result = await real(ctx, **kwargs)
            self.env.dapi_env.set([1], name="changed")
            return result
        self.env.api.register("wazuh.agent.get_agents", writes_meanwhile)
        self.assertIsInstance(raw_answer(self.env, self.page), RawAnswer)
        self.assertEqual(len(self.env.api.answers), 0)

    def test_concurrent_identical_requests_run_once(self) -> None:
        gate: Deferred[None] = Deferred()
        real = ALL_FUNCTIONS["wazuh.agent.get_agents"]
        runs: list[int] = []

        async def gated(ctx: Any, **kwargs: Any) -> Any:
            runs.append(1)
            await gate
            return await real(ctx, **kwargs)
        self.env.api.register("wazuh.agent.get_agents", gated)
        answers = [Deferred.fromCoroutine(self.env.api.handle(self.page, f"w1*{i}", raw=True))
                   for i in range(3)]
        for d in answers:
            self.assertNoResult(d)
        gate.callback(None)
        datas = {self.successResultOf(d).data for d in answers}
        self.assertEqual(len(datas), 1)
        self.assertEqual(runs, [1])
        self.assertEqual(self.env.api.answers.hits, 2)

    def test_concurrent_identical_requests_share_an_error(self) -> None:
        gate: Deferred[None] = Deferred()
        runs: list[int] = []

        async def fails(ctx: Any, **kwargs: Any) -> Any:
            runs.append(1)
            await gate
            raise WazuhResourceNotFound(1701)
        self.env.api.register("wazuh.agent.get_agents", fails)
        answers = [Deferred.fromCoroutine(self.env.api.handle(self.page, f"w1*{i}", raw=True))
                   for i in range(2)]
        gate.callback(None)
        for d in answers:
            self.assertEqual(self.successResultOf(d).code, 1701)
        self.assertEqual(runs, [1])
        self.assertEqual(len(self.env.api.answers), 0)
        # other timeouts: another request
        patient = request("wazuh.agent.get_agents", limit=10, offset=5)
        patient.wait_for_complete = True
        self.assertNotEqual(self.env.api.answers.key(patient),
                            self.env.api.answers.key(self.page))

    def test_waiters_of_a_cancelled_request_run_their_own(self) -> None:
        gate: Deferred[None] = Deferred()
        real = ALL_FUNCTIONS["wazuh.agent.get_agents"]
        runs: list[int] = []

        async def gated(ctx: Any, **kwargs: Any) -> Any:
            runs.append(1)
            if len(runs) == 1:
                await gate
            return await real(ctx, **kwargs)
        self.env.api.register("wazuh.agent.get_agents", gated)
        first = Deferred.fromCoroutine(self.env.api.handle(self.page, "w1*1", raw=True))
        second = Deferred.fromCoroutine(self.env.api.handle(self.page, "w1*2", raw=True))
        first.cancel()
        self.failureResultOf(first, CancelledError)
        self.assertEqual(self.successResultOf(second).data, fresh_bytes(self.env, self.page))
        self.assertEqual(len(runs), 3)  # the cancelled one, the waiter's own, fresh_bytes

    def test_not_kept(self) -> None:
        """Errors, other functions, and the wazuh-db backend are never kept (in-process
        callers: InProcessCallerTests)."""
        bad = request("wazuh.agent.get_agents", sort={"fields": ["nope"], "order": "asc"})
        for _ in range(2):
            self.assertIsInstance(raw_answer(self.env, bad), WazuhException)
        node = request("wazuh.cluster.get_node_wrapper", "local_any")
        for _ in range(2):
            self.assertNotIsInstance(raw_answer(self.env, node), RawAnswer)
        self.assertEqual(len(self.env.api.answers), 0)
        self.assertEqual(self.env.api.answers.hits, 0)

    def test_database_stopped(self) -> None:
        """No generation to read: the function runs and reports the error, nothing kept."""
        raw_answer(self.env, self.page)
        self.env.dapi_env.db.stopService()
        answer = raw_answer(self.env, self.page)
        self.assertIsInstance(answer, WazuhException)
        self.assertEqual(self.env.api.answers.hits, 0)
        self.assertEqual(len(self.flushLoggedErrors(DatabaseNotRunning)), 1)

    def test_bounded(self) -> None:
        for offset in range(40):
            raw_answer(self.env, request("wazuh.agent.get_agents", limit=1, offset=offset))
        self.assertEqual(len(self.env.api.answers), 32)
        answers = self.env.api.answers
        one = answers.size // 32
        answers.max_total = one * 10 + one // 2  # room for ten of them
        raw_answer(self.env, request("wazuh.agent.get_agents", limit=1, offset=40))
        self.assertLess(len(answers), 13)
        self.assertGreater(len(answers), 8)
        self.assertLessEqual(answers.size, answers.max_total)
        # the newest stayed, the oldest went
        raw_answer(self.env, request("wazuh.agent.get_agents", limit=1, offset=40))
        self.assertEqual(answers.hits, 1)
        raw_answer(self.env, request("wazuh.agent.get_agents", limit=1, offset=0))
        self.assertEqual(answers.hits, 1)
        answers.max_bytes = 100
        raw_answer(self.env, request("wazuh.agent.get_agents", limit=20))
        raw_answer(self.env, request("wazuh.agent.get_agents", limit=20))
        self.assertEqual(answers.hits, 1)

    def test_setting(self) -> None:
        settings = self.env.dapi_env.config.settings
        settings["dapi"] = {"answer_cache_entries": 0}
        api = DistributedAPI(self.env.node, self.env.clock, ALL_FUNCTIONS)
        self.env.api = api
        for _ in range(2):
            self.assertIsInstance(raw_answer(self.env, self.page), AffectedItemsWazuhResult)
        self.assertEqual(api.executed, 2)
        settings["dapi"] = {"answer_cache_entries": -1}
        with self.assertRaises(ConfigError) as caught:
            DistributedAPI(self.env.node, self.env.clock, ALL_FUNCTIONS)
        self.assertIn("dapi.answer_cache_entries", str(caught.exception))


class WazuhDbBackendTests(SynchronousTestCase):
    backend = "wazuh-db"

    def test_no_generation_no_cache(self) -> None:
        env = Env(self)
        env.dapi_env.add_agents(3)
        page = request("wazuh.agent.get_agents", limit=2)
        for _ in range(2):
            self.assertNotIsInstance(raw_answer(env, page), RawAnswer)
        self.assertEqual(len(env.api.answers), 0)


class InlineDecodeTests(SynchronousTestCase):
    """Small requests are decoded in the reactor thread, big ones in the pool."""

    def test_sizes(self) -> None:
        ran: list[Any] = []

        def run(f: Any, *args: Any) -> Deferred[Any]:
            ran.append(f)
            return succeed(f(*args))
        node = SimpleNamespace(run=run)
        small = request("wazuh.agent.get_agents", limit=1).to_json().encode()
        decoded = result_of(Deferred.fromCoroutine(decode_request(node, small)))
        self.assertEqual(decoded.f_kwargs, {"limit": 1})
        self.assertEqual(ran, [])
        big = request("wazuh.agent.get_agents", search="x" * (INLINE_REQUEST + 1))
        decoded = result_of(Deferred.fromCoroutine(decode_request(
            node, big.to_json().encode())))
        self.assertEqual(decoded.f_kwargs["search"], "x" * (INLINE_REQUEST + 1))
        self.assertEqual(len(ran), 1)
        bad = result_of(Deferred.fromCoroutine(decode_request(node, b"{nope")))
        self.assertEqual(bad.code, 3036)


class InProcessCallerTests(SynchronousTestCase):
    """The master's own REST API (``DistributedAPI.call``) reads objects: a kept answer is
    decoded for it, a computed one is handed over as it is, and both equal what the
    function gives without the cache."""

    def setUp(self) -> None:
        self.env = Env(self)
        self.env.dapi_env.add_agents(30, connection_status="active", node_name="master-node")
        self.kwargs = {"limit": 10, "offset": 5}

    def call(self) -> Any:
        return result_of(self.env.api.call("wazuh.agent.get_agents", self.kwargs))

    def fresh(self) -> bytes:
        return fresh_bytes(self.env, request("wazuh.agent.get_agents", **self.kwargs))

    def test_repeat_is_decoded_from_the_kept_bytes(self) -> None:
        first = self.call()
        self.assertIsInstance(first, AffectedItemsWazuhResult)  # the computed object
        executed = self.env.api.executed
        second = self.call()
        self.assertIsInstance(second, AffectedItemsWazuhResult)
        self.assertIsNot(second, first)  # fresh objects: a caller may change its copy
        self.assertEqual(self.env.api.executed, executed)  # the function did not run
        self.assertEqual((self.env.api.answers.hits, self.env.api.answers.misses), (1, 1))
        expected = self.fresh()
        self.assertEqual(codec.dumps(first).encode(), expected)
        self.assertEqual(codec.dumps(second).encode(), expected)
        self.assertEqual(second.render(), first.render())

    def test_a_write_between_calls_is_seen(self) -> None:
        self.call()
        self.env.dapi_env.set([6], name="renamed")
        after = self.call()
        self.assertEqual(self.env.api.answers.hits, 0)
        self.assertIn(b'"renamed"', codec.dumps(after).encode())

    def test_cache_off_runs_every_time(self) -> None:
        self.env.api.answers.max_entries = 0
        executed = self.env.api.executed
        self.call()
        self.call()
        self.assertEqual(self.env.api.executed, executed + 2)
        self.assertEqual(self.env.api.answers.hits, 0)

    def test_errors_are_raised_not_kept(self) -> None:
        self.kwargs = {"sort": {"fields": ["nope"], "order": "asc"}}
        executed = self.env.api.executed
        for _ in range(2):
            failure = self.failureResultOf(
                self.env.api.call("wazuh.agent.get_agents", self.kwargs))
            self.assertIsInstance(failure.value, WazuhException)
        self.assertEqual(self.env.api.executed, executed + 2)
        self.assertEqual(self.env.api.answers.hits, 0)
