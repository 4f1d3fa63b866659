"""``etc/client.keys``: parsing, and the plan that reconciles the agent database with it.

Format (one agent per line, fields separated by single spaces, the key is the rest of the line)::

    001 agent-name 10.0.0.1 0123456789abcdef...
    002 other any 89abcdef...
    003 !removed-agent any 0011...

As in Wazuh's key reader: lines starting with ``#`` or a space are ignored; a name starting with
``#`` or ``!`` marks a removed agent (kept in the file, not an agent); lines without the four
fields are skipped. The IP field is an address, a CIDR block or ``any``.

Everything here is pure; :meth:`wazuhcluster.agents.db.AgentDatabase.reconcile_keys` applies
the plan in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

import attrs


class KeyEntry(NamedTuple):
    """One active agent of ``client.keys``.

    A named tuple, not an attrs class: a worker parses one per agent (200 000 of them at
    scale) every time the file changes, and a tuple is about three times cheaper to make."""

    agent_id: int
    name: str
    ip: str
    key: str


class StoredAgent(NamedTuple):
    """What the database holds about an agent, as far as ``client.keys`` is concerned
    (compares equal to the ``(name, register_ip, internal_key)`` row it is read from)."""

    name: str
    register_ip: str | None
    internal_key: str | None


@attrs.frozen
class ReconcilePlan:
    """Changes that make the database agree with ``client.keys``."""

    insert: tuple[KeyEntry, ...] = ()
    update: tuple[KeyEntry, ...] = ()
    remove: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the database already agrees with the keys."""
        return not (self.insert or self.update or self.remove)


def register_ip(ip: str) -> str:
    """The ``register_ip`` value stored for a key's IP field (a ``/32`` suffix is dropped)."""
    return ip[:-3] if ip.endswith("/32") else ip


def _entries(lines: Iterable[str]) -> Iterator[KeyEntry]:
    """The active agents of ``client.keys`` lines, in file order (duplicates included)."""
    new = tuple.__new__  # KeyEntry._make without its Python frame: 200 000 calls at scale
    for line in lines:
        if not line or line[0] in "# \n":
            continue
        fields = line.split(" ", 3)
        if len(fields) < 4:
            continue
        raw_id, name, ip, key = fields
        if name[:1] in ("#", "!") or not raw_id.isdigit() or not name or not ip:
            continue
        agent_id = int(raw_id)
        if agent_id == 0:
            continue
        yield new(KeyEntry, (agent_id, name, ip, key.rstrip("\r\n")))


def parse_client_keys(text: str) -> list[KeyEntry]:
    """Parse the content of ``client.keys``; removed and malformed lines are skipped.

    Agent id ``000`` (the manager) and non-numeric ids are skipped. When an id appears twice,
    the last line wins.
    """
    entries: dict[int, KeyEntry] = {}
    in_order = True
    last = -1
    for entry in _entries(text.splitlines()):
        agent_id = entry.agent_id
        if agent_id <= last:
            in_order = False
        last = agent_id
        entries[agent_id] = entry
    if in_order:  # the usual file: ids ascending, no duplicate; nothing to sort
        return list(entries.values())
    return sorted(entries.values(), key=lambda e: e.agent_id)


class KeysOutOfOrder(Exception):
    """:func:`iter_sorted_client_keys` met an id not above the one before it."""


def iter_sorted_client_keys(lines: Iterable[str]) -> Iterator[KeyEntry]:
    """The entries of ``client.keys`` lines one by one, for a file whose ids ascend (as every
    writer of the file keeps them), without holding the file or the entries in memory.

    :raises KeysOutOfOrder: at an id that is not above the previous one (a duplicate or
        an out-of-order line): the caller then reads the file with
        :func:`read_client_keys`, whose rules (the last line of an id wins) apply.
    """
    last = 0
    for entry in _entries(lines):
        if entry.agent_id <= last:
            raise KeysOutOfOrder(entry.agent_id)
        last = entry.agent_id
        yield entry


def read_client_keys(path: str) -> list[KeyEntry]:
    """Read and parse a ``client.keys`` file (blocking); a missing file means no agents."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_client_keys(f.read())
    except FileNotFoundError:
        return []


def plan_reconcile(
    stored: Mapping[int, tuple[str, str | None, str | None]], entries: Iterable[KeyEntry],
) -> ReconcilePlan:
    """Compute inserts, renames/re-keys and removals. Agent 000 is never touched.

    :param stored: agents currently in the database, by id, as :class:`StoredAgent` or the
        plain ``(name, register_ip, internal_key)`` row (agent 000 is ignored if present).
    :param entries: the parsed keys.
    """
    insert: list[KeyEntry] = []
    update: list[KeyEntry] = []
    wanted: set[int] = set()
    get = stored.get
    for entry in entries:
        agent_id, name, ip, key = entry
        if agent_id == 0:
            continue
        wanted.add(agent_id)
        current = get(agent_id)
        if current is None:
            insert.append(entry)
        elif current != (name, ip[:-3] if ip.endswith("/32") else ip, key):
            update.append(entry)
    remove = sorted(i for i in stored.keys() - wanted if i != 0)
    return ReconcilePlan(tuple(insert), tuple(update), tuple(remove))


def format_client_keys(entries: Sequence[KeyEntry]) -> str:
    """Serialize entries in ``client.keys`` format (used by tests and tools)."""
    return "".join(f"{e.agent_id:03d} {e.name} {e.ip} {e.key}\n" for e in entries)
