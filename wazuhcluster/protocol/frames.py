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
from typing import NamedTuple, cast

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
        self._payload: bytearray | None = None  # the payload being received, full size
        self._filled = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        if self._payload is not None:  # allocated at its announced size
            return HEADER_SIZE + len(self._payload)
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data``; return the frames it completes (possibly none)."""
        frames: list[Frame] = []
        if not self._buffer and self._header is None:
            # Fast path: whole frames straight from ``data``, no intermediate buffer.
            offset, end = 0, len(data)
            while end - offset >= HEADER_SIZE:
                counter, length, field = HEADER.unpack_from(data, offset)
                if length > self.max_payload:
                    raise FrameError(
                        f"announced payload of {length} bytes exceeds the limit of "
                        f"{self.max_payload} bytes")
                command, divided = parse_command_field(field)
                start = offset + HEADER_SIZE
                if end - start < length:
                    break
                frames.append(Frame(counter, command, data[start:start + length], divided))
                offset = start + length
            if offset == end:
                return frames
            data = data[offset:]
        view = memoryview(data)
        while view:
            if self._header is None:
                # Header bytes only: at most HEADER_SIZE - 1 of them wait here.
                take = HEADER_SIZE - len(self._buffer)
                self._buffer += view[:take]
                view = view[take:]
                if len(self._buffer) < HEADER_SIZE:
                    break
                counter, length, field = HEADER.unpack_from(self._buffer)
                if length > self.max_payload:
                    raise FrameError(
                        f"announced payload of {length} bytes exceeds the limit of "
                        f"{self.max_payload} bytes")
                command, divided = parse_command_field(field)
                self._buffer = bytearray()
                self._header = (counter, length, command, divided)
                # The payload is filled in place: no growing buffer that reallocates
                # (copies) and keeps its peak size, no second copy at the end.
                self._payload = bytearray(length)
                self._filled = 0
            counter, length, command, divided = self._header
            assert self._payload is not None
            take = min(length - self._filled, len(view))
            self._payload[self._filled:self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled < length:
                break
            payload, self._payload, self._header = self._payload, None, None
            # A divided fragment stays a bytearray (the reassembler joins it, once);
            # anything handed on as a frame of its own becomes bytes.
            # (a bytearray is a bytes-like payload for every consumer of a fragment)
            frames.append(Frame(counter, command,
                                cast(bytes, payload) if divided else bytes(payload), divided))
            if not view and not self._buffer:
                break
            if len(view) >= HEADER_SIZE:
                return frames + self.feed(bytes(view))  # whole frames again: fast path
        return frames
