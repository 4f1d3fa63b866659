"""Cluster wire frames: the 20-byte header, command field, encoder and push parser.

No I/O happens here and nothing here imports Twisted. The layout follows the Wazuh 4.7.5
protocol (``docs/protocol.md``): ``struct "!2I12s"`` = counter, payload length, command
field. The command field is the name, one space, then dashes up to 12 bytes; the 12th byte
is the *divided* flag (``d`` on every fragment but the last of a divided message).

The decoder is an explicit two-state machine (WAIT_HEADER / WAIT_PAYLOAD), so a read that
ends exactly after a header never desynchronises the stream (a Wazuh 4.7.5 bug),
and it refuses an announced payload above its limit *before* buffering anything of it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import NamedTuple

HEADER = struct.Struct("!II12s")
HEADER_SIZE = HEADER.size  # 20
COMMAND_FIELD_SIZE = 12
MAX_COMMAND_LENGTH = COMMAND_FIELD_SIZE - 1  # the 12th byte is the divided flag
DIVIDED_FLAG = ord("d")
MAX_COUNTER = 2**32 - 1

#: Payload limit of one frame: a 5 MiB plaintext encrypts to 6 990 604 bytes, the largest
#: single frame a reference node produces; 8 MiB leaves room and still bounds memory.
DEFAULT_MAX_FRAME_PAYLOAD = 8 * 1024 * 1024


class FrameError(Exception):
    """The byte stream cannot be a valid frame sequence; the connection must be dropped."""


class Frame(NamedTuple):
    """One frame as it travels: the payload is the (possibly encrypted) bytes of this frame.

    A NamedTuple rather than an attrs class: one is built per frame on the hot path.
    """

    counter: int
    command: bytes
    payload: bytes
    divided: bool = False


def command_field(command: bytes, divided: bool = False) -> bytes:
    """Return the 12-byte command field for ``command``.

    Non-final fragments of a divided message carry ``d`` as last byte; the last fragment of
    a divided message carries ``-`` there (so an 11-byte name gets no space at all).
    """
    if not 0 < len(command) <= MAX_COMMAND_LENGTH:
        raise ValueError(f"command name must be 1..{MAX_COMMAND_LENGTH} bytes: {command!r}")
    field = command + b" " + b"-" * (COMMAND_FIELD_SIZE - len(command) - 1)
    if divided:
        return field[:-1] + b"d"
    return field


def last_fragment_field(command: bytes) -> bytes:
    """Return the command field of the final fragment of a divided message."""
    return command_field(command)[:-1] + b"-"


def parse_command_field(field: bytes) -> tuple[bytes, bool]:
    """Return ``(name, divided)`` for a 12-byte command field.

    As the reference receiver does: the flag is the last byte, the name is the first 11 bytes
    cut at the first space. An empty name cannot be dispatched and is a framing error.
    """
    divided = field[-1] == DIVIDED_FLAG
    name = field[:MAX_COMMAND_LENGTH].split(b" ", 1)[0]
    if not name:
        raise FrameError("empty command name in frame header")
    return name, divided


def encode_header(counter: int, length: int, field: bytes) -> bytes:
    """Pack one header."""
    return HEADER.pack(counter, length, field)


def encode_frame(frame: Frame) -> bytes:
    """Serialize one frame: header followed by payload, ready for a single write."""
    return HEADER.pack(frame.counter, len(frame.payload),
                       command_field(frame.command, frame.divided)) + frame.payload


class FrameDecoder:
    """Accumulates bytes and returns every complete frame they contain.

    :param max_payload: the largest payload one frame may announce; a larger announcement
        raises :class:`FrameError` before any of it is buffered.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_FRAME_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()  # header bytes (fewer than HEADER_SIZE)
        self._header: tuple[int, int, bytes, bool] | None = None  # WAIT_PAYLOAD when set
        # The payload being received, as the pieces it arrived in: joined once when complete
        # (one copy; no growing buffer that reallocates and keeps its peak size).
        self._pieces: list[bytes | memoryview] = []
        self._filled = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes received that do not yet form a complete frame (a payload being received
        counts at its announced size: the join that completes it allocates that much)."""
        if self._header is not None:
            return HEADER_SIZE + self._header[1]
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data``; return the frames it completes (possibly none)."""
        return self.feed_pieces((data,))

    def feed_pieces(self, pieces: Iterable[bytes | memoryview]) -> list[Frame]:
        """Add the bytes of ``pieces`` in order; return the frames they complete.

        The same as feeding their concatenation, without making it: a piece that falls
        inside a payload is kept as it is until the payload is complete. Pieces may also be
        memoryviews (the TLS link's reads); frames always get ``bytes`` payloads.
        """
        frames: list[Frame] = []
        for data in pieces:
            if data:
                self._feed(data, frames)
        return frames

    def _feed(self, data: bytes | memoryview, frames: list[Frame]) -> None:
        offset, end = 0, len(data)
        while offset < end:
            if not self._buffer and self._header is None:
                # Fast path: whole frames straight from ``data``, no intermediate buffer.
                while end - offset >= HEADER_SIZE:
                    counter, length, field = HEADER.unpack_from(data, offset)
                    self._check(length)
                    command, divided = parse_command_field(field)
                    start = offset + HEADER_SIZE
                    if end - start < length:
                        break
                    payload = data[start:start + length]
                    frames.append(Frame(counter, command, payload if type(payload) is bytes
                                        else bytes(payload), divided))
                    offset = start + length
                if offset == end:
                    return
            if self._header is None:
                # Header bytes only: at most HEADER_SIZE - 1 of them wait here.
                take = min(HEADER_SIZE - len(self._buffer), end - offset)
                self._buffer += data[offset:offset + take]
                offset += take
                if len(self._buffer) < HEADER_SIZE:
                    return
                counter, length, field = HEADER.unpack_from(self._buffer)
                self._check(length)
                command, divided = parse_command_field(field)
                self._buffer = bytearray()
                self._header = (counter, length, command, divided)
                self._pieces = []
                self._filled = 0
            counter, length, command, divided = self._header
            take = min(length - self._filled, end - offset)
            if take == end:  # (offset is 0) the whole piece: kept, not copied
                self._pieces.append(data)
            elif take:
                # Part of a piece: copied, so that a small part never pins a big piece; a
                # view when the part is at least half of a memoryview piece (the TLS link's
                # reads: one copy fewer per MiB, at most twice the part pinned).
                part = data[offset:offset + take]
                self._pieces.append(part if type(part) is memoryview and take * 2 >= end
                                    else bytes(part))
            self._filled += take
            offset += take
            if self._filled < length:
                return
            pieces, self._pieces, self._header = self._pieces, [], None
            payload = (pieces[0] if len(pieces) == 1 and type(pieces[0]) is bytes
                       else b"".join(pieces))
            frames.append(Frame(counter, command, payload, divided))

    def _check(self, length: int) -> None:
        if length > self.max_payload:
            raise FrameError(
                f"announced payload of {length} bytes exceeds the limit of "
                f"{self.max_payload} bytes")
