"""The tagged JSON of the Distributed API, and the DAPI request object.

Wazuh encodes objects that JSON cannot carry with one-key tags (docs/protocol.md,
"Distributed API"): ``__callable__`` (a function, by module and qualified name),
``__wazuh_result__``, ``__wazuh_exception__``, ``__wazuh_datetime__`` and
``__unhandled_exc__``. Decoding here is data only:

* a ``__callable__`` becomes a :class:`FunctionName` (its dotted name); it is looked up later in
  the node's registry of native functions and nothing else ever runs;
* ``__wazuh_result__`` and ``__wazuh_exception__`` are rebuilt from their contents with the
  classes of :mod:`wazuhcluster.dapi.results` (fixed allow-lists of class names);
* ``__unhandled_exc__`` becomes an :class:`UnhandledException` holding the class name (kept
  only when it is in :data:`BUILTIN_EXCEPTIONS`) and the arguments;
* ``__wazuh_datetime__`` becomes an aware ``datetime``.

Nothing named in a payload is imported, evaluated or instantiated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs

from wazuhcluster.dapi.results import (
    AbstractWazuhResult,
    WazuhException,
    WazuhInternalError,
    exception_from_dict,
    result_from_dict,
    type_name,
)

REQUEST_TYPES = ("local_any", "local_master", "distributed_master")
#: ``api_timeout`` sent when the caller gave none (the Wazuh API's default request timeout;
#: Wazuh nodes expect a number).
DEFAULT_API_TIMEOUT = 10

#: Builtin exception names an ``__unhandled_exc__`` may keep (others decode as "Exception").
BUILTIN_EXCEPTIONS = frozenset({
    "Exception", "ValueError", "TypeError", "KeyError", "IndexError", "AttributeError",
    "RuntimeError", "OSError", "IOError", "FileNotFoundError", "PermissionError",
    "TimeoutError", "ConnectionError", "ConnectionRefusedError", "ConnectionResetError",
    "NotImplementedError", "MemoryError", "ZeroDivisionError", "AssertionError",
    "LookupError", "UnicodeDecodeError", "UnicodeEncodeError", "JSONDecodeError",
    "CancelledError",
})


class CodecError(ValueError):
    """A DAPI payload that is not valid tagged JSON or not a valid request."""


@attrs.frozen
class FunctionName:
    """A function named by a ``__callable__`` tag: only its dotted name is kept."""

    module: str
    qualname: str

    @property
    def dotted(self) -> str:
        """``module.qualname``, the registry key (e.g. ``wazuh.agent.get_agents``)."""
        return f"{self.module}.{self.qualname}" if self.module else self.qualname

    @classmethod
    def from_dotted(cls, name: str) -> FunctionName:
        """Split a dotted name as Wazuh's objects carry it: the qualified name starts at the
        first capitalised part (a class), else it is the last part."""
        parts = name.split(".")
        for i, part in enumerate(parts[:-1]):
            if i > 0 and part[:1].isupper():
                return cls(".".join(parts[:i]), ".".join(parts[i:]))
        return cls(".".join(parts[:-1]), parts[-1])

    def to_json(self) -> dict[str, Any]:
        name = self.qualname.rsplit(".", 1)[-1]
        return {"__callable__": {"__name__": name, "__module__": self.module,
                                 "__qualname__": self.qualname, "__type__": "function"}}


@attrs.frozen
class RawAnswer:
    """An answer received from a peer, still encoded: relayed as is when nothing needs to
    read it (a worker passing the master's answer to its local client).

    ``digest`` (the hex SHA-256 of ``data``, :func:`wazuhcluster.dapi.answers.answer_digest`)
    is set only on answers the answer cache's rules allow to keep: a worker of ours may keep
    them and have them revalidated (docs/protocol.md, "Answers revalidated")."""

    data: bytes
    digest: bytes | None = None


class UnhandledException(Exception):
    """An ``__unhandled_exc__``: a builtin exception of the peer, as data."""

    def __init__(self, class_name: str, args: list[Any]) -> None:
        super().__init__(*args)
        self.class_name = class_name if class_name in BUILTIN_EXCEPTIONS else "Exception"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, UnhandledException) and other.class_name == self.class_name
                and other.args == self.args)

    def __hash__(self) -> int:
        return hash((self.class_name, json.dumps(list(self.args), default=str)))


def _default(value: Any) -> Any:
    if type(value) is datetime:  # first: an agent page holds two per agent
        return {"__wazuh_datetime__": value.isoformat()}
    if isinstance(value, FunctionName):
        return value.to_json()
    if isinstance(value, AbstractWazuhResult):
        return {"__wazuh_result__": {"__class__": type_name(value),
                                     "__object__": value.to_dict(copy=False)}}
    if isinstance(value, WazuhException):
        return {"__wazuh_exception__": {"__class__": type_name(value),
                                        "__object__": value.to_dict()}}
    if isinstance(value, datetime):
        return {"__wazuh_datetime__": value.isoformat()}
    if isinstance(value, UnhandledException):
        return {"__unhandled_exc__": {"__class__": value.class_name,
                                      "__args__": list(value.args)}}
    if isinstance(value, Exception):
        name = type(value).__name__
        return {"__unhandled_exc__": {
            "__class__": name if name in BUILTIN_EXCEPTIONS else "Exception",
            "__args__": [str(a) for a in value.args]}}
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    raise TypeError(f"Object of type {type_name(value)} is not JSON serializable")


#: One encoder for every call (the C encoder; no circular-reference bookkeeping: the values
#: encoded are trees built by the functions and the codec, 10-15 % faster on an agent page).
_ENCODER = json.JSONEncoder(default=_default, check_circular=False)


def dumps(value: Any) -> str:
    """Encode ``value`` with the tags (results, exceptions, datetimes, function names)."""
    try:
        return _ENCODER.encode(value)
    except RecursionError:
        raise ValueError("Circular reference detected") from None


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) != 1:
        return obj
    (tag, inner), = obj.items()
    if tag == "__callable__":
        if not isinstance(inner, Mapping):
            raise CodecError("__callable__ must be an object")
        module, qualname = inner.get("__module__"), inner.get("__qualname__")
        if not isinstance(qualname, str) or not qualname:
            qualname = inner.get("__name__")
        if not isinstance(qualname, str) or not qualname:
            raise CodecError("__callable__ has no name")
        return FunctionName(module if isinstance(module, str) else "", qualname)
    if tag == "__wazuh_result__":
        if not isinstance(inner, Mapping):
            raise CodecError("__wazuh_result__ must be an object")
        return result_from_dict(str(inner.get("__class__")), inner.get("__object__") or {})
    if tag == "__wazuh_exception__":
        if not isinstance(inner, Mapping):
            raise CodecError("__wazuh_exception__ must be an object")
        return exception_from_dict(str(inner.get("__class__")), inner.get("__object__") or {})
    if tag == "__wazuh_datetime__":
        if not isinstance(inner, str):
            raise CodecError("__wazuh_datetime__ must be a string")
        value = datetime.fromisoformat(inner)
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if tag == "__unhandled_exc__":
        if not isinstance(inner, Mapping):
            raise CodecError("__unhandled_exc__ must be an object")
        args = inner.get("__args__")
        return UnhandledException(str(inner.get("__class__")),
                                  list(args) if isinstance(args, list) else [])
    return obj


def loads(text: str | bytes) -> Any:
    """Decode tagged JSON; :class:`CodecError` for anything malformed."""
    try:
        return json.loads(text, object_hook=_hook)
    except CodecError:
        raise
    except (ValueError, TypeError, RecursionError) as e:
        raise CodecError(f"invalid DAPI JSON: {e}") from None


def error_from_text(text: str) -> WazuhException:
    """The exception a ``dapi_err`` text (tagged JSON or ``Error <code> - <message>``)
    stands for."""
    try:
        value = loads(text)
    except CodecError:
        value = None
    if isinstance(value, WazuhException):
        return value
    code = 3000
    message = text
    if text.startswith("Error "):
        head, _, rest = text[6:].partition(" - ")
        if head.isdigit():
            code, message = int(head), rest
    from wazuhcluster.dapi.results import WazuhClusterError
    return WazuhClusterError(code, extra_message=message)


@attrs.define
class DapiRequest:
    """The DAPI request object, with Wazuh's keys and defaults."""

    f: FunctionName
    f_kwargs: dict[str, Any] = attrs.Factory(dict)
    request_type: str = "local_master"
    wait_for_complete: bool = False
    from_cluster: bool = False
    is_async: bool = False
    local_client_arg: str | None = None
    basic_services: list[str] | None = None
    rbac_permissions: dict[str, Any] = attrs.Factory(lambda: {"rbac_mode": "black"})
    current_user: str = ""
    broadcasting: bool = False
    nodes: list[str] = attrs.Factory(list)
    api_timeout: float | None = None
    #: The bytes this request was decoded from (None for a request built or changed here):
    #: a worker forwards them as they came to a master of ours instead of encoding the
    #: same request again (docs/protocol.md, "Answers revalidated between our nodes").
    wire: bytes | None = attrs.field(default=None, eq=False, repr=False, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"f": self.f, "f_kwargs": self.f_kwargs, "request_type": self.request_type,
                "wait_for_complete": self.wait_for_complete, "from_cluster": self.from_cluster,
                "is_async": self.is_async, "local_client_arg": self.local_client_arg,
                "basic_services": self.basic_services, "rbac_permissions": self.rbac_permissions,
                "current_user": self.current_user, "broadcasting": self.broadcasting,
                "nodes": self.nodes,
                "api_timeout": DEFAULT_API_TIMEOUT if self.api_timeout is None
                else self.api_timeout}

    def to_json(self) -> str:
        return dumps(self.to_dict())

    def copy(self, **changes: Any) -> DapiRequest:
        """A copy (``f_kwargs`` copied too) with ``changes`` (no longer its ``wire`` bytes)."""
        return attrs.evolve(self, f_kwargs=dict(self.f_kwargs), wire=None, **changes)

    @classmethod
    def from_json(cls, text: str | bytes) -> DapiRequest:
        """Decode a request; :class:`CodecError` names what is wrong."""
        data = loads(text)
        if not isinstance(data, dict):
            raise CodecError("a DAPI request must be a JSON object")
        f = data.get("f")
        if isinstance(f, str):
            f = FunctionName.from_dotted(f)
        if not isinstance(f, FunctionName):
            raise CodecError("the DAPI request has no function ('f')")
        kwargs = data.get("f_kwargs")
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(kwargs, dict):
            raise CodecError("'f_kwargs' must be an object")
        request_type = data.get("request_type") or "local_master"
        if request_type not in REQUEST_TYPES:
            raise CodecError(f"unknown request_type {request_type!r}")
        timeout = data.get("api_timeout")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float, type(None))):
            raise CodecError("'api_timeout' must be a number")
        rbac = data.get("rbac_permissions")
        nodes = data.get("nodes")
        services = data.get("basic_services")
        lc_arg = data.get("local_client_arg")
        return cls(f=f, f_kwargs=kwargs, request_type=request_type,
                   wait_for_complete=bool(data.get("wait_for_complete", False)),
                   from_cluster=bool(data.get("from_cluster", False)),
                   is_async=bool(data.get("is_async", False)),
                   local_client_arg=lc_arg if isinstance(lc_arg, str) else None,
                   basic_services=[str(s) for s in services]
                   if isinstance(services, list) else None,
                   rbac_permissions=rbac if isinstance(rbac, dict) else {"rbac_mode": "black"},
                   current_user=str(data.get("current_user") or ""),
                   broadcasting=bool(data.get("broadcasting", False)),
                   nodes=[str(n) for n in nodes] if isinstance(nodes, list) else [],
                   api_timeout=timeout, wire=text if isinstance(text, bytes) else None)


#: Framework functions that Wazuh runs as coroutines given a local client (the ``lc`` keyword):
#: a request for them must say so, or a Wazuh node executing it calls them wrongly.
WAZUH_ASYNC_FUNCTIONS: dict[str, str | None] = {
    "wazuh.cluster.get_nodes_info": "lc",
    "wazuh.cluster.get_health_nodes": "lc",
    "wazuh.cluster.get_node_ruleset_integrity": "lc",
}


def request_fields(function: str) -> dict[str, Any]:
    """``is_async`` and ``local_client_arg`` as Wazuh's API sets them for ``function``."""
    if function in WAZUH_ASYNC_FUNCTIONS:
        return {"is_async": True, "local_client_arg": WAZUH_ASYNC_FUNCTIONS[function]}
    return {"is_async": False, "local_client_arg": None}


def unknown_function(name: str) -> WazuhInternalError:
    """The error answered for a function that is not in the registry."""
    return WazuhInternalError(1000, extra_message=f"Unknown or not allowed DAPI function "
                                                  f"'{name}': only the cluster's native "
                                                  "functions can be run")


