"""Build ``merged.mg`` files the way Wazuh's manager does, and write them atomically.

Format of a ``merged.mg`` (what the agent downloads and unmerges)::

    #<group name>\\n
    !<size> ar.conf\\n<content of etc/shared/ar.conf>        (only if that file exists)
    !<size> <relative path>\\n<content>                      (each file of the group, sorted)
    ...

``<size>`` is the file's size in bytes in decimal; contents are copied verbatim (no newline is
added after them). Files are taken from ``etc/shared/<group>/`` recursively in byte-wise sorted
order per directory; names starting with ``.`` or with ``merged.mg`` are skipped, and so are
"binary" files (a NUL byte inside a newline-terminated line, Wazuh's test). Paths are relative
to the group directory.

A multi-group (an agent in several groups) uses ``var/multigroups/<hash>/merged.mg`` where
``<hash>`` is the first 8 hex digits of SHA-256 of the comma-separated group list. Its files are
the union of the groups' files in group order: a later group's file replaces an earlier one,
except ``agent.conf``, which is concatenated, each part preceded by
``<!-- Source file: <group>/agent.conf -->\\n``. The header line names the hash. Only the
``merged.mg`` file is written (Wazuh also keeps the copied files next to it; agents and the
cluster only use ``merged.mg``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence

from wazuhcluster.atomicfile import write_atomic

#: File name of a merged group configuration.
MERGED_NAME = "merged.mg"
#: Active-response file merged into every group, relative to the Wazuh home.
AR_CONF = os.path.join("etc", "shared", "ar.conf")


def multigroup_hash(groups: Sequence[str]) -> str:
    """Directory name of a multi-group under ``var/multigroups``."""
    return hashlib.sha256(",".join(groups).encode("utf-8")).hexdigest()[:8]


def is_binary(content: bytes) -> bool:
    """Wazuh's binary test: a NUL byte in a newline-terminated line."""
    end = content.rfind(b"\n")
    return end >= 0 and b"\0" in content[:end]


def merged_entry(name: str, content: bytes) -> bytes:
    """One ``!<size> <name>`` record."""
    return b"!%d %s\n" % (len(content), name.encode("utf-8")) + content


def _skipped(name: str) -> bool:
    """Names the merger never includes."""
    return name.startswith(".") or name.startswith(MERGED_NAME)


def _walk(root: str, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(relative path, absolute path)`` of files under ``root`` in Wazuh's order."""
    try:
        names = sorted(os.listdir(root), key=lambda n: n.encode("utf-8", "surrogateescape"))
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        if _skipped(name):
            continue
        full = os.path.join(root, name)
        if os.path.isdir(full):
            yield from _walk(full, prefix + name + "/")
        elif os.path.isfile(full):
            yield prefix + name, full


def _read(path: str) -> bytes:
    """Read a whole file."""
    with open(path, "rb") as f:
        return f.read()


def group_files(home: str, group: str) -> list[tuple[str, bytes]]:
    """The ``(relative path, content)`` pairs of a group directory, in merge order."""
    root = os.path.join(home, "etc", "shared", group)
    return [(rel, _read(full)) for rel, full in _walk(root)]


def build_merged(header: str, files: Sequence[tuple[str, bytes]],
                 ar_conf: bytes | None) -> bytes:
    """Assemble a ``merged.mg`` from its header name, ``ar.conf`` and the group's files."""
    parts = [b"#%s\n" % header.encode("utf-8")]
    if ar_conf is not None:
        parts.append(merged_entry("ar.conf", ar_conf))
    parts.extend(merged_entry(name, content) for name, content in files
                 if not is_binary(content))
    return b"".join(parts)


def _ar_conf(home: str) -> bytes | None:
    """Content of ``etc/shared/ar.conf`` or None."""
    try:
        return _read(os.path.join(home, AR_CONF))
    except FileNotFoundError:
        return None


def group_merged(home: str, group: str) -> bytes:
    """The ``merged.mg`` content of one group (blocking)."""
    return build_merged(group, group_files(home, group), _ar_conf(home))


def multigroup_files(home: str, groups: Sequence[str]) -> list[tuple[str, bytes]]:
    """The union of several groups' files, as Wazuh copies them into a multi-group directory."""
    merged: dict[str, bytes] = {}
    for group in groups:
        for rel, content in group_files(home, group):
            if os.path.basename(rel) == "agent.conf":
                source = b"<!-- Source file: %s/agent.conf -->\n" % group.encode("utf-8")
                merged[rel] = merged.get(rel, b"") + source + content
            else:
                merged[rel] = content
    return sorted(merged.items(), key=lambda item: _sort_key(item[0]))


def _sort_key(rel: str) -> list[bytes]:
    """Order of a relative path in a per-directory sorted walk."""
    return [part.encode("utf-8", "surrogateescape") for part in rel.split("/")]


def multigroup_merged(home: str, groups: Sequence[str]) -> bytes:
    """The ``merged.mg`` content of a multi-group (blocking)."""
    return build_merged(multigroup_hash(groups), multigroup_files(home, groups), _ar_conf(home))


def atomic_write(path: str, content: bytes, mode: int = 0o660,
                 create_dirs: bool = True) -> bool:
    """Replace ``path`` with ``content`` atomically (temp file, fsync, rename, fsync dir).

    :param create_dirs: create the missing directories of ``path`` (else a missing one is
        ``FileNotFoundError``).
    :returns: False when the file already had exactly this content (nothing is written).
    """
    try:
        if _read(path) == content:
            return False
    except FileNotFoundError:
        pass
    if create_dirs:
        os.makedirs(os.path.dirname(path) or ".", mode=0o770, exist_ok=True)
    write_atomic(path, content, mode)
    return True


def write_group_merged(home: str, group: str) -> bool:
    """Write ``etc/shared/<group>/merged.mg``; returns True if the file changed.

    A group whose directory is gone (removed by an operator after the check that found it
    changed) is left gone: writing its merged.mg must not bring the directory back, which
    would then be pushed to every worker as a group of one file."""
    try:
        return atomic_write(os.path.join(home, "etc", "shared", group, MERGED_NAME),
                            group_merged(home, group), create_dirs=False)
    except FileNotFoundError:
        if os.path.isdir(os.path.join(home, "etc", "shared", group)):
            raise
        return False


def write_multigroup_merged(home: str, groups: Sequence[str]) -> tuple[str, bool]:
    """Write ``var/multigroups/<hash>/merged.mg``; returns the hash and whether it changed."""
    name = multigroup_hash(groups)
    changed = atomic_write(os.path.join(home, "var", "multigroups", name, MERGED_NAME),
                           multigroup_merged(home, groups))
    return name, changed
