"""Typed payloads: parse and encode the small text/JSON payloads of the commands.

Everything that turns payload bytes into values lives here (or in chunks/frames), with
limits, so responders never parse bytes themselves. JSON is decoded as plain data.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from wazuhcluster.errors import ClusterError, InternalError

MAX_JSON = 64 * 1024 * 1024


@attrs.frozen
class Hello:
    """The ``hello`` payload: ``<node_name> <cluster_name> <node_type> <version>``."""

    name: str
    cluster: str
    node_type: str
    version: str


def parse_hello(payload: bytes) -> Hello:
    """Parse a ``hello`` payload; anything but four space-separated fields is error 1000."""
    fields = payload.decode("utf-8", "replace").split(" ")
    if len(fields) != 4 or not all(fields):
        raise InternalError("hello payload must have 4 fields: name cluster type version")
    return Hello(*fields)


def encode_hello(hello: Hello) -> bytes:
    """Encode a ``hello`` payload."""
    return f"{hello.name} {hello.cluster} {hello.node_type} {hello.version}".encode()


def parse_json(payload: bytes, what: str, limit: int = MAX_JSON) -> Any:
    """Decode JSON as plain data (no object hooks), or raise 3036."""
    if len(payload) > limit:
        raise ClusterError(3036, f"{what}: {len(payload)} bytes exceeds {limit}")
    try:
        return json.loads(payload) if payload.strip() else None
    except (ValueError, UnicodeDecodeError):
        raise ClusterError(3036, what) from None


def encode_json(value: Any) -> bytes:
    """Encode JSON the way the reference does (default separators)."""
    return json.dumps(value).encode()


def split_id(payload: bytes) -> tuple[bytes, bytes]:
    """Split ``<id> <rest>`` at the first space."""
    first, _, rest = payload.partition(b" ")
    return first, rest


def parse_capabilities(payload: bytes) -> frozenset[str]:
    """Our ``wzc_caps`` payload: a JSON list of capability names."""
    value = parse_json(payload, "capabilities", limit=64 * 1024)
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v for v in value if isinstance(v, str))
