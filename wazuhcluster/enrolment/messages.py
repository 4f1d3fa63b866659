"""The agent enrolment protocol of Wazuh 4.7.5's authd, and its validation rules. Pure code.

An agent opens a TLS connection to port 1515 and sends one request::

    [OSSEC PASS: <password> ]OSSEC A:'<name>'[ V:'<version>'][ G:'<group>[,<group>...]']
        [ IP:'<ip>'][ K:'<key hash>']            (one line, optional parts in this order)

The manager answers ``OSSEC K:'<id> <name> <ip> <key>'`` or, on refusal, ``ERROR: <reason>``
followed by ``ERROR: Unable to add agent`` (authd writes both; an agent reads them as one text).
The optional fields must come in that order; a field that is opened and not closed is refused
("Unterminated ... field"). ``IP:'src'`` means "the address I connect from". Without an ``IP``
field the agent is registered with ``any``, or with its source address when the manager sets
``<use_source_ip>``. ``K`` is the SHA-1 of the key the agent already holds (id, name and key
concatenated), used by the ``key_mismatch`` replacement rule.
"""

from __future__ import annotations

import hashlib
import ipaddress
import string

import attrs

#: authd reads at most this many bytes of one request (64 KiB of groups and 4 KiB of the rest).
MAX_REQUEST_SIZE = 65536 + 4096
#: Longest group name, and most groups one agent may have.
MAX_GROUP_NAME = 255
MAX_GROUPS_PER_MULTIGROUP = 128
#: Longest IP field (an IPv6 address with a prefix).
IP_SIZE = 46
#: The second line of every refusal.
UNABLE_TO_ADD = "Unable to add agent"
#: The refusal a Wazuh worker sends when the master cannot be reached.
MASTER_UNREACHABLE = "Cannot comunicate with master"
INVALID_VERSION = "Agent version must be lower or equal to manager version"

_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "-_.")
_GROUP_CHARS = frozenset(string.ascii_letters + string.digits + ".:;_-=+!@()")
_PROHIBITED = "characters '\\/:*?\"<>|,' are prohibited"


class Refused(Exception):
    """The request is refused; ``message`` is the text after ``ERROR: ``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@attrs.frozen
class EnrolRequest:
    """A parsed agent request."""

    name: str
    ip: str
    groups: tuple[str, ...] | None = None
    version: str | None = None
    key_hash: str | None = None


def valid_agent_name(name: str) -> bool:
    """Wazuh's agent-name rule: 2 to 128 characters among letters, digits, ``-``, ``_``, ``.``."""
    return 2 <= len(name) <= 128 and all(c in _NAME_CHARS for c in name)


def check_group_field(group: str) -> None:
    """Validate a ``G`` field (one group or a comma-separated list) as authd does.

    :raises Refused: with authd's message for the first rule broken.
    """
    if not group:
        raise Refused("Invalid group name: Empty Group")
    multi = "," in group
    if not multi and len(group) > MAX_GROUP_NAME:
        raise Refused(f"Invalid group name: {group[:255]}... group is too large")
    if multi and len(group) > 65535:
        raise Refused(f"Invalid group name: {group[:255]}... multigroup is too large")
    if multi:
        for single in (g for g in group.split(",") if g):
            if " " in single:
                raise Refused(f"Invalid group name: {group[:255]}... white spaces are not "
                              "allowed")
            if len(single) > MAX_GROUP_NAME:
                raise Refused(f"Invalid group name: {single[:255]}... group is too large")
        if ",," in group:
            raise Refused(f"Invalid group name: {group[:255]}... consecutive ',' are not "
                          "allowed")
    if group.count(",") == len(group):
        raise Refused(f"Invalid group name: {group[:255]}... {_PROHIBITED}")
    if group[0] == "," or group[-1] == ",":
        raise Refused(f"Invalid group name: {group[:255]}... cannot start or end with ','")
    allowed = _GROUP_CHARS | {","} if multi else _GROUP_CHARS
    if any(c not in allowed for c in group):
        raise Refused(f"Invalid group name: {group[:255]}... {_PROHIBITED}")


def split_groups(group: str) -> tuple[str, ...]:
    """The groups of a valid ``G`` field, repeated names removed (first one kept)."""
    return tuple(dict.fromkeys(g for g in group.split(",") if g))


def normalise_ip(text: str) -> str | None:
    """The address authd stores for an IP field, or None when it is not valid.

    Accepts ``any``, an IPv4 or IPv6 address, or a network in CIDR form.
    """
    if text == "any":
        return text
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=False))
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _version_tuple(version: str) -> tuple[int, ...]:
    text = version.strip()
    text = text[text.find("v") + 1:] if "v" in text else text
    parts: list[int] = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit()) if piece else ""
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def version_newer(agent: str, manager: str) -> bool:
    """True when the agent version is higher than the manager's (major, minor, patch)."""
    return _version_tuple(agent) > _version_tuple(manager)


def _field(rest: str, token: str, limit: int, what: str) -> tuple[str, str] | None:
    """Read `` X:'value'`` at the start of ``rest``; returns (value, remaining) or None."""
    if not rest.startswith(token):
        return None
    body = rest[len(token):]
    end = body.find("'")
    value = body[:end] if end >= 0 else body
    if end < 0 or len(value) > limit or (what == "IP" and " " in value):
        raise Refused(f"Unterminated {what} field")
    return value, body[end + 1:]


def parse_request(data: bytes, *, password: str | None, source_ip: str,
                  use_source_ip: bool, manager_version: str,
                  allow_higher_versions: bool = False) -> EnrolRequest:
    """Parse and validate one agent request (what authd checks before touching the keys).

    :param password: the enrolment password when ``<use_password>`` is on.
    :param source_ip: the address the agent connects from.
    :raises Refused: with authd's message.
    """
    text = data.decode("utf-8", errors="replace").rstrip("\r\n\0")
    if password is not None:
        prefix = "OSSEC PASS: "
        rest = text[len(prefix):]
        if (not text.startswith(prefix) or len(rest) <= len(password)
                or not rest.startswith(password) or rest[len(password)] != " "):
            raise Refused("Invalid password")
        text = rest[len(password) + 1:]
    if not text.startswith("OSSEC A:'"):
        raise Refused("Invalid request for new agent")
    body = text[len("OSSEC A:'"):]
    end = body.find("'")
    if end < 0:
        raise Refused("Invalid request for new agent")
    name, rest = body[:end], body[end + 1:]
    if not valid_agent_name(name):
        raise Refused(f"Invalid agent name: {name}")
    version: str | None = None
    found = _field(rest, " V:'", 2048, "version")
    if found is not None:
        version, rest = found
        if not allow_higher_versions and version_newer(version, manager_version):
            raise Refused(INVALID_VERSION)
    groups: tuple[str, ...] | None = None
    found = _field(rest, " G:'", 65536, "group")
    if found is not None:
        check_group_field(found[0])
        groups, rest = split_groups(found[0]), found[1]
    ip = source_ip if use_source_ip else "any"
    found = _field(rest, " IP:'", IP_SIZE, "IP")
    if found is not None:
        given, rest = found
        if given != "src":
            normal = normalise_ip(given)
            if normal is None:
                raise Refused(f"Invalid IP: {given}")
            ip = normal
        else:
            ip = source_ip
    key_hash: str | None = None
    found = _field(rest, " K:'", 40, "key")
    if found is not None:
        key_hash = found[0]
    return EnrolRequest(name, ip, groups, version, key_hash)


def key_hash(agent_id: str, name: str, key: str) -> str:
    """The hash an agent sends in ``K`` for the key it holds."""
    return hashlib.sha1((agent_id + name + key).encode()).hexdigest()


def encode_request(name: str, *, password: str | None = None, version: str | None = None,
                   groups: str | None = None, ip: str | None = None,
                   key_hash: str | None = None) -> bytes:
    """The request an agent sends (``agent-auth``'s form)."""
    parts = [f"OSSEC PASS: {password} " if password is not None else "", f"OSSEC A:'{name}'"]
    if version is not None:
        parts.append(f" V:'{version}'")
    if groups is not None:
        parts.append(f" G:'{groups}'")
    if ip is not None:
        parts.append(f" IP:'{ip}'")
    if key_hash is not None:
        parts.append(f" K:'{key_hash}'")
    return "".join(parts).encode() + b"\n"


def accepted(agent_id: str, name: str, ip: str, key: str) -> bytes:
    """The success answer."""
    return f"OSSEC K:'{agent_id} {name} {ip} {key}'".encode()


def refused(message: str) -> bytes:
    """The refusal answer: the reason, then authd's second line."""
    return f"ERROR: {message}".encode() + f"ERROR: {UNABLE_TO_ADD}".encode()


@attrs.frozen
class Answer:
    """What an agent makes of the manager's answer."""

    agent_id: str | None = None
    name: str | None = None
    ip: str | None = None
    key: str | None = None
    error: str | None = None


def parse_answer(data: bytes) -> Answer:
    """Decode the manager's answer (the agent side)."""
    text = data.decode("utf-8", errors="replace").strip()
    if text.startswith("OSSEC K:'") and text.endswith("'"):
        fields = text[len("OSSEC K:'"):-1].split(" ")
        if len(fields) == 4:
            return Answer(fields[0], fields[1], fields[2], fields[3])
    if text.startswith("ERROR: "):
        first = text[len("ERROR: "):]
        cut = first.find("ERROR: ")
        return Answer(error=first[:cut] if cut >= 0 else first)
    return Answer(error=f"unexpected answer: {text[:200]!r}")
