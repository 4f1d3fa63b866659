"""Whether the peer's TCP is still acknowledging what we send (Linux ``TCP_INFO``).

A link busy pushing a big container over a slow line can go many seconds without a byte from
the peer's application: the peer answers a ``file_upd`` only once the whole chunk has arrived,
and our liveness probe waits in the send queue behind that chunk. Its kernel, though, keeps
acknowledging the bytes as they arrive. A silently cut link acknowledges nothing, so "data of
ours is in flight and was acknowledged recently" tells a slow link from a dead one.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

# struct tcp_info: 8 one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked,
# lost, retrans, fackets, last_data_sent, last_ack_sent, last_data_recv, last_ack_recv (ms).
_TCP_INFO = struct.Struct("8B13I")
_UNACKED = 8 + 4
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
    """True when we have unacknowledged data in flight and the peer's TCP acknowledged
    something less than ``within`` seconds ago (False where TCP_INFO is not available)."""
    sock = _socket_of(transport)
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return False
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    except OSError:
        return False
    if len(raw) < _TCP_INFO.size:
        return False
    fields = _TCP_INFO.unpack(raw)
    unacked: int = fields[_UNACKED]
    last_ack_recv_ms: int = fields[_LAST_ACK_RECV]
    return unacked > 0 and last_ack_recv_ms < within * 1000
