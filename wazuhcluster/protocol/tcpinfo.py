"""Whether the peer's TCP is still acknowledging what we send (Linux ``TCP_INFO``).

A link busy pushing a big container over a slow line can go many seconds without a byte from
the peer's application: the peer answers a ``file_upd`` only once the whole chunk has arrived,
and our liveness probe waits in the send queue behind that chunk. Its kernel, though, keeps
acknowledging the bytes as they arrive. A silently cut link acknowledges nothing, so "data of
ours is in flight and was acknowledged recently" tells a slow link from a dead one.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from typing import Any

# struct tcp_info: 8 one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked,
# lost, retrans, fackets, last_data_sent, last_ack_sent, last_data_recv, last_ack_recv (ms).
_TCP_INFO = struct.Struct("8B13I")
_LAST_ACK_RECV = 8 + 12


def _socket_of(transport: Any) -> socket.socket | None:
    """The TCP socket under ``transport`` (through a TLS wrapper), if there is one."""
    for _ in range(3):
        if transport is None:
            return None
        sock = getattr(transport, "socket", None)
        if isinstance(sock, socket.socket):
            return sock
        transport = getattr(transport, "transport", None)
    return None


def acknowledging(transport: Any, within: float) -> bool:
    """True when data of ours waits in the socket's send queue (in flight, or held back by a
    full receive window) and the peer's TCP acknowledged something (data, a window update, a
    zero-window probe) less than ``within`` seconds ago. False where TCP_INFO is unavailable.

    A silently cut link acknowledges nothing. A frozen peer process (SIGSTOP) still has its
    kernel answer window probes while we are sending to it; that case falls to the keepalive
    rule (max_allowed_time_without_keepalive) instead."""
    sock = _socket_of(transport)
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return False
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    except OSError:
        return False
    if len(raw) < _TCP_INFO.size:
        return False
    last_ack_recv_ms: int = _TCP_INFO.unpack(raw)[_LAST_ACK_RECV]
    try:
        queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except OSError:
        return False
    return bool(queued > 0 and last_ack_recv_ms < within * 1000)
