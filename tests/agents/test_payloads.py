"""Tests for wazuhcluster.agents.payloads, including payloads of a real 4.7.5 session."""

from __future__ import annotations

import contextlib
import json
import zlib

from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.agents.capture import decoded_messages, long_strings, raw_messages
from wazuhcluster.agents import payloads
from wazuhcluster.agents.payloads import PayloadError, SyncResult
from wazuhcluster.agents.schema import AGENT_INFO_COLUMNS

_SESSION_HASH = "1147021666b6b45fdfa0df05e49b106d48a946aa"


class SessionPayloadTests(SynchronousTestCase):
    """The decoders accept what real Wazuh 4.7.5 nodes sent, and our encoders match it."""

    def test_decoded_previews_are_truncated(self) -> None:
        """The decoded session's previews are cut at 400 characters, so raw bytes are needed."""
        upd = [m for m in decoded_messages() if m["cmd"] == "str_upd"]
        self.assertTrue(upd)
        self.assertTrue(any(m["payload_len"] > len(str(m["payload_preview"])) for m in upd))

    def test_decode_worker_agent_info_string(self) -> None:
        """The worker's agent-info long string decodes into one chunk of five agents."""
        [string] = long_strings("w2m")
        chunks = payloads.decode_agent_info_string(string)
        self.assertEqual(len(chunks), 1)
        agents = payloads.decode_agent_info_chunk(chunks[0])
        self.assertEqual([a["id"] for a in agents], [1, 2, 3, 4, 5])
        self.assertEqual(agents[0]["node_name"], "worker-1")
        self.assertEqual(agents[0]["last_keepalive"], 1795749388)
        self.assertEqual(agents[0]["os_uname"], "Linux |agent |5.15.0 |x86_64")

    def test_agent_info_string_encoding_matches_session(self) -> None:
        """Re-encoding the session's chunks gives the session's bytes exactly."""
        [string] = long_strings("w2m")
        chunks = payloads.decode_agent_info_string(string)
        self.assertEqual(payloads.encode_agent_info_string(chunks), string)

    def test_agent_info_chunk_encoding_matches_session(self) -> None:
        """Our compact chunk serialization equals wazuh-db's for the session's agents."""
        [string] = long_strings("w2m")
        [chunk] = payloads.decode_agent_info_string(string)
        self.assertEqual(payloads.encode_agent_info_chunk(json.loads(chunk)), chunk)

    def test_decode_master_groups_strings(self) -> None:
        """Every syn_g_m_w string of the session decodes; the first assigns five agents."""
        strings = [payloads.decode_groups_string(s) for s in long_strings("m2w")]
        self.assertEqual(len(strings), 7)
        first = strings[0]
        self.assertEqual((first.mode, first.sync_status), ("override", "synced"))
        chunk = payloads.decode_groups_chunk(first.chunks[0])
        self.assertEqual(chunk.assignments,
                         tuple((i, ("default", "group1")) for i in range(1, 6)))
        self.assertEqual((chunk.has_hash, chunk.global_hash), (True, _SESSION_HASH))
        for later in strings[1:]:
            self.assertEqual(payloads.master_groups_hash(later.chunks), (True, _SESSION_HASH))
            self.assertEqual(payloads.decode_groups_chunk(later.chunks[0]).assignments, ())

    def test_groups_encoding_matches_session(self) -> None:
        """Our groups chunk and long string encodings equal the master's bytes."""
        string = long_strings("m2w")[0]
        assignments = tuple((i, ("default", "group1")) for i in range(1, 6))
        chunk = payloads.encode_groups_chunk(assignments, with_hash=True,
                                             global_hash=_SESSION_HASH)
        self.assertEqual(payloads.encode_groups_string([chunk]), string)

    def test_decode_session_results(self) -> None:
        """The syn_m_a_e and syn_w_g_e payloads of the session decode."""
        results = [payload for _, command, payload in raw_messages("m2w") + raw_messages("w2m")
                   if command in ("syn_m_a_e", "syn_w_g_e")]
        self.assertEqual(len(results), 8)
        for payload in results:
            result = payloads.decode_sync_result(payload)
            self.assertEqual((result.updated_chunks, result.error_messages), (1, ()))

    def test_result_encoding_matches_session_layout(self) -> None:
        """Our result payload has the session's layout (Python json defaults)."""
        payload = payloads.encode_sync_result(SyncResult(1, (), 0.5))
        self.assertEqual(payload,
                         b'{"updated_chunks": 1, "error_messages": [], "time_spent": 0.5}')


class DecoderLimitTests(SynchronousTestCase):
    """Decoders refuse malformed, oversized or foreign payloads with PayloadError only."""

    def test_4_13_object_chunks_refused(self) -> None:
        """The 4.13 agent-info format (chunks as an object) is refused with a clear error."""
        data = json.dumps({"set_data_command": "global sync-agent-info-set", "payload": {},
                           "chunks": {"syncreq": [], "syncreq_keepalive": [],
                                      "syncreq_status": []}}).encode()
        e = self.assertRaises(PayloadError, payloads.decode_agent_info_string, data)
        self.assertIn("4.13", str(e))

    def test_wrong_command_refused(self) -> None:
        """An agent-groups string is not accepted as an agent-info string."""
        self.assertRaises(PayloadError, payloads.decode_agent_info_string,
                          payloads.encode_groups_string([]))

    def test_size_limit_checked_before_parsing(self) -> None:
        """A string over the size limit is refused."""
        data = payloads.encode_agent_info_string(["[]"])
        self.assertRaises(PayloadError, payloads.decode_agent_info_string, data,
                          max_size=len(data) - 1)

    def test_chunk_count_limit(self) -> None:
        """Too many chunks are refused."""
        data = payloads.encode_agent_info_string(["[]"] * 3)
        self.assertRaises(PayloadError, payloads.decode_agent_info_string, data, max_chunks=2)

    def test_nan_refused(self) -> None:
        """Non-standard constants are not JSON."""
        self.assertRaises(PayloadError, payloads.decode_sync_result,
                          b'{"updated_chunks": 1, "error_messages": [], "time_spent": NaN}')

    def test_deep_nesting_refused(self) -> None:
        """Absurd nesting is a PayloadError, not a RecursionError."""
        self.assertRaises(PayloadError, payloads.decode_agent_info_chunk,
                          "[" * 100000 + "]" * 100000)

    def test_wrong_types_refused(self) -> None:
        """Ids must be non-negative integers (not bools), text columns strings."""
        for chunk in ('[{"id":true}]', '[{"id":-1}]', '[{"id":"1"}]',
                      '[{"id":1,"name":5}]', '[{"id":1,"last_keepalive":"x"}]',
                      '[{"id":1,"labels":[{"id":1,"key":"a"}]}]', '{"id":1}'):
            self.assertRaises(PayloadError, payloads.decode_agent_info_chunk, chunk)

    def test_nulls_and_unknown_keys(self) -> None:
        """JSON nulls count as absent and unknown keys are dropped."""
        self.assertEqual(payloads.decode_agent_info_chunk(
            '[{"id":3,"name":null,"__class__":"x","os_name":"A"}]'),
            [{"id": 3, "os_name": "A"}])

    def test_invalid_group_names_refused(self) -> None:
        """Group names follow wazuh-db's rules."""
        for name in ("..", ".", "a b", "x/y", "", "g" * 256):
            chunk = payloads.encode_groups_chunk([(1, [name])])
            self.assertRaises(PayloadError, payloads.decode_groups_chunk, chunk)

    @given(st.binary(max_size=200))
    def test_arbitrary_bytes_raise_only_payload_error(self, data: bytes) -> None:
        """Any input either decodes or raises PayloadError."""
        for decode in (payloads.decode_agent_info_string, payloads.decode_groups_string,
                       payloads.decode_sync_result):
            with contextlib.suppress(PayloadError):
                decode(data)

    @given(st.lists(st.tuples(st.integers(0, 2**31 - 1),
                              st.lists(st.from_regex(r"\A[A-Za-z0-9_.\-]{1,20}\Z")
                                       .filter(lambda n: n not in (".", "..")),
                                       max_size=5)),
                    max_size=20))
    def test_groups_chunk_round_trip(self, assignments: list[tuple[int, list[str]]]) -> None:
        """Encoding then decoding a groups chunk gives the assignments back."""
        chunk = payloads.encode_groups_chunk(assignments)
        decoded = payloads.decode_groups_chunk(chunk)
        self.assertEqual(decoded.assignments, tuple((a, tuple(g)) for a, g in assignments))
        self.assertFalse(decoded.has_hash)


def a_row(**values: object) -> list[object]:
    """A valid row of agent 1 with some columns replaced."""
    row: list[object] = [None] * len(AGENT_INFO_COLUMNS)
    row[0], row[1] = 1, "agent-001"
    for column, value in values.items():
        row[AGENT_INFO_COLUMNS.index(column)] = value
    return row


def bad_rows_chunks() -> list[object]:
    """Rows-form chunks :func:`payloads.decode_agent_info_rows` refuses for their rows: each
    bad row next to a valid row (holding 1 and 0 where bad ones hold True, 1.0, False), and
    chunks of the wrong shape."""
    bad_rows = [
        a_row(ip=5), a_row(last_keepalive="5"), a_row(status_code=True),
        a_row(status_code=1.5), a_row(os_name="x" * 8193),
        a_row(last_keepalive=2**63), a_row(disconnection_time=-(2**63)),
        a_row(status_code=1.0), a_row(disconnection_time=False), [True, *a_row()[1:]],
        [-1, *a_row()[1:]], [2**31, *a_row()[1:]], ["1", *a_row()[1:]],
        a_row()[:-1], [*a_row(), None], {"id": 1}, "row", None,
        a_row(ip=["10.0.0.1"]), a_row(ip={"v": "x"}), a_row(ip=True), a_row(os_name=None, ip=[]),
        a_row(last_keepalive=[5]), a_row(last_keepalive=10**30), a_row(status_code=-(10**30)),
        [1.0, *a_row()[1:]], [None, *a_row()[1:]], [[1], *a_row()[1:]],
        json.dumps(a_row()), []]
    valid = a_row(status_code=1, disconnection_time=0)
    chunks: list[object] = [{"rows": rows, "labels": []}
                            for row in bad_rows for rows in ([valid, row], [row, valid])]
    chunks += [[], {"rows": {}}, {"rows": [a_row()] * 4097}, "x", None, {}, {"rows": None},
               {"rows": [a_row()], "labels": None}, {"rows": [a_row()], "labels": {}}]
    return chunks


def bad_labels_chunks() -> list[object]:
    """Rows-form chunks :func:`payloads.decode_agent_info_rows` refuses for their labels."""
    all_labels: list[object] = [
        {}, [[1]], [[2, []]], [[1, [["k"]]]], [[1, [["k", 5]]]], [[1, [["k", None]]]],
        [[1, {"k": "v"}]], [[1, [["k", "v" * 8193]]]], [[1, [["k", "v"]] * 1025]],
        [[1, []], [1, []]]]
    return [{"rows": [a_row()], "labels": labels} for labels in all_labels]


class RowsFormTests(SynchronousTestCase):
    """The compact rows form between our nodes: framing and validation."""

    def row(self, **values: object) -> list[object]:
        """A valid row of agent 1 with some columns replaced."""
        row: list[object] = [None] * len(AGENT_INFO_COLUMNS)
        row[0], row[1] = 1, "agent-001"
        for column, value in values.items():
            row[AGENT_INFO_COLUMNS.index(column)] = value
        return row

    def test_string_round_trip(self) -> None:
        """Chunk texts are embedded as JSON and come back parsed."""
        chunk = json.dumps({"rows": [self.row(last_keepalive=5)], "labels": []})
        data = payloads.encode_agent_info_rows_string([chunk, chunk])
        self.assertEqual(payloads.decode_agent_info_string(data), (json.loads(chunk),) * 2)
        self.assertEqual(json.loads(data)["set_data_command"], "global sync-agent-info-set")

    def test_string_refused(self) -> None:
        """An unknown format, other columns, or chunks that are not a list are refused."""
        base = {"set_data_command": "global sync-agent-info-set", "payload": {},
                "format": "wazuhcluster-rows-1", "columns": list(AGENT_INFO_COLUMNS),
                "chunks": []}
        changes: list[dict[str, object]] = [{"format": "rows-2"}, {"columns": ["id"]},
                                             {"chunks": {}}]
        for change in changes:
            data = json.dumps({**base, **change}).encode()
            self.assertRaises(PayloadError, payloads.decode_agent_info_string, data)
        data = json.dumps({**base, "chunks": [{}, {}, {}]}).encode()
        self.assertRaises(PayloadError, payloads.decode_agent_info_string, data, max_chunks=2)

    def test_compressed_string(self) -> None:
        """The zlib form inflates to the rows form; a bomb, a truncated or padded stream, a
        compressed 4.7.5 string and any bytes after the zlib header are refused cleanly."""
        chunk = json.dumps({"rows": [self.row(last_keepalive=5)], "labels": []})
        plain = payloads.encode_agent_info_rows_string([chunk])
        data = payloads.encode_agent_info_rows_zlib([chunk])
        self.assertEqual(data[:1], b"x")
        self.assertEqual(zlib.decompress(data), plain)
        self.assertEqual(payloads.decode_agent_info_string(data), (json.loads(chunk),))
        for count in (0, 3):
            self.assertEqual(zlib.decompress(payloads.encode_agent_info_rows_zlib([chunk] * count)),
                             payloads.encode_agent_info_rows_string([chunk] * count))
        self.assertRaises(PayloadError, payloads.decode_agent_info_string, data,
                          max_size=len(plain) - 1)
        bomb = zlib.compress(b" " * (8 * 1024 * 1024), 9)
        self.assertRaises(PayloadError, payloads.decode_agent_info_string, bomb,
                          max_size=1024 * 1024)
        for bad in (data[:-3], data + b"x", b"x", b"x\x9c" + b"\x00" * 20,
                    zlib.compress(payloads.encode_agent_info_string(["[]"]))):
            self.assertRaises(PayloadError, payloads.decode_agent_info_string, bad)

    @given(st.binary(max_size=200))
    def test_bytes_after_zlib_header_raise_only_payload_error(self, data: bytes) -> None:
        """Anything that looks compressed either decodes or raises PayloadError."""
        with contextlib.suppress(PayloadError):
            payloads.decode_agent_info_string(b"x" + data)

    def test_valid_rows(self) -> None:
        """Valid rows come back as they are; labels as (id, [(key, value)])."""
        rows = [self.row(ip="10.0.0.1", last_keepalive=2**63 - 1),
                [2, None, *self.row()[2:]]]
        got = payloads.decode_agent_info_rows(
            {"rows": rows, "labels": [[2, [["k", "v"], ["a", ""]]]]})
        self.assertEqual(got, (rows, [(2, [("k", "v"), ("a", "")])]))

    def test_invalid_rows_refused(self) -> None:
        """Every rule of the 4.7.5 chunk decoder holds for rows."""
        for chunk in bad_rows_chunks():
            self.assertRaises(PayloadError, payloads.decode_agent_info_rows, chunk)

    def test_invalid_labels_refused(self) -> None:
        """Labels must be [id, [[key, value], ...]] of an agent the chunk has a row for."""
        for chunk in bad_labels_chunks():
            self.assertRaises(PayloadError, payloads.decode_agent_info_rows, chunk)

    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                        lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.sampled_from(["rows", "labels"]), inner),
                        max_leaves=30))
    def test_arbitrary_json_raises_only_payload_error(self, chunk: object) -> None:
        """Any parsed JSON either validates or raises PayloadError."""
        with contextlib.suppress(PayloadError):
            payloads.decode_agent_info_rows(chunk)


def _params_reference(chunk: str) -> object:
    """What :func:`payloads.decode_agent_info_params` must return, built from
    :func:`payloads.decode_agent_info_chunk` one object at a time (or ``"refused"``)."""
    try:
        agents = payloads.decode_agent_info_chunk(chunk)
    except PayloadError:
        return "refused"
    rows, labels, skipped = [], [], 0
    for agent in agents:
        if agent["id"] == 0:
            skipped += 1
            continue
        rows.append((*[agent.get(c) for c in AGENT_INFO_COLUMNS[1:]], agent["id"]))
        if "labels" in agent:
            labels.append((agent["id"], [(k, v) for _, k, v in agent["labels"]]))
    return rows, labels, skipped


def _params(chunk: str) -> object:
    try:
        return payloads.decode_agent_info_params(chunk)
    except PayloadError:
        return "refused"


_ANY_VALUE = (st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(-2, 2)
              | st.text(max_size=3) | st.sampled_from(["x" * 8192, "x" * 8193])
              | st.lists(st.integers(), max_size=2)
              | st.lists(st.fixed_dictionaries({"id": st.integers(0, 3), "key": st.text(max_size=2),
                                                "value": st.text(max_size=2)}), max_size=2)
              | st.just([{"id": 1, "key": "k"}]))
_AGENT = st.dictionaries(
    st.sampled_from([*AGENT_INFO_COLUMNS, "labels", "other"]),
    st.integers(0, 3) | _ANY_VALUE, max_size=len(AGENT_INFO_COLUMNS) + 2)


class StandardParamsTests(SynchronousTestCase):
    """``decode_agent_info_params`` (column-wise checks) keeps the rules of
    ``decode_agent_info_chunk`` (object by object)."""

    def test_session_chunk(self) -> None:
        """The chunk of the captured session gives every agent's columns in order."""
        [string] = long_strings("w2m")
        [chunk] = payloads.decode_agent_info_string(string)
        got = payloads.decode_agent_info_params(chunk)
        self.assertEqual(got, _params_reference(chunk))
        rows, labels, skipped = got
        self.assertEqual(len(rows), 5)
        self.assertEqual(rows[0][-1], 1)
        self.assertEqual(rows[0][0], "agent-001")
        self.assertEqual((labels, skipped), ([], 0))

    def test_refused_like_the_object_decoder(self) -> None:
        """Every chunk the object decoder refuses is refused, in any position of the chunk."""
        good = '{"id":2,"name":"a","last_keepalive":0,"status_code":1}'
        for bad in ('{"id":true}', '{"id":-1}', '{"id":"1"}', '{"id":2147483648}', '{}',
                    '{"id":1,"name":5}', '{"id":1,"last_keepalive":"x"}',
                    '{"id":1,"status_code":1.5}', '{"id":1,"status_code":true}',
                    '{"id":1,"last_keepalive":9223372036854775808}',
                    '{"id":1,"os_name":"' + "x" * 8193 + '"}', '{"id":1,"os_name":["x"]}',
                    '{"id":1,"os_name":{"a":1}}', '{"id":1,"labels":[{"id":1,"key":"a"}]}',
                    '{"id":1,"labels":{}}', '[1]', '"x"', '{"id":3,"status_code":true}',
                    '{"id":3,"status_code":1.0}', '{"id":3,"last_keepalive":false}'):
            for chunk in (f"[{bad}]", f"[{good},{bad}]", f"[{bad},{good}]"):
                self.assertEqual(_params(chunk), "refused", chunk)
                self.assertEqual(_params_reference(chunk), "refused", chunk)
        self.assertEqual(_params('{"id":1}'), "refused")

    def test_nulls_labels_and_agent_000(self) -> None:
        """Nulls and absent columns are None, unknown keys dropped, agent 000 counted apart
        (its labels too), the id last."""
        chunk = ('[{"id":0,"name":"m","labels":[{"id":0,"key":"k","value":"v"}]},'
                 '{"name":null,"x":1,"id":3,"os_name":"A","labels":null},'
                 '{"id":4,"labels":[{"id":4,"key":"k","value":""}],"status_code":7}]')
        rows, labels, skipped = payloads.decode_agent_info_params(chunk)
        empty = [None] * (len(AGENT_INFO_COLUMNS) - 1)
        os_name = AGENT_INFO_COLUMNS.index("os_name") - 1
        status = AGENT_INFO_COLUMNS.index("status_code") - 1
        self.assertEqual(rows, [
            (*empty[:os_name], "A", *empty[os_name + 1:], 3),
            (*empty[:status], 7, *empty[status + 1:], 4)])
        self.assertEqual((labels, skipped), ([(4, [("k", "")])], 1))
        self.assertEqual(payloads.decode_agent_info_params("[]"), ([], [], 0))

    @given(st.lists(_AGENT, max_size=5))
    def test_same_as_object_decoder(self, agents: list[dict[str, object]]) -> None:
        """For any chunk both decoders agree (same parameters, or both refuse)."""
        chunk = json.dumps(agents)
        self.assertEqual(_params(chunk), _params_reference(chunk))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


def _has_big_int(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return any(map(_has_big_int, value))
    if isinstance(value, dict):
        return any(map(_has_big_int, value.values()))
    return type(value) is int and not -2**63 <= value < 2**64


class FastJsonTests(SynchronousTestCase):
    """The big agent-info and agent-groups texts go through orjson; what they mean, what is
    refused and the bytes written stay those of the ``json`` module."""

    def setUp(self) -> None:
        self.assertIsNotNone(payloads._orjson, "orjson is a declared dependency")

    def _both(self, data: bytes) -> tuple[object, object]:
        def parse(fast: bool) -> object:
            try:
                return ("ok", payloads._loads(data, 1 << 20, "text", fast=fast))
            except PayloadError as e:
                return ("refused", str(e))
        return parse(True), parse(False)

    @given(_json_values)
    def test_same_values(self, value: object) -> None:
        """Any JSON text (integers within 64 bits) means the same through both parsers."""
        data = json.dumps(value, ensure_ascii=False).encode("utf-8")
        fast, reference = self._both(data)
        self.assertEqual(repr(fast), repr(reference))

    @given(st.binary(max_size=40) | st.text(max_size=40).map(lambda t: t.encode("utf-8",
                                                                               "surrogatepass")))
    def test_same_refusals(self, data: bytes) -> None:
        """Arbitrary bytes: refused by both with the same message, or the same value (but
        for the one documented difference: integers beyond 64 bits)."""
        fast, reference = self._both(data)
        assume(not _has_big_int(reference))
        self.assertEqual(repr(fast), repr(reference))

    def test_what_orjson_refuses_json_decides(self) -> None:
        """A BOM, a lone surrogate escape, an overflowing float and NaN get json's answer."""
        for data in (b'\xef\xbb\xbf[1]', b'["\\ud800"]', b'[1e400]', b'[NaN]', b'[1] x'):
            fast, reference = self._both(data)
            self.assertEqual(repr(fast), repr(reference), data)

    def test_big_integers_are_refused_either_way(self) -> None:
        """orjson reads an integer beyond 64 bits as a float: the checks refuse both."""
        big = 2**70
        for text in (f'[{{"id":{big}}}]', f'[{{"id":1,"last_keepalive":{big}}}]',
                     f'[{{"id":1,"name":{big}}}]'):
            self.assertRaises(PayloadError, payloads.decode_agent_info_params, text)
            self.assertRaises(PayloadError, payloads.decode_agent_info_chunk, text)
        self.assertRaises(PayloadError, payloads.decode_groups_chunk,
                          f'[{{"data":[{{"id":{big},"groups":["default"]}}]}}]')

    def test_decoders_use_orjson(self) -> None:
        """The agent-info string and its chunks are parsed by orjson."""
        calls: list[int] = []
        real = payloads._orjson

        class Counting:
            JSONDecodeError = real.JSONDecodeError
            dumps = staticmethod(real.dumps)

            @staticmethod
            def loads(data: bytes | str) -> object:
                calls.append(len(data))
                return real.loads(data)

        self.patch(payloads, "_orjson", Counting)
        chunk = '[{"id":1,"name":"a"}]'
        [decoded] = payloads.decode_agent_info_string(payloads.encode_agent_info_string([chunk]))
        payloads.decode_agent_info_params(decoded)
        self.assertEqual(len(calls), 2)

    @given(st.lists(st.text(), max_size=5), st.sampled_from(["override", "append"]))
    def test_long_strings_byte_for_byte(self, chunks: list[str], mode: str) -> None:
        """The long strings are exactly what json.dumps(ensure_ascii=False) writes."""
        self.assertEqual(
            payloads.encode_agent_info_string(chunks),
            json.dumps({"set_data_command": payloads.AGENT_INFO_SET_COMMAND, "payload": {},
                        "chunks": chunks}, ensure_ascii=False).encode("utf-8"))
        self.assertEqual(
            payloads.encode_groups_string(chunks, mode),
            json.dumps({"set_data_command": payloads.AGENT_GROUPS_SET_COMMAND,
                        "payload": {"mode": mode, "sync_status": "synced"},
                        "chunks": chunks}, ensure_ascii=False).encode("utf-8"))

    def test_escapes(self) -> None:
        """Control characters, quotes, backslashes, DEL, U+2028 and non-ASCII text."""
        chunk = "".join(map(chr, range(0x30))) + '"\\\x7f\u2028é😀'
        self.assertEqual(
            payloads.encode_agent_info_string([chunk, chunk]),
            json.dumps({"set_data_command": payloads.AGENT_INFO_SET_COMMAND, "payload": {},
                        "chunks": [chunk, chunk]}, ensure_ascii=False).encode("utf-8"))

    def test_lone_surrogate_fails_as_before(self) -> None:
        """A chunk that is not valid Unicode is refused as json.dumps + encode refused it."""
        self.assertRaises(UnicodeEncodeError, payloads.encode_agent_info_string, ["\ud800"])
