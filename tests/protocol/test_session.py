"""Replay the captured real Wazuh 4.7.5 master/worker session through our codec."""

from __future__ import annotations

import hashlib
import json

from twisted.trial.unittest import SynchronousTestCase

from tests.support import VECTOR_KEY, read_vector, vector_path
from wazuhcluster.protocol.chunks import Reassembler
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.protocol.frames import FrameDecoder


def expected_messages() -> list[dict[str, object]]:
    """The 242 messages decoded by the real Handler."""
    with open(vector_path("session.decoded.jsonl")) as f:
        return [json.loads(line) for line in f]


def replay(direction: str, cuts: list[int] | None) -> list[tuple[int, str, int, str]]:
    """Decode one direction's raw bytes, fed in the captured recv() pieces if given."""
    wire = read_vector(f"session.{direction}.bin")
    codec = FernetCodec(VECTOR_KEY)
    decoder = FrameDecoder()
    reassembler = Reassembler()
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)] if (
        cuts) else [wire]
    out = []
    for piece in pieces:
        for frame in decoder.feed(piece):
            message = reassembler.add(frame)
            if message is not None:
                plain = codec.decrypt(message.payload)
                out.append((message.counter, message.command.decode(), len(plain),
                            hashlib.sha256(plain).hexdigest()))
    return out


class SessionReplayTests(SynchronousTestCase):
    """Our decoder turns the captured streams into exactly the messages Wazuh saw."""

    def _expected(self, direction: str) -> list[tuple[int, str, int, str]]:
        return [(int(m["counter"]), str(m["cmd"]), int(m["payload_len"]),  # type: ignore
                 str(m["payload_sha256"])) for m in expected_messages() if m["dir"] == direction]

    def test_session_has_242_messages(self) -> None:
        """Both directions together decode to the 242 recorded messages."""
        total = len(replay("w2m", None)) + len(replay("m2w", None))
        self.assertEqual(total, 242)
        self.assertEqual(total, len(expected_messages()))

    def test_worker_to_master_stream(self) -> None:
        """The worker's stream decodes message for message (counter, command, payload)."""
        self.assertEqual(replay("w2m", None), self._expected("w2m"))

    def test_master_to_worker_stream(self) -> None:
        """The master's stream decodes message for message (counter, command, payload)."""
        self.assertEqual(replay("m2w", None), self._expected("m2w"))

    def test_captured_read_boundaries(self) -> None:
        """Fed in the exact recv() pieces the relay saw, the result is the same."""
        with open(vector_path("session.chunks.jsonl")) as f:
            chunks = [json.loads(line) for line in f]
        for direction in ("w2m", "m2w"):
            ends = [c["offset"] + c["len"] for c in chunks if c["dir"] == direction]
            self.assertEqual(replay(direction, ends[:-1]), self._expected(direction))
