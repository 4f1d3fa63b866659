"""Atomic replacement of the API's own small files (users, keys, certificates)."""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_atomic(path: str, content: bytes, mode: int = 0o640) -> None:
    """Replace ``path`` with ``content``: temp file in the same directory, fsync, rename."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
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
