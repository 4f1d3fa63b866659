"""The local DAPI client: one round trip with ``wzc_dapi`` (``wzc_dapi_e`` when asked for early
answers, ``wzc_dapi`` toward a node that does not know it), and 4.7.5's ``dapi`` toward a node
that knows neither (nodes older than the CLI during a rolling upgrade)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.dapi.test_service import result_of
from wazuhcluster.dapi import client, codec
from wazuhcluster.dapi.results import WazuhClusterError
from wazuhcluster.errors import RemoteCommandError, UnknownCommand
from wazuhcluster.protocol.commands import DAPI, DAPI_EARLY, DAPI_SYNC


class FallbackTests(SynchronousTestCase):
    """``dapi_call`` falls back to ``wzc_dapi``, then ``dapi``, only when the newer command is
    unknown to the node."""

    def setUp(self) -> None:
        self.sent: list[bytes] = []
        self.known = {DAPI, DAPI_SYNC, DAPI_EARLY}
        self.error_for_sync: RemoteCommandError | None = None

        async def fake_request(reactor: Any, socket_path: str, command: bytes, payload: bytes,
                               timeout: float = 20.0, final_timeout: float = 200.0) -> bytes:
            self.sent.append(command)
            if command not in self.known:  # the real wire text of an unknown command
                raise RemoteCommandError.from_payload(UnknownCommand(command).to_wire())
            if command == DAPI_EARLY and self.error_for_sync is not None:
                raise self.error_for_sync
            return codec.dumps({"answered_by": command.decode()}).encode()

        self.patch(client, "local_request", fake_request)
        self.request = client.build_request("wazuh.cluster.get_node_wrapper")

    def call(self, early: bool = True) -> Any:
        return result_of(Deferred.fromCoroutine(client.dapi_call(Clock(), "/x", self.request,
                                                                 early=early)))

    def test_current_node_one_round_trip(self) -> None:
        self.assertEqual(self.call(), {"answered_by": "wzc_dapi_e"})
        self.assertEqual(self.sent, [DAPI_EARLY])

    def test_default_is_wzc_dapi(self) -> None:
        self.assertEqual(self.call(early=False), {"answered_by": "wzc_dapi"})
        self.assertEqual(self.sent, [DAPI_SYNC])

    def test_node_without_early_answers_gets_wzc_dapi(self) -> None:
        self.known = {DAPI, DAPI_SYNC}
        self.assertEqual(self.call(), {"answered_by": "wzc_dapi"})
        self.assertEqual(self.sent, [DAPI_EARLY, DAPI_SYNC])

    def test_older_node_gets_dapi(self) -> None:
        self.known = {DAPI}
        self.assertEqual(self.call(), {"answered_by": "dapi"})
        self.assertEqual(self.sent, [DAPI_EARLY, DAPI_SYNC, DAPI])
        del self.sent[:]
        self.assertEqual(self.call(early=False), {"answered_by": "dapi"})
        self.assertEqual(self.sent, [DAPI_SYNC, DAPI])

    def test_other_errors_are_not_retried(self) -> None:
        self.error_for_sync = RemoteCommandError(3000, "something else")
        failure = self.failureResultOf(
            Deferred.fromCoroutine(client.dapi_call(Clock(), "/x", self.request, early=True)))
        self.assertIsInstance(failure.value, Exception)
        self.assertEqual(self.sent, [DAPI_EARLY])

    def test_cluster_errors_keep_their_code(self) -> None:
        self.error_for_sync = RemoteCommandError(3023, "worker gone")
        failure = self.failureResultOf(
            Deferred.fromCoroutine(client.dapi_call(Clock(), "/x", self.request, early=True)))
        self.assertIsInstance(failure.value, WazuhClusterError)
        self.assertEqual(failure.value.code, 3023)
        self.assertEqual(self.sent, [DAPI_EARLY])
