"""Result objects and exceptions of the DAPI: messages, merging, rendering, dict round trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.dapi.results import (
    EXCEPTION_CLASSES,
    AffectedItemsWazuhResult,
    WazuhClusterError,
    WazuhError,
    WazuhException,
    WazuhInternalError,
    WazuhPermissionError,
    WazuhResourceNotFound,
    WazuhResult,
    exception_from_dict,
    json_default,
    merge_sorted,
    result_from_dict,
)


class ExceptionTests(SynchronousTestCase):

    def test_message_from_code(self) -> None:
        e = WazuhResourceNotFound(1701)
        self.assertEqual(e.message, "Agent does not exist")
        self.assertEqual(e.remediation,
                         "Please, use `GET /agents?select=id,name` to find all available agents")
        self.assertEqual(e.title, "Resource Not Found")
        self.assertEqual(e.type, "about:blank")
        self.assertEqual(str(e), "Error 1701 - Agent does not exist")

    def test_extra_message_and_remediation(self) -> None:
        e = WazuhError(1724, extra_message="foo", extra_remediation="use id")
        self.assertEqual(e.message, "Not a valid select field: foo")
        self.assertEqual(e.remediation, "Please, use only allowed select fields: use id")

    def test_dict_extra_message_fills_placeholders(self) -> None:
        e = WazuhError(1800, extra_message={"path": "etc/lists/x"})
        self.assertEqual(e.message, "Bad format in CDB list etc/lists/x")

    def test_unknown_code_and_cmd_error(self) -> None:
        self.assertEqual(WazuhError(9999, extra_message="boom").message, "boom")
        self.assertIsNone(WazuhError(9999, extra_message="boom").remediation)
        self.assertEqual(WazuhError(1701, extra_message="raw", cmd_error=True).message, "raw")

    def test_titles(self) -> None:
        self.assertEqual(WazuhInternalError(1000).title, "Wazuh Internal Error")
        self.assertEqual(WazuhClusterError(3022).title, "Wazuh Cluster Error")
        self.assertEqual(WazuhError(1000).title, "Bad Request")
        self.assertEqual(WazuhPermissionError(4000).title, "Permission Denied")
        self.assertEqual(WazuhException(1000).title, "WazuhException")

    def test_to_dict_fields(self) -> None:
        e = WazuhError(1710, extra_message="g1", ids=["002", "001"],
                       dapi_errors={"m": {"error": "x"}})
        self.assertEqual(e.to_dict(), {
            "type": "about:blank", "title": "Bad Request", "code": 1710, "extra_message": "g1",
            "extra_remediation": None, "cmd_error": False, "dapi_errors": {"m": {"error": "x"}},
            "ids": ["001", "002"]})
        self.assertNotIn("ids", WazuhInternalError(1000).to_dict())

    def test_round_trip_every_class(self) -> None:
        for name, cls in EXCEPTION_CLASSES.items():
            e = cls(1701, extra_message="m", ids=["1"]) if cls.has_ids else cls(3021)
            back = exception_from_dict(name, json.loads(json.dumps(e.to_dict())))
            self.assertIs(type(back), cls)
            self.assertEqual(back, e)
            self.assertEqual(back.message, e.message)
            self.assertEqual(back.ids, e.ids)

    def test_unknown_class_decodes_safely(self) -> None:
        back = exception_from_dict("os.system", {"code": 1000, "title": "X"})
        self.assertIs(type(back), WazuhInternalError)
        self.assertEqual(back.title, "X")
        back = exception_from_dict("Nope", {"code": 1701, "ids": ["001"]})
        self.assertIs(type(back), WazuhError)

    def test_malformed_dict_is_value_error(self) -> None:
        for bad in ({}, {"code": "1"}, {"code": True}, []):
            self.assertRaises(ValueError, WazuhError.from_dict, bad)  # type: ignore[arg-type]

    def test_equal_errors_hash_alike(self) -> None:
        self.assertEqual(hash(WazuhError(1701)), hash(WazuhError(1701, ids=["1"])))
        self.assertNotEqual(WazuhError(1701), WazuhResourceNotFound(1701))

    def test_or_of_errors_unites_ids_and_dapi_errors(self) -> None:
        a = WazuhError(1701, ids=["1"], dapi_errors={"a": {}})
        b = WazuhError(1701, ids=["2"], dapi_errors={"b": {}})
        m = a | b
        self.assertEqual(m.ids, {"1", "2"})
        self.assertEqual(set(m.dapi_errors), {"a", "b"})


class WazuhResultTests(SynchronousTestCase):

    def test_merge(self) -> None:
        a = WazuhResult({"data": {"n": 1, "l": [1, 2], "s": "x"}, "message": "ok"})
        b = WazuhResult({"data": {"n": 2, "l": [2, 3], "s": "y", "new": True}, "message": "ok"})
        m = a | b
        self.assertEqual(m.dikt, {"data": {"n": 3, "l": [1, 2, 3], "s": "x|y", "new": True},
                                  "message": "ok"})
        self.assertEqual(a.dikt["data"]["n"], 1)

    def test_str_priority(self) -> None:
        a = WazuhResult({"status": "OK"}, str_priority=["KO", "OK"])
        self.assertEqual((a | WazuhResult({"status": "KO"}))["status"], "KO")
        self.assertEqual((a | WazuhResult({"status": "OK"}))["status"], "OK")

    def test_or_exception_wins(self) -> None:
        e = WazuhInternalError(1000)
        self.assertIs(WazuhResult({}) | e, e)

    def test_render_and_round_trip(self) -> None:
        r = WazuhResult({"data": {"x": 1}}, str_priority=["a"])
        self.assertEqual(r.render(), {"data": {"x": 1}, "error": 0})
        self.assertEqual(r.to_dict(), {"str_priority": ["a"], "result": {"data": {"x": 1}}})
        self.assertEqual(result_from_dict("WazuhResult", r.to_dict()), r)
        self.assertRaises(ValueError, result_from_dict, "Evil", {})
        self.assertRaises(ValueError, WazuhResult.from_dict, {"result": 3})

    def test_limit_and_sort_data_items(self) -> None:
        r = WazuhResult({"data": {"items": [{"n": 3}, {"n": 1}, {"n": 2}]}})
        self.assertEqual(r.sort(["n"]).limit(2, 1)["data"]["items"], [{"n": 2}, {"n": 3}])
        self.assertEqual(r.sort(["n"], "desc")["data"]["items"][0], {"n": 3})


def _result(ids: list[str]) -> AffectedItemsWazuhResult:
    return AffectedItemsWazuhResult(
        affected_items=[{"id": i} for i in ids], sort_fields=["id"], sort_casting=["str"],
        all_msg="All selected agents information was returned",
        some_msg="Some agents information was not returned",
        none_msg="No agent information was returned")


class AffectedItemsTests(SynchronousTestCase):

    def test_messages_and_error_codes(self) -> None:
        r = _result(["001"])
        self.assertEqual(r.render()["message"], "All selected agents information was returned")
        self.assertEqual(r.render()["error"], 0)
        r.add_failed_item("009", WazuhResourceNotFound(1701))
        self.assertEqual(r.render()["message"], "Some agents information was not returned")
        self.assertEqual(r.render()["error"], 2)
        n = _result([])
        n.add_failed_item("009", WazuhResourceNotFound(1701))
        self.assertEqual(n.render()["message"], "No agent information was returned")
        self.assertEqual(n.render()["error"], 1)
        self.assertEqual(_result([]).render()["error"], 0)

    def test_render_shape(self) -> None:
        r = _result(["001"])
        r.add_failed_item("010", WazuhResourceNotFound(1701))
        r.add_failed_item("009", WazuhResourceNotFound(1701))
        r.add_failed_item("g", WazuhError(1710))
        body = r.render()
        self.assertEqual(body["data"], {
            "affected_items": [{"id": "001"}], "total_affected_items": 1, "total_failed_items": 3,
            "failed_items": [
                {"error": {"code": 1701, "message": "Agent does not exist",
                           "remediation": "Please, use `GET /agents?select=id,name` to find all "
                                          "available agents"},
                 "id": ["009", "010"]},
                {"error": {"code": 1710, "message": "The group does not exist",
                           "remediation": "Please, use `GET /agents/groups` to find all "
                                          "available groups"},
                 "id": ["g"]}]})

    def test_no_remediation_key_when_none(self) -> None:
        r = _result([])
        r.add_failed_item("x", WazuhError(1400))
        self.assertEqual(r.render()["data"]["failed_items"][0]["error"],
                         {"code": 1400, "message": "Invalid offset"})

    def test_merge_keeps_order_and_totals(self) -> None:
        a, b = _result(["001", "004"]), _result(["002", "003", "005"])
        b.add_failed_item("009", WazuhResourceNotFound(1701))
        a.add_failed_item("008", WazuhResourceNotFound(1701))
        m = a | b
        self.assertEqual([i["id"] for i in m.affected_items], ["001", "002", "003", "004", "005"])
        self.assertEqual(m.total_affected_items, 5)
        self.assertEqual(m.total_failed_items, 2)
        self.assertEqual(list(m.failed_items.values()), [{"008", "009"}])
        self.assertEqual(len(a.affected_items), 2)

    def test_merge_with_wazuh_error_ids_and_others(self) -> None:
        a = _result(["001"])
        m = a | WazuhClusterError(3022)
        self.assertIsInstance(m, WazuhClusterError)
        m = a | WazuhError(3022, ids=["w9"])
        self.assertEqual(m.total_failed_items, 1)
        self.assertEqual(m.total_affected_items, 1)
        plain = WazuhError(1701)
        self.assertIs(a | plain, plain)
        self.assertRaises(WazuhInternalError, lambda: a | WazuhResult({}))

    def test_older_than_not_joined(self) -> None:
        a = AffectedItemsWazuhResult({"older_than": "7d"})
        b = AffectedItemsWazuhResult({"older_than": "1d"})
        self.assertEqual((a | b)["older_than"], "7d")

    def test_round_trip(self) -> None:
        r = _result(["001", "002"])
        r.dikt["extra"] = 1
        r.add_failed_item("009", WazuhResourceNotFound(1701))
        r.add_failed_item("g", WazuhError(1710, extra_message="g"))
        encoded = json.loads(json.dumps(r.to_dict()))
        self.assertEqual(encoded["failed_items_keys"][0]["__class__"], "WazuhResourceNotFound")
        self.assertEqual(encoded["total_failed_items"], 2)
        back = result_from_dict("AffectedItemsWazuhResult", encoded)
        self.assertEqual(back, r)
        self.assertEqual(back.render(), r.render())

    def test_from_dict_refuses_malformed(self) -> None:
        ok = _result([]).to_dict()
        for change in ({"affected_items": 3}, {"failed_items_values": [[1]]},
                       {"total_affected_items": "x"}, {"dikt": []}):
            self.assertRaises(ValueError, AffectedItemsWazuhResult.from_dict, {**ok, **change})

    def test_json_default(self) -> None:
        r = _result([])
        r.affected_items.append({"id": "001", "lastKeepAlive": datetime(2023, 11, 14, 22, 13, 20,
                                                                        tzinfo=UTC)})
        r.total_affected_items = 1
        body = json.loads(json.dumps(r, default=json_default))
        self.assertEqual(body["data"]["affected_items"][0]["lastKeepAlive"],
                         "2023-11-14T22:13:20+00:00")
        naive = datetime(2020, 1, 2)  # noqa: DTZ001 - a naive time is taken as UTC
        self.assertEqual(json.dumps(naive, default=json_default), '"2020-01-02T00:00:00+00:00"')
        self.assertRaises(TypeError, json.dumps, object(), default=json_default)
        # the UTC fast path writes seconds only, as the general path does
        with_micro = datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
        self.assertEqual(json_default(with_micro), "2023-11-14T22:13:20+00:00")
        from datetime import timedelta, timezone
        east = datetime(2023, 11, 15, 0, 13, 20, tzinfo=timezone(timedelta(hours=2)))
        self.assertEqual(json_default(east), "2023-11-14T22:13:20+00:00")

    def test_api_body_encoding(self) -> None:
        """The API's shared encoder writes what json.dumps with json_default writes."""
        from wazuhcluster.api.service import _dumps
        r = _result([])
        r.affected_items.append({"id": "001", "os": {"name": "x"}, "lastKeepAlive": datetime(
            2023, 11, 14, 22, 13, 20, tzinfo=UTC)})
        r.total_affected_items = 1
        body = {"data": r, "message": "m", "error": 0}
        self.assertEqual(_dumps(body, False), json.dumps(body, default=json_default).encode())
        self.assertEqual(_dumps(body, True),
                         json.dumps(body, indent=3, default=json_default).encode())
        loop: dict[str, object] = {}
        loop["self"] = loop
        self.assertRaises(ValueError, _dumps, loop, False)

    def test_merge_sorted_descending_int_cast(self) -> None:
        out = merge_sorted([[{"v": "9"}, {"v": "3"}], [{"v": "10"}, {"v": "4"}]],
                           ["v"], [False], ["int"])
        self.assertEqual([o["v"] for o in out], ["10", "9", "4", "3"])
        self.assertEqual(merge_sorted([[1, 3], [2]], None, None, None), [1, 2, 3])
