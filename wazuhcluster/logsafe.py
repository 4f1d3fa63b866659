"""Peer-supplied text on its way into a log line: escaped and cut.

A worker name, an error text or a path sent by a peer may hold newlines (a forged second log
line), ANSI escapes (a terminal that repaints) or undecodable bytes. :func:`peer_text` turns
any of them into one printable, bounded line; plain names stay as they are, so ordinary log
lines do not change.
"""

from __future__ import annotations

#: The default length a peer-supplied string is cut to in a log line.
MAX_LOGGED = 128


def peer_text(value: str | bytes, limit: int = MAX_LOGGED) -> str:
    """``value`` escaped repr-style when it holds anything but printable characters, and cut
    to ``limit`` characters (with ``...`` and the original length when cut)."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    original = len(text)
    if len(text) > limit:
        text = text[:limit]
    if not text.isprintable():
        text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
        if len(text) > limit:
            text = text[:limit]
    if original > limit:
        text += f"... ({original} characters)"
    return text
