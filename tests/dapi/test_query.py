"""Wazuh query parameters: parsing, SQL compilation, and the same on lists."""

from __future__ import annotations

import sqlite3
from typing import Any, ClassVar

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.dapi.query import (
    Condition,
    Junction,
    compile_agent_query,
    filter_array_by_query,
    parse_q,
    parse_search,
    parse_sort,
    process_array,
    timeframe_seconds,
    unify_version,
)
from wazuhcluster.dapi.results import WazuhError


class Parsing(SynchronousTestCase):

    def test_q_precedence_and_groups(self) -> None:
        self.assertEqual(parse_q("a=1;b=2,c=3"), Junction("or", (
            Junction("and", (Condition("a", "=", "1"), Condition("b", "=", "2"))),
            Condition("c", "=", "3"))))
        self.assertEqual(parse_q("a=1;(b=2,c~x)"), Junction("and", (
            Condition("a", "=", "1"),
            Junction("or", (Condition("b", "=", "2"), Condition("c", "~", "x"))))))
        self.assertEqual(parse_q("os.name=Windows (10);x!=null"), Junction("and", (
            Condition("os.name", "=", "Windows (10)"), Condition("x", "!=", None))))
        self.assertEqual(parse_q("x=[a,b]"), Condition("x", "=", "[a,b]"))

    def test_q_errors(self) -> None:
        for q, code in (("", 1407), ("a", 1407), ("a=", 1407), ("(a=1", 1407), ("a=1)", 1407),
                        ("a=1;", 1407), ("a=>1", 1409), ("a==1", 1409)):
            exc = self.assertRaises(WazuhError, parse_q, q)
            self.assertEqual(exc.code, code, q)

    def test_sort_and_search_forms(self) -> None:
        self.assertEqual(parse_sort("+name,-ip,id"), [("name", True), ("ip", False), ("id", True)])
        self.assertEqual(parse_sort({"fields": ["a", "b"], "order": "desc"}),
                         [("a", False), ("b", False)])
        self.assertEqual(parse_search("-x"), ("x", True))
        self.assertEqual(parse_search({"value": "x", "negation": 0}), ("x", False))
        self.assertRaises(WazuhError, parse_sort, {"fields": ["a"], "order": "up"})

    def test_timeframes_and_versions(self) -> None:
        self.assertEqual(timeframe_seconds("1d2h"), 93600)
        self.assertEqual(timeframe_seconds("30"), 30)
        self.assertEqual(self.assertRaises(WazuhError, timeframe_seconds, "soon").code, 1411)
        self.assertEqual(unify_version("4.7.5"), "Wazuh v4.7.5")
        self.assertEqual(unify_version("v4.7.5"), "Wazuh v4.7.5")
        self.assertEqual(unify_version("wazuh 4.7.5"), "wazuh v4.7.5")


class Compilation(SynchronousTestCase):
    """The compiled SQL runs on a real agent table and never embeds user text."""

    def setUp(self) -> None:
        from wazuhcluster.agents.schema import configure_connection, create_schema

        self.conn = sqlite3.connect(":memory:")
        configure_connection(self.conn)
        create_schema(self.conn, 100)
        rows = [(1, "alpha", "active", "n1", 990, "g1,g2"), (2, "beta", "active", "n2", 10, "g2"),
                (3, "gamma", "disconnected", "n1", 500, None)]
        self.conn.executemany("INSERT INTO agent (id, name, connection_status, node_name,"
                              " last_keepalive, `group`, date_add) VALUES (?,?,?,?,?,?,1)", rows)

    def ids(self, **kwargs: object) -> list[int]:
        query = compile_agent_query(now=1000, **kwargs)  # type: ignore[arg-type]
        return [r[0] for r in self.conn.execute(query.sql, query.params)]

    def test_filters(self) -> None:
        self.assertEqual(self.ids(q="group=g2"), [1, 2])
        self.assertEqual(self.ids(q="group!=g1;id!=0"), [2, 3])
        self.assertEqual(self.ids(q="group~g"), [1, 2])
        self.assertEqual(self.ids(q="NAME=ALPHA".replace("NAME", "name")), [1])
        self.assertEqual(self.ids(q="lastKeepAlive>100s"), [2, 3])
        self.assertEqual(self.ids(filters={"node_name": ["n1", "n2"], "status": "active"}), [1, 2])
        self.assertEqual(self.ids(filters={"status": "all"}), [0, 1, 2, 3])
        self.assertEqual(self.ids(filters={"status": None, "group": "null"}), [0, 3])
        self.assertEqual(self.ids(agent_ids=["002", "003", "x"]), [2, 3])
        self.assertEqual(self.ids(agent_ids=[]), [])
        self.assertEqual(self.ids(search="amm"), [3])
        self.assertEqual(self.ids(sort="-lastKeepAlive", limit=2, offset=1), [1, 3])

    def test_big_id_lists_use_few_variables(self) -> None:
        contiguous = [f"{i:03d}" for i in range(1, 50001)]
        query = compile_agent_query(now=1000, agent_ids=contiguous)
        self.assertEqual(len(query.count_params), 2)
        self.assertEqual(self.ids(agent_ids=contiguous), [1, 2, 3])
        scattered = [str(i) for i in range(3, 100000, 2)]
        query = compile_agent_query(now=1000, agent_ids=scattered)
        self.assertEqual(len(query.count_params), 1)
        self.assertEqual(self.ids(agent_ids=scattered), [3])
        self.assertEqual(self.ids(agent_ids=["1", "3", "4"]), [1, 3])

    def test_count_ignores_pagination(self) -> None:
        query = compile_agent_query(now=1000, limit=1, q="id>0")
        self.assertEqual(self.conn.execute(query.count_sql, query.count_params).fetchone()[0], 3)

    def test_values_are_parameters(self) -> None:
        query = compile_agent_query(now=1000, q="name=x'--", search="y\"z",
                                    filters={"node_name": "a' OR '1'='1"})
        for text in ("x'--", "a' OR", "y\"z", "y_z"):
            self.assertNotIn(text, query.sql)
        self.assertEqual([r for r in self.conn.execute(query.sql, query.params)], [])


class Arrays(SynchronousTestCase):

    items: ClassVar[list[dict[str, Any]]] = [
             {"name": "b", "n": 2, "os": {"platform": "linux"}, "tags": ["x", "y"]},
             {"name": "a", "n": 10, "os": {"platform": "windows"}, "tags": ["z"]},
             {"name": "c", "n": 1, "os": {"platform": "linux"}, "tags": []}]

    def test_sort_select_paginate(self) -> None:
        out = process_array(self.items, sort_by=["n"], select=["name"], limit=2, offset=1,
                            required_fields=["n"])
        self.assertEqual(out, {"items": [{"n": 2, "name": "b"}, {"n": 10, "name": "a"}],
                               "totalItems": 3})
        out = process_array(self.items, sort="-os.platform,+name", select="os.platform")
        self.assertEqual(out["items"], [{"os": {"platform": "windows"}},
                                        {"os": {"platform": "linux"}},
                                        {"os": {"platform": "linux"}}])

    def test_search_q_distinct(self) -> None:
        self.assertEqual(process_array(self.items, search_text="WIN")["totalItems"], 1)
        self.assertEqual(process_array(self.items, search_text="win",
                                       complementary_search=True)["totalItems"], 2)
        self.assertEqual(process_array(self.items, q="n>1;os.platform=linux")["items"],
                         [self.items[0]])
        self.assertEqual(process_array(self.items, q="tags=z")["items"], [self.items[1]])
        out = process_array(self.items, select=["os.platform"], distinct=True)
        self.assertEqual(out["totalItems"], 2)

    def test_errors(self) -> None:
        for kwargs, code in (({"limit": 0}, 1406), ({"limit": 100001}, 1405),
                             ({"offset": -2}, 1400), ({"sort_by": ["zz"]}, 1403),
                             ({"select": ["zz"], "allowed_select_fields": ["name"]}, 1724),
                             ({"sort_by": ["n"], "sort_ascending": "yes"}, 1402)):
            exc = self.assertRaises(WazuhError, process_array, self.items, **kwargs)
            self.assertEqual(exc.code, code, kwargs)
        exc = self.assertRaises(WazuhError, filter_array_by_query, "zz=1", self.items, ["name"])
        self.assertEqual(exc.code, 1408)
