"""Divided messages: splitting one logical message into frames, and reassembling them.

Wazuh decides on the *plaintext* size: a plaintext of at most ``REQUEST_CHUNK`` bytes goes in
one frame whatever the size of its token; a longer one is encrypted once and the token is cut
into frames of at most ``REQUEST_CHUNK`` bytes *including* the 20-byte header. The receiver
joins the pieces by counter and decrypts once. Pure code: no I/O, no Twisted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from wazuhcluster.protocol.frames import (
    HEADER,
    HEADER_SIZE,
    Frame,
    FrameError,
    command_field,
)

REQUEST_CHUNK = 5 * 1024 * 1024  # 5 242 880
FRAGMENT_PAYLOAD = REQUEST_CHUNK - HEADER_SIZE  # 5 242 860

#: Defaults for the reassembly limits (Wazuh 4.14 adopted the same figures).
DEFAULT_MAX_MESSAGE = 256 * 1024 * 1024
DEFAULT_MAX_DIVIDED = 10


def encode_message(counter: int, command: bytes, plaintext_length: int,
                   wire_payload: bytes) -> Iterator[bytes]:
    """Yield the frames (each one ready for a single write) of one logical message.

    :param plaintext_length: the size before encryption; it alone decides division.
    :param wire_payload: the payload as it travels (token, or plaintext on the local socket).
    """
    if plaintext_length <= REQUEST_CHUNK:
        yield HEADER.pack(counter, len(wire_payload), command_field(command)) + wire_payload
        return
    divided = command_field(command, divided=True)
    last = command_field(command)[:-1] + b"-"
    view = memoryview(wire_payload)
    for start in range(0, len(view), FRAGMENT_PAYLOAD):
        piece = view[start:start + FRAGMENT_PAYLOAD]
        final = start + FRAGMENT_PAYLOAD >= len(view)
        yield HEADER.pack(counter, len(piece), last if final else divided) + piece


def encode_message_parts(counter: int, command: bytes, plaintext_length: int,
                         wire_payload: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The frames of :func:`encode_message` as (header, payload piece) pairs, for writers that
    can send two buffers without joining them (the same bytes in the same order).

    Written out rather than shared with :func:`encode_message` through a common generator:
    that extra layer cost 5-10 % of a 1 KiB message's whole codec time (bench/codec.py,
    interleaved runs)."""
    if plaintext_length <= REQUEST_CHUNK:
        yield HEADER.pack(counter, len(wire_payload), command_field(command)), wire_payload
        return
    divided = command_field(command, divided=True)
    last = command_field(command)[:-1] + b"-"
    view = memoryview(wire_payload)
    for start in range(0, len(view), FRAGMENT_PAYLOAD):
        piece = view[start:start + FRAGMENT_PAYLOAD]
        final = start + FRAGMENT_PAYLOAD >= len(view)
        yield HEADER.pack(counter, len(piece), last if final else divided), bytes(piece)


class Message(NamedTuple):
    """One logical message: all fragments joined, payload still as it travelled."""

    counter: int
    command: bytes
    payload: bytes


class Reassembler:
    """Joins divided frames by counter, within limits.

    :param max_message: the largest reassembled payload accepted.
    :param max_divided: how many divided messages may be open at once.
    """

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE,
                 max_divided: int = DEFAULT_MAX_DIVIDED) -> None:
        self.max_message = max_message
        self.max_divided = max_divided
        # counter -> (pieces, their total size): pieces are kept as received and joined
        # once, so a growing message never reallocates (no hidden 2x copies).
        self._open: dict[int, tuple[list[bytes], list[int]]] = {}
        self.open_bytes = 0  #: bytes held for divided messages not yet complete

    def add(self, frame: Frame) -> Message | None:
        """Take one frame; return the message it completes, if any."""
        box = self._open.get(frame.counter)
        if box is None:
            if not frame.divided:
                return Message(frame.counter, frame.command, frame.payload)
            if len(self._open) >= self.max_divided:
                raise FrameError(f"more than {self.max_divided} divided messages open at once")
            box = self._open[frame.counter] = ([], [0])
        pieces, size = box
        if size[0] + len(frame.payload) > self.max_message:
            raise FrameError(f"divided message exceeds the limit of {self.max_message} bytes")
        pieces.append(frame.payload)
        size[0] += len(frame.payload)
        self.open_bytes += len(frame.payload)
        if frame.divided:
            return None
        del self._open[frame.counter]
        self.open_bytes -= size[0]
        return Message(frame.counter, frame.command, b"".join(pieces))
