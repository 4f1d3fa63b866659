"""``etc/client.keys`` as the master's registrar changes it.

:func:`plan_batch` is pure: it applies a batch of adds and removals, in order, to a snapshot of
the file, following authd's rules (duplicate IP, duplicate name, replacement under ``<force>``,
ids never reused). :func:`read_keys` and :func:`write_keys` are the blocking parts (run them off
the reactor); :func:`write_keys` replaces the file atomically (temporary file in ``etc/``, fsync,
rename, fsync of the directory), so a reader never sees a half-written file.

Removed agents stay in the file as ``<id> !<name> <ip> <key>`` unless purged, as Wazuh keeps
them, so their ids are never given again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from wazuhcluster.enrolment.authconfig import ForceOptions
from wazuhcluster.enrolment.messages import key_hash as compute_key_hash


@attrs.frozen
class KeyLine:
    """One line of client.keys (active or removed)."""

    agent_id: int
    name: str
    ip: str
    key: str
    removed: bool = False

    @property
    def id_text(self) -> str:
        """The id as written in the file (at least three digits)."""
        return f"{self.agent_id:03d}"

    def render(self) -> str:
        """The line, without its newline."""
        mark = "!" if self.removed else ""
        return f"{self.id_text} {mark}{self.name} {self.ip} {self.key}"


@attrs.frozen
class AgentStatus:
    """What the replacement rules need to know about an existing agent."""

    connection_status: str
    disconnection_time: int
    date_add: int


@attrs.frozen
class AddOp:
    """An enrolment to apply."""

    name: str
    ip: str
    groups: tuple[str, ...] | None = None
    key: str | None = None        # given by the requester (a forwarding worker), else generated
    key_hash: str | None = None
    agent_id: int | None = None   # an explicit id (authd's local ``id`` argument)
    force: ForceOptions | None = None


@attrs.frozen
class RemoveOp:
    """A removal to apply."""

    agent_id: int
    purge: bool


@attrs.frozen
class Outcome:
    """The result of one operation: ``line`` on success, else authd's error code and texts.

    ``agent_error`` is the text an agent gets over TLS (``ERROR: <agent_error>``); ``code`` and
    ``message`` are authd's local-protocol error.
    """

    line: KeyLine | None = None
    replayed: bool = False
    code: int = 0
    message: str = ""
    agent_error: str = ""
    replaced: tuple[int, ...] = ()
    log: str = ""


#: authd's local-protocol errors.
ERR_DUPLICATE_IP = (9007, "Duplicate IP")
ERR_DUPLICATE_NAME = (9008, "Duplicate name")
ERR_NO_AGENT = (9011, "Agent ID not found")
ERR_DUPLICATE_ID = (9012, "Duplicate ID")
ERR_INVALID_GROUP = (9014, "Invalid Group(s) Name(s)")


def parse_lines(text: str) -> list[KeyLine]:
    """Every line of client.keys that names an agent, active or removed (others are dropped)."""
    lines: list[KeyLine] = []
    for raw in text.splitlines():
        if not raw or raw[0] in "# ":
            continue
        fields = raw.split(" ", 3)
        if len(fields) < 4 or not fields[0].isdigit() or not fields[1] or not fields[2]:
            continue
        name = fields[1]
        removed = name[0] in "!#"
        lines.append(KeyLine(int(fields[0]), name[1:] if removed else name, fields[2],
                             fields[3].rstrip("\r"), removed))
    return lines


def render(lines: Sequence[KeyLine]) -> str:
    """The file content for ``lines``."""
    return "".join(line.render() + "\n" for line in lines)


def read_keys(path: str) -> list[KeyLine]:
    """Read client.keys (blocking); a missing file is empty."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_lines(f.read())
    except FileNotFoundError:
        return []


def write_keys(path: str, lines: Sequence[KeyLine]) -> None:
    """Replace client.keys atomically with ``lines`` (blocking)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".client.keys.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render(lines))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o640)
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


def new_key() -> str:
    """A fresh agent key: 64 hexadecimal characters."""
    return secrets.token_hex(32)


def conflicts(lines: Sequence[KeyLine], ops: Sequence[AddOp]) -> set[int]:
    """Ids of active agents an add of ``ops`` collides with (for their database status)."""
    ids: set[int] = set()
    for line in lines:
        if line.removed:
            continue
        for op in ops:
            if line.name == op.name or (op.ip != "any" and line.ip == op.ip) or (
                    op.agent_id == line.agent_id):
                ids.add(line.agent_id)
    return ids


def _may_replace(line: KeyLine, op: AddOp, force: ForceOptions,
                 status: AgentStatus | None, now: int) -> tuple[bool, str]:
    """authd's replacement rule for an existing agent; (allowed, explanation)."""
    if not force.enabled:
        return False, (f"Agent '{line.id_text}' won't be removed because the force option is "
                       "disabled.")
    if status is None:
        return False, f"Failed to get agent-info for agent '{line.id_text}'"
    if force.disconnected_time_enabled and status.connection_status != "never_connected":
        if (status.connection_status == "disconnected" and status.disconnection_time > 0
                and now - status.disconnection_time < force.disconnected_time):
            return False, (f"Agent '{line.id_text}' has not been disconnected long enough to be "
                           "replaced.")
        if status.disconnection_time == 0:
            return False, (f"Agent '{line.id_text}' can't be replaced since it is not "
                           "disconnected.")
    if force.after_registration_time > 0 and now - status.date_add < (
            force.after_registration_time):
        return False, (f"Agent '{line.id_text}' doesn't comply with the registration time to "
                       "be removed.")
    if op.key_hash and force.key_mismatch and (
            compute_key_hash(line.id_text, line.name, line.key) == op.key_hash):
        return False, f"Agent '{line.id_text}' key already exists on the manager."
    return True, f"Removing old agent '{line.name}' (id '{line.id_text}')."


@attrs.define
class BatchResult:
    """What :func:`plan_batch` produced."""

    lines: list[KeyLine]
    outcomes: list[Outcome]
    changed: bool


def plan_batch(lines: Sequence[KeyLine], ops: Sequence[AddOp | RemoveOp], *,
               statuses: Mapping[int, AgentStatus], default_force: ForceOptions,
               purge: bool, manager_name: str, now: int | None = None,
               make_key: Callable[[], str] = new_key) -> BatchResult:
    """Apply ``ops`` in order to ``lines``; returns the new lines and one outcome per op.

    :param statuses: database status of the agents :func:`conflicts` named.
    :param purge: ``<purge>``: removed agents leave the file (else they stay marked ``!``).
    :param manager_name: the manager's host name, refused as an agent name.
    """
    now = int(time.time()) if now is None else now
    current = list(lines)
    outcomes: list[Outcome] = []
    changed = False

    def drop(index: int, purge_it: bool) -> None:
        line = current[index]
        if purge_it:
            del current[index]
        else:
            current[index] = attrs.evolve(line, removed=True)

    for op in ops:
        if isinstance(op, RemoveOp):
            index = next((i for i, ln in enumerate(current)
                          if ln.agent_id == op.agent_id and not ln.removed), None)
            if index is None:
                outcomes.append(Outcome(code=ERR_NO_AGENT[0], message=ERR_NO_AGENT[1]))
                continue
            removed = current[index]
            drop(index, op.purge or purge)
            changed = True
            outcomes.append(Outcome(line=removed))
            continue
        force = op.force or default_force
        active = [(i, ln) for i, ln in enumerate(current) if not ln.removed]
        if op.key is not None:
            same = next((ln for _, ln in active if ln.name == op.name and ln.key == op.key
                         and ln.ip == op.ip), None)
            if same is not None:  # the requester retries an enrolment it already made
                outcomes.append(Outcome(line=same, replayed=True))
                continue
        replaced: list[int] = []
        logs: list[str] = []
        refusal: Outcome | None = None
        checks: list[tuple[str, Any, tuple[int, str], str]] = []
        if op.agent_id is not None:
            checks.append(("agent_id", op.agent_id, ERR_DUPLICATE_ID, "Duplicate ID"))
        if op.ip != "any":
            checks.append(("ip", op.ip, ERR_DUPLICATE_IP, f"Duplicate IP: {op.ip}"))
        for field, wanted, error, agent_text in checks:
            hit = next((ln for ln in current
                        if not ln.removed and getattr(ln, field) == wanted), None)
            if hit is None:
                continue
            allowed, why = _may_replace(hit, op, force, statuses.get(hit.agent_id), now)
            logs.append(why)
            if not allowed:
                refusal = Outcome(code=error[0], message=error[1], agent_error=agent_text,
                                  log=why)
                break
            drop(current.index(hit), purge)
            replaced.append(hit.agent_id)
        if refusal is None and op.name == manager_name:
            refusal = Outcome(code=ERR_DUPLICATE_NAME[0], message=ERR_DUPLICATE_NAME[1],
                              agent_error=f"Invalid agent name: {op.name}",
                              log="same name as the manager")
        if refusal is None:
            hit = next((ln for ln in current if not ln.removed and ln.name == op.name), None)
            if hit is not None:
                allowed, why = _may_replace(hit, op, force, statuses.get(hit.agent_id), now)
                logs.append(why)
                if not allowed:
                    refusal = Outcome(code=ERR_DUPLICATE_NAME[0], message=ERR_DUPLICATE_NAME[1],
                                      agent_error=f"Duplicate agent name: {op.name}", log=why)
                else:
                    drop(current.index(hit), purge)
                    replaced.append(hit.agent_id)
        if refusal is not None:
            outcomes.append(refusal)
            changed = changed or bool(replaced)
            continue
        agent_id = op.agent_id if op.agent_id is not None else (
            max((ln.agent_id for ln in current), default=0) + 1)
        line = KeyLine(agent_id, op.name, op.ip, op.key or make_key())
        current.append(line)
        changed = True
        outcomes.append(Outcome(line=line, replaced=tuple(replaced), log=" ".join(logs)))
    return BatchResult(current, outcomes, changed)
