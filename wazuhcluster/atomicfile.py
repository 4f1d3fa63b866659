"""Atomic file replacement, the one way every feature writes a file that others read.

A temp file in the same directory (so the rename never crosses a filesystem), created with its
final mode already set (a key is never readable by others, not even for a moment), written,
fsynced, renamed over the target, and the directory fsynced so the rename survives a crash.
Readers see the old file or the new one, never a half-written one. Blocking: run it off the
reactor.
"""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_atomic(path: str, content: bytes, mode: int = 0o640) -> None:
    """Replace ``path`` with ``content`` atomically and durably."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
