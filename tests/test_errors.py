"""Error objects on the wire: Wazuh's encoding, and data-only decoding."""

from __future__ import annotations

import json
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support import read_vector
from wazuhcluster.errors import ClusterError, RemoteCommandError


class ErrorObjectTests(SynchronousTestCase):
    """ClusterError.to_wire and RemoteCommandError.from_payload."""

    def test_encoding_matches_the_real_wazuh_err_reply(self) -> None:
        """Our 3020 error encodes exactly as the captured Wazuh err_reply payload."""
        wazuh = read_vector("frames", "err_reply.plain.bin")[20:]
        self.assertEqual(ClusterError(3020, "syn_i_w_m").to_wire(), wazuh)

    def test_round_trip(self) -> None:
        """A decoded error keeps its class, code and message."""
        error = RemoteCommandError.from_payload(
            ClusterError(1730, "w9", class_name="WazuhResourceNotFound").to_wire())
        self.assertEqual((error.class_name, error.code, error.extra_message),
                         ("WazuhResourceNotFound", 1730, "w9"))

    def test_plain_text_becomes_3000(self) -> None:
        """A non-JSON err payload becomes error 3000 carrying the text."""
        error = RemoteCommandError.from_payload(b"unknown command 'b'foo''")
        self.assertEqual((error.code, error.extra_message), (3000, "unknown command 'b'foo''"))

    def test_nothing_named_in_a_payload_is_imported_or_called(self) -> None:
        """__callable__, __unhandled_exc__ and unknown classes stay data (CVE-2025-24016)."""
        before = set(sys.modules)
        hostile = [
            {"__callable__": {"__name__": "system", "__module__": "wazuhcluster_evil_module",
                              "__qualname__": "system", "__type__": "function"}},
            {"__unhandled_exc__": {"__class__": "__import__('os').system('false') or "
                                                "SystemExit", "__args__": ["x"]}},
            {"__wazuh_exception__": {"__class__": "os.system", "__object__": {"code": 1}}},
            {"__wazuh_exception__": {"__class__": "SystemExit", "__object__": "x"}},
        ]
        for obj in hostile:
            error = RemoteCommandError.from_payload(json.dumps(obj).encode())
            self.assertIsInstance(error, ClusterError)
            self.assertIn(error.class_name, ("WazuhClusterError",))
        self.assertEqual(set(sys.modules) - before, set())
