"""The framing of Wazuh's local daemon sockets (wazuh-db ``queue/db/wdb``, authd, remoted,
the task manager): each message is a 4-byte little-endian length followed by that many
bytes. Sans-IO: no Twisted here.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("<I")


class LengthPrefixError(ValueError):
    """The peer announced a message above the limit (refused before any allocation)."""


def encode(message: bytes) -> bytes:
    """One framed message."""
    return HEADER.pack(len(message)) + message


class LengthPrefixDecoder:
    """Splits a byte stream into length-prefixed messages.

    :param max_size: the largest message accepted; a bigger announced length raises
        LengthPrefixError before anything is buffered for it.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the messages now complete."""
        self._buffer += data
        out: list[bytes] = []
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > self.max_size:
                raise LengthPrefixError(f"announced {length} bytes, limit {self.max_size}")
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            out.append(bytes(self._buffer[HEADER.size:end]))
            del self._buffer[:end]
        return out
