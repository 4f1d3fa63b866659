"""jsonpieces: the same text and values as json.dumps / json.loads, in pieces."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import patch

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.integrity import jsonpieces

_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def entry(i: int) -> dict[str, Any]:
    """A metadata entry as files_metadata.json holds it."""
    return {"mod_time": 1795869878.8 + i, "cluster_item_key": "etc/rules/", "merged": False,
            "merge_type": None, "merge_name": None, "hash": f"{i:0128x}"}


class DumpsTests(SynchronousTestCase):
    """dumps() is json.dumps() byte for byte."""

    def setUp(self) -> None:
        patcher = patch.object(jsonpieces, "PIECE", 3)
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_flat_and_nested_metadata(self) -> None:
        """A worker upload (flat) and a push's metadata (maps one level down)."""
        flat = {f"etc/rules/r{i}.xml": entry(i) for i in range(10)}
        nested = {"missing": flat, "shared": {}, "extra": dict(list(flat.items())[:4]),
                  "extra_valid": {"é/ü": entry(1)}}
        for value in (flat, nested, {}, {"a": 1}, [flat], "x"):
            self.assertEqual(jsonpieces.dumps(value), json.dumps(value))

    def test_keys_that_are_not_strings(self) -> None:
        """json.dumps turns non-string keys into strings its own way: left to it."""
        value = {1: "a", 2.5: None, False: [], None: 0, "s": 1}
        self.assertEqual(jsonpieces.dumps(value), json.dumps(value))
        self.assertEqual(jsonpieces.dumps({"m": value, 3: value}),
                         json.dumps({"m": value, 3: value}))

    @given(st.dictionaries(st.text(max_size=10), _VALUES, max_size=12))
    def test_any_object(self, value: dict[str, Any]) -> None:
        """Random objects, flat and one level down."""
        self.assertEqual(jsonpieces.dumps(value), json.dumps(value))
        self.assertEqual(jsonpieces.dumps({"m": value}), json.dumps({"m": value}))


class LoadsTests(SynchronousTestCase):
    """loads() is json.loads(): the same value, or the same error."""

    def setUp(self) -> None:
        patcher = patch.object(jsonpieces, "LOADS_PIECES_FROM", 0)
        patcher.start()
        self.addCleanup(patcher.stop)

    def same(self, raw: bytes | str) -> None:
        try:
            expected = json.loads(raw)
        except ValueError as e:
            error = self.assertRaises(ValueError, jsonpieces.loads, raw)
            self.assertEqual(str(error), str(e))
            return
        self.assertEqual(jsonpieces.loads(raw), expected)

    def test_metadata(self) -> None:
        """A worker's files_metadata.json, as bytes and as text, with any spacing."""
        flat = {f"etc/rules/r{i}.xml": entry(i) for i in range(10)}
        for raw in (json.dumps(flat), json.dumps(flat, indent=2),
                    json.dumps(flat, separators=(",", ":")), " \n{ } \t", "{}"):
            self.same(raw)
            self.same(raw.encode())
        self.assertEqual(jsonpieces.loads(json.dumps(flat).encode()), flat)

    def test_not_an_object_or_not_json(self) -> None:
        """Anything else behaves exactly as with json.loads."""
        for raw in ("[1, 2]", '"x"', "3", "", "   ", "{", '{"a"', '{"a": }', '{"a": 1,}',
                    '{"a": 1} x', '{"a" 1}', '{1: 2}', '{"a": 1 "b": 2}', '{"a": NaN}',
                    '{"a": "\x01"}', '{"a": 1}{', "\ufeff{}"):
            self.same(raw)
        for raw in (b"\xef\xbb\xbf{}", '{"a": 1}'.encode("utf-16"), b'{"\xff": 1}'):
            self.same(raw)

    def test_a_valid_object_is_parsed_in_pieces(self) -> None:
        """json.loads is not called for a well-formed object (it is only the fallback)."""
        flat = {f"etc/rules/r{i}.xml": entry(i) for i in range(10)}
        with patch("json.loads", side_effect=AssertionError("called")):
            self.assertEqual(jsonpieces.loads(json.dumps(flat, indent=1).encode()), flat)

    def test_duplicate_keys_keep_the_last(self) -> None:
        """As json.loads."""
        self.same('{"a": 1, "b": 2, "a": 3}')

    @given(st.dictionaries(st.text(max_size=10), _VALUES, max_size=12))
    def test_any_object(self, value: dict[str, Any]) -> None:
        """Random objects round-trip to the same value."""
        self.same(json.dumps(value))
        self.same(json.dumps(value, ensure_ascii=False).encode())
