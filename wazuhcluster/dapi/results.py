"""Result objects and exceptions of the Distributed API, shaped as Wazuh 4.7.5 shapes them.

A native DAPI function returns a :class:`WazuhResult` or an :class:`AffectedItemsWazuhResult`,
or raises a :class:`WazuhException`. They are plain data: ``to_dict()`` gives the contents of
the ``__object__`` member of the ``__wazuh_result__`` / ``__wazuh_exception__`` JSON tags and
``from_dict()`` rebuilds an object from it (the tagged codec lives elsewhere). Decoding never
imports or evaluates anything: exception classes are looked up in :data:`EXCEPTION_CLASSES`.

The message of an exception is never carried on the wire; every node rebuilds it from the
code (table :data:`ERRORS`) and ``extra_message``, as Wazuh does, so the table wording is
what API users read: it follows Wazuh's for the codes our functions and the cluster use.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from copy import deepcopy
from datetime import UTC, date, datetime
from typing import Any, ClassVar

#: Documentation version used in remediation links.
_DOCS = "https://documentation.wazuh.com/4.7"

#: Error code -> message, or (message, remediation). Codes absent here carry only their
#: ``extra_message`` as the message, as in Wazuh for codes it does not know.
ERRORS: dict[int, str | tuple[str, str]] = {
    1000: ("Wazuh Internal Error",
           "Please, check `WAZUH_HOME/logs/ossec.log`, `WAZUH_HOME/logs/cluster.log` and "
           "`WAZUH_HOME/logs/api.log` to get more information about the error"),
    1005: ("Error reading file",
           "Please, ensure you have the right file permissions in Wazuh directories"),
    1006: ("File/directory does not exist or there is a problem with the permissions",
           "Please, check if path to file/directory is correct and `wazuh` has the appropriate "
           "permissions"),
    1017: 'Some Wazuh daemons are not ready yet in node "{node_name}" ({not_ready_daemons})',
    1019: "Error trying to create backup file",
    1112: ("Empty files are not supported", "Please, provide another file"),
    1113: ("XML syntax error", "Please, ensure file content has correct XML"),
    1209: ("Invalid relative directory. A 'rule_dir' tag must be declared in ossec.conf ruleset "
           "section.",
           f"Please, visit the official documentation ({_DOCS}/user-manual/reference/ossec-conf/"
           "ruleset.html) to get more information about the rules"),
    1210: ("Uploading, updating or deleting default rules is not allowed.",
           f"Please, visit the official documentation ({_DOCS}/user-manual/ruleset/index.html) "
           "to get more information about the rules"),
    1211: ("Invalid relative directory. A 'rule_dir' tag is declared in ossec.conf ruleset "
           "section, but the directory does not exist.",
           f"Please, visit the official documentation({_DOCS}/user-manual/reference/ossec-conf/"
           "ruleset.html) to get more information about the rules"),
    1400: "Invalid offset",
    1401: "Invalid limit",
    1402: ("Invalid sort_ascending field",
           "Please, use only true if ascending or false if descending"),
    1403: ("Not a valid sort field ", "Please, use only allowed sort fields"),
    1405: ("Specified limit exceeds maximum allowed",
           "Please select a limit between 1 and 1000"),
    1406: ("0 is not a valid limit", "Please select a limit between 1 and 1000"),
    1407: "Query does not match expected format",
    1408: "Field does not exist.",
    1409: "Invalid query operator",
    1410: "Selecting more than one field in distinct mode",
    1411: "TimeFrame is not valid",
    1412: "Date filter not valid. Valid formats are YYYY-MM-DD HH:mm:ss, YYYY-MM-DDTHH:mm:ssZ "
          "or YYYY-MM-DD",
    1413: "Error reading rules file",
    1414: ("Error reading rules file",
           "Please, make sure you have read permissions over the file"),
    1415: ("Rules file not found", "Please, use GET /rules/files to list all available rules"),
    1501: "Error reading decoders file",
    1502: ("Error reading decoders file",
           "Please, make sure you have read permissions on the file"),
    1503: ("Decoders file not found",
           "Please, use GET /decoders/files to list all available decoders"),
    1505: ("Invalid relative directory. A 'decoder_dir' tag must be declared in ossec.conf "
           "ruleset section.",
           f"Please, visit the official documentation({_DOCS}/user-manual/reference/ossec-conf/"
           "ruleset.html) to get more information about the decoders"),
    1506: ("Uploading, updating or deleting default decoders is not allowed.",
           f"Please, visit the official documentation({_DOCS}/user-manual/ruleset/index.html) "
           "to get more information about the decoders"),
    1507: ("Invalid relative directory. A 'decoder_dir' tag is declared in ossec.conf ruleset "
           "section, but the directory does not exist.",
           f"Please, visit the official documentation({_DOCS}/user-manual/reference/ossec-conf/"
           "ruleset.html) to get more information about the decoders"),
    1701: ("Agent does not exist",
           "Please, use `GET /agents?select=id,name` to find all available agents"),
    1703: ("Action not available for Manager (agent 000)",
           "Please, use `GET /agents?select=id,name` to find all available agents and make "
           "sure you select an agent other than 000"),
    1710: ("The group does not exist",
           "Please, use `GET /agents/groups` to find all available groups"),
    1711: ("The group already exists", "Please, use another group ID"),
    1712: ("Default group is not deletable",
           f"Please, visit the official documentation ({_DOCS}/user-manual/agents/"
           "grouping-agents.html)to get more information"),
    1713: ("Invalid group ID. Some IDs are restricted for internal purposes",
           "Please, use another group ID"),
    1722: ("Incorrect format for group_id",
           "Characters supported  a-z, A-Z, 0-9, ., _ and -. Max length is 255"),
    1723: "Hash algorithm not available",
    1724: ("Not a valid select field", "Please, use only allowed select fields"),
    1728: ("Invalid node type",
           "Valid types are `master` and `worker`. Please, visit "
           f"{_DOCS}/user-manual/configuring-cluster/index.html to get more information about "
           "cluster configuration"),
    1726: ("Wazuh authd is not running",
           "Please enable authd or check if there is any error"),
    1730: ("Node does not exist",
           "Make sure the name is correct and that the node is up. You can check it using "
           f"`cluster_control -l` ({_DOCS}/user-manual/reference/tools/cluster_control.html"
           "#get-connected-nodes)"),
    1731: ("Agent is not eligible for the action to be performed",
           "Please, make sure the agent meets the requirements."),
    1734: ("Error removing agent from group",
           "Agent does not belong to specified group, to assign the agent to a group follow: "
           f"{_DOCS}/user-manual/agents/grouping-agents.html"),
    1737: ("Maximum number of groups per multigroup is 128",
           "Please choose another group or remove an agent from the target group"),
    1745: "Agent only belongs to 'default' and it cannot be unassigned from this group.",
    1751: ("Could not assign agent to group",
           "Agent already belongs to specified group, please select another agent"),
    1752: "Could not force single group for the agent",
    1757: ("Error deleting an agent", "Please check all data fields and try again"),
    1800: "Bad format in CDB list {path}",
    1801: ("Wrong 'path' parameter", "Please, provide a correct path"),
    1802: ("Lists file not found",
           "Please, use `GET /lists/files` to find all available lists"),
    1803: ("Error reading lists file",
           "Please, make sure you have read permissions over the file"),
    1804: ("Error reading lists file", "Please, make sure you provide a correct filepath"),
    1805: ("File with the same name already exists in a subdirectory.",
           "Please, make sure to use a name which is not repeated. "),
    1806: "Error trying to create CDB list file.",
    1905: ("File could not be updated, it already exists",
           "Please, provide a different file or set overwrite=True to overwrite actual file"),
    1906: ("File does not exist",
           "Please, provide a different file or make sure provided file path is correct"),
    1907: ("File could not be deleted", "Please, ensure you have the right file permissions"),
    1911: ("Error parsing body request to UTF-8",
           "Please, check if the file content is valid UTF-8"),
    1912: ("Body is empty", "Please, check the content of the file to be uploaded"),
    3000: "Cluster",
    3009: ("Error executing distributed API request", ""),
    3012: "Cluster is not running",
    3018: "Error sending request",
    3020: ("Timeout sending request", "Please, try to make the request again"),
    3021: "Timeout executing API request",
    3022: ("Unknown node ID", "Check the name of the node"),
    3023: ("Worker node is not connected to master",
           "Check the cluster.log located at WAZUH_HOME/logs/cluster.log file to see if there "
           "are connection errors. Restart the `wazuh-manager` service."),
    3032: "Could not forward DAPI request. Connection not available.",
    3036: "JSON couldn't be loaded",
    4000: ("Permission denied",
           "Please, make sure you have permissions to execute the current request. For more "
           f"information on how to set up permissions, please visit {_DOCS}/user-manual/api/"
           "rbac/configuration.html"),
}

#: Code of the error raised when a request names a function that is not registered.
UNKNOWN_FUNCTION_CODE = 1000


def _freeze(value: Any) -> Any:
    """A hashable stand-in for a JSON value (``extra_message`` may be a dict)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


class WazuhException(Exception):
    """An error of a framework function, as Wazuh's ``wazuh.core.exception`` models it.

    :ivar code: Wazuh error code (table :data:`ERRORS`).
    :ivar message: the code's message, followed by ``": <extra_message>"`` when given (a dict
        ``extra_message`` fills the ``{placeholders}`` of the code's message instead); with
        ``cmd_error`` or an unknown code, ``extra_message`` itself.
    :ivar remediation: the code's remediation (None if it has none), followed by
        ``": <extra_remediation>"`` when given.
    :ivar dapi_errors: ``{node name: {"error": message, ...}}`` filled in by the DAPI.
    """

    default_title: ClassVar[str | None] = None
    has_ids: ClassVar[bool] = False

    def __init__(self, code: int, extra_message: str | dict[str, Any] | None = None,
                 extra_remediation: str | None = None, cmd_error: bool = False,
                 dapi_errors: Mapping[str, Any] | None = None, title: str | None = None,
                 type: str | None = None, ids: Iterable[Any] | None = None) -> None:
        self.code = code
        self.extra_message = extra_message
        self.extra_remediation = extra_remediation
        self.cmd_error = cmd_error
        self.dapi_errors: dict[str, Any] = deepcopy(dict(dapi_errors)) if dapi_errors else {}
        self.title = title or self.default_title or type_name(self)
        self.type = type or "about:blank"
        self.ids: set[Any] = set(ids) if ids is not None else set()
        self.message, self.remediation = self._texts()
        super().__init__(code, self.message)

    def _texts(self) -> tuple[str | None, str | None]:
        details = None if self.cmd_error else ERRORS.get(self.code)
        if details is None:
            return (self.extra_message if not isinstance(self.extra_message, dict)
                    else json.dumps(self.extra_message)), None
        base, remediation = (details, None) if isinstance(details, str) else details
        if isinstance(self.extra_message, dict):
            try:
                message = base.format(**self.extra_message)
            except (KeyError, IndexError, ValueError):
                message = base
        elif self.extra_message:
            message = f"{base}: {self.extra_message}"
        else:
            message = base
        if self.extra_remediation is not None:
            remediation = f"{remediation}: {self.extra_remediation}"
        return message, remediation

    def __str__(self) -> str:
        return f"Error {self.code} - {self.message}"

    def __repr__(self) -> str:
        return f"{type_name(self)}({self.to_dict()!r})"

    def _key(self) -> tuple[Any, ...]:
        return (self.type, self.title, self.code, _freeze(self.extra_message),
                self.extra_remediation, self.cmd_error)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WazuhException):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __or__(self, other: Any) -> Any:
        """Merge two errors (``dapi_errors`` and ``ids`` united) or an error into a result."""
        if isinstance(other, WazuhException):
            merged = type(self).from_dict(self.to_dict())
            merged.dapi_errors = {**self.dapi_errors, **other.dapi_errors}
            if merged.has_ids:
                merged.ids = self.ids | other.ids
            return merged
        return other | self

    def to_dict(self) -> dict[str, Any]:
        """The ``__object__`` of the ``__wazuh_exception__`` tag."""
        out: dict[str, Any] = {
            "type": self.type, "title": self.title, "code": self.code,
            "extra_message": self.extra_message, "extra_remediation": self.extra_remediation,
            "cmd_error": self.cmd_error, "dapi_errors": deepcopy(self.dapi_errors),
        }
        if self.has_ids:
            out["ids"] = sorted_ids(self.ids)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WazuhException:
        """Rebuild from :meth:`to_dict` contents; ValueError on a malformed object."""
        if not isinstance(data, Mapping):
            raise ValueError("exception object is not a JSON object")
        code = data.get("code")
        if isinstance(code, bool) or not isinstance(code, int):
            raise ValueError("exception object has no integer code")
        extra = data.get("extra_message")
        if extra is not None and not isinstance(extra, (str, dict)):
            extra = str(extra)
        remediation = data.get("extra_remediation")
        title = data.get("title")
        type_ = data.get("type")
        dapi_errors = data.get("dapi_errors")
        ids = data.get("ids")
        return cls(code, extra_message=extra,
                   extra_remediation=None if remediation is None else str(remediation),
                   cmd_error=bool(data.get("cmd_error", False)),
                   dapi_errors=dapi_errors if isinstance(dapi_errors, dict) else None,
                   title=title if isinstance(title, str) else None,
                   type=type_ if isinstance(type_, str) else None,
                   ids=_hashable_ids(ids) if isinstance(ids, list) else None)


def _hashable_ids(ids: list[Any]) -> list[Any]:
    return [i if isinstance(i, (str, int, float, bool)) or i is None else json.dumps(i)
            for i in ids]


def type_name(obj: object) -> str:
    return type(obj).__name__


class WazuhInternalError(WazuhException):
    """An unexpected error in a function."""

    default_title = "Wazuh Internal Error"


class WazuhClusterError(WazuhInternalError):
    """An error of the cluster itself (timeouts, unknown nodes, ...)."""

    default_title = "Wazuh Cluster Error"


class WazuhError(WazuhException):
    """A request that cannot be done as asked (the user's error); carries the ids involved."""

    default_title = "Bad Request"
    has_ids = True


class WazuhPermissionError(WazuhError):
    default_title = "Permission Denied"


class WazuhResourceNotFound(WazuhError):
    default_title = "Resource Not Found"


class WazuhTooManyRequests(WazuhError):
    default_title = "Too Many Requests"


class WazuhNotAcceptable(WazuhError):
    default_title = "Not Acceptable"


#: The only exception classes a decoder may build, by the names Wazuh gives them.
EXCEPTION_CLASSES: dict[str, type[WazuhException]] = {
    cls.__name__: cls for cls in (
        WazuhException, WazuhInternalError, WazuhClusterError, WazuhError,
        WazuhPermissionError, WazuhResourceNotFound, WazuhTooManyRequests, WazuhNotAcceptable)
}


def exception_from_dict(class_name: str, data: Mapping[str, Any]) -> WazuhException:
    """Build the exception a ``__wazuh_exception__`` names. An unknown class name is not an
    error: it decodes as the closest safe class (``WazuhError`` when the object has ``ids``,
    else ``WazuhInternalError``), keeping its title."""
    cls = EXCEPTION_CLASSES.get(class_name)
    if cls is None:
        cls = WazuhError if isinstance(data, Mapping) and "ids" in data else WazuhInternalError
    return cls.from_dict(data)


def sorted_ids(ids: Iterable[Any]) -> list[Any]:
    """Ids in Wazuh's order: numerically when every id is a number, else as text."""
    items = list(ids)
    try:
        return sorted(items, key=lambda i: int(i))
    except (TypeError, ValueError):
        return sorted(items, key=str)


# --- results ---------------------------------------------------------------------------


def _merge_value(owner: AbstractWazuhResult, key: str, mine: Any, theirs: Any) -> Any:
    if isinstance(theirs, dict) and isinstance(mine, dict):
        return dict(owner.__class__.merge_plain(owner, mine, theirs))
    if isinstance(theirs, list) and isinstance(mine, list):
        return [*mine, *[e for e in theirs if e not in mine]]
    if (isinstance(theirs, (int, float)) and not isinstance(theirs, bool)
            and isinstance(mine, (int, float)) and not isinstance(mine, bool)):
        return mine + theirs
    if isinstance(theirs, str) and isinstance(mine, str):
        return owner.merge_str(mine, theirs, key)
    return mine


class AbstractWazuhResult(MutableMapping[str, Any]):
    """A mapping (``dikt``) merged with ``|`` as Wazuh merges results of several nodes:
    missing keys are added, dicts merged recursively, lists concatenated without
    duplicates, numbers added, different strings joined with ``|``."""

    def __init__(self, dikt: Mapping[str, Any] | None = None) -> None:
        if dikt is not None and not isinstance(dikt, Mapping):
            raise WazuhInternalError(1000, extra_message="result content must be a mapping")
        self.dikt: dict[str, Any] = dict(dikt) if dikt is not None else {}

    def __getitem__(self, key: str) -> Any:
        return self.dikt[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.dikt[key] = value

    def __delitem__(self, key: str) -> None:
        del self.dikt[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.dikt)

    def __len__(self) -> int:
        return len(self.dikt)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, type(self)):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:  # mutable mapping: not hashable
        raise TypeError(f"unhashable type: {type_name(self)}")

    def __repr__(self) -> str:
        return f"{type_name(self)}({self.to_dict()!r})"

    def merge_str(self, mine: str, theirs: str, key: str | None) -> str:
        return mine if mine == theirs else f"{mine}|{theirs}"

    def merge_plain(self, mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any]:
        merged = deepcopy(dict(mine))
        for key, value in theirs.items():
            merged[key] = deepcopy(value) if key not in merged else _merge_value(
                self, key, merged[key], value)
        return merged

    def copy(self) -> Any:
        return deepcopy(self)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, WazuhException):
            return other
        if not isinstance(other, (dict, AbstractWazuhResult)):
            raise WazuhInternalError(
                1000, extra_message=f"Cannot be merged with {type_name(other)} object")
        result = deepcopy(self)
        result.dikt = self.merge_plain(self.dikt, dict(other.items()))
        return result

    def limit(self, limit: int | None = None, offset: int = 0) -> Any:
        """A copy with ``data.items`` cut to ``limit`` items from ``offset`` (as Wazuh's DAPI
        re-applies pagination after merging)."""
        result = deepcopy(self)
        data = result.dikt.get("data")
        items = data.get("items") if isinstance(data, dict) else None
        if isinstance(data, dict) and isinstance(items, list):
            end = None if limit is None else offset + limit
            data["items"] = items[offset:end]
        return result

    def sort(self, fields: Sequence[str] | None = None, order: str = "asc") -> Any:
        """A copy with ``data.items`` sorted by ``fields`` (all items when none given)."""
        result = deepcopy(self)
        data = result.dikt.get("data")
        if isinstance(data, dict) and isinstance(data.get("items"), list):
            data["items"] = sort_items(data["items"], list(fields or []), order == "asc")
        return result

    @abstractmethod
    def to_dict(self, copy: bool = True) -> dict[str, Any]:
        """The ``__object__`` contents of this result on the wire."""

    @abstractmethod
    def render(self) -> dict[str, Any]:
        """The API's JSON body of this result."""


class WazuhResult(AbstractWazuhResult):
    """A plain result ``{"data": ..., "message": ...}``.

    :ivar str_priority: when merging two different strings, the one found first in this
        list wins (e.g. ``["KO", "OK"]``) instead of both being joined with ``|``.
    """

    def __init__(self, dikt: Mapping[str, Any] | None = None,
                 str_priority: Sequence[str] | None = None) -> None:
        super().__init__(dikt)
        self.str_priority = list(str_priority) if str_priority is not None else None

    def merge_str(self, mine: str, theirs: str, key: str | None) -> str:
        if self.str_priority is None:
            return super().merge_str(mine, theirs, key)
        order = [*self.str_priority, mine, theirs]
        return mine if order.index(mine) < order.index(theirs) else theirs

    def to_dict(self, copy: bool = True) -> dict[str, Any]:
        """The ``__object__`` of the ``__wazuh_result__`` tag (``copy=False``: sharing this
        result's data, for an encoder that only reads it)."""
        return {"str_priority": self.str_priority,
                "result": deepcopy(self.dikt) if copy else self.dikt}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WazuhResult:
        if not isinstance(data, Mapping) or not isinstance(data.get("result"), dict):
            raise ValueError("WazuhResult object needs a 'result' object")
        priority = data.get("str_priority")
        if priority is not None and not (isinstance(priority, list)
                                         and all(isinstance(p, str) for p in priority)):
            raise ValueError("WazuhResult 'str_priority' must be null or a list of strings")
        return cls(data["result"], str_priority=priority)

    def render(self) -> dict[str, Any]:
        """The API's JSON body: the content plus ``"error": 0``."""
        body = deepcopy(self.dikt)
        body["error"] = 0
        return body


class AffectedItemsWazuhResult(AbstractWazuhResult):
    """A result about many items, some done (``affected_items``) and some failed
    (``failed_items``: exception -> set of ids).

    ``sort_fields``/``sort_casting``/``sort_ascending`` say how ``affected_items`` are
    ordered, so that results of several nodes merge into one ordered list. The message is
    ``all_msg`` when nothing failed, ``some_msg`` when some items failed, ``none_msg`` when
    nothing was affected.
    """

    def __init__(self, dikt: Mapping[str, Any] | None = None,
                 affected_items: Sequence[Any] | None = None,
                 total_affected_items: int | None = None,
                 sort_fields: Sequence[str] | None = None,
                 sort_casting: Sequence[str] | None = None,
                 sort_ascending: Sequence[bool] | None = None,
                 all_msg: str = "", some_msg: str = "", none_msg: str = "") -> None:
        super().__init__(dikt)
        self.affected_items: list[Any] = list(affected_items) if affected_items is not None else []
        self.total_affected_items: int = (total_affected_items if total_affected_items is not None
                                          else len(self.affected_items))
        self.sort_fields: list[str] | None = list(sort_fields) if sort_fields is not None else None
        self.sort_casting: list[str] = list(sort_casting) if sort_casting is not None else ["int"]
        self.sort_ascending: list[bool] = (list(sort_ascending) if sort_ascending is not None
                                           else [True])
        self.all_msg = all_msg
        self.some_msg = some_msg
        self.none_msg = none_msg
        self.failed_items: dict[WazuhException, set[Any]] = {}

    @property
    def total_failed_items(self) -> int:
        return sum(len(ids) for ids in self.failed_items.values())

    @property
    def message(self) -> str:
        if self.total_affected_items == 0:
            return self.none_msg
        return self.all_msg if self.total_failed_items == 0 else self.some_msg

    def add_failed_item(self, id_: Any = None, error: WazuhException | None = None) -> None:
        """Record that item ``id_`` failed with ``error`` (ids grouped by equal errors)."""
        if error is None:
            error = WazuhInternalError(1000)
        self.failed_items.setdefault(error, set()).add(id_)

    def add_failed_items_from(self, other: AffectedItemsWazuhResult) -> None:
        if not isinstance(other, AffectedItemsWazuhResult):
            raise WazuhInternalError(
                1000, extra_message=f"Failed items cannot be taken from {type_name(other)} object")
        for error, ids in other.failed_items.items():
            for id_ in ids:
                self.add_failed_item(id_, error)

    def remove_failed_items(self, codes: Iterable[int] = ()) -> None:
        drop = set(codes)
        self.failed_items = {e: i for e, i in self.failed_items.items() if e.code not in drop}

    def __or__(self, other: Any) -> Any:
        """Merge the result of another node: a WazuhError with ids becomes failed items of
        this result; any other exception wins; two results merge their items (kept in sort
        order), failed items and totals."""
        if isinstance(other, WazuhError) and other.ids:
            merged = deepcopy(self)
            for id_ in other.ids:
                merged.add_failed_item(id_, other)
            return merged
        if isinstance(other, WazuhException):
            return other
        if not isinstance(other, AffectedItemsWazuhResult):
            raise WazuhInternalError(
                1000, extra_message=f"Cannot be merged with {type_name(other)} object")
        result = deepcopy(self)
        result.dikt = self.merge_plain(self.dikt, other.dikt)
        result.add_failed_items_from(other)
        result.affected_items = merge_sorted(
            [deepcopy(self.affected_items), deepcopy(other.affected_items)],
            self.sort_fields, self.sort_ascending, self.sort_casting)
        result.total_affected_items = self.total_affected_items + other.total_affected_items
        return result

    def merge_str(self, mine: str, theirs: str, key: str | None) -> str:
        if key == "older_than":
            return mine
        return super().merge_str(mine, theirs, key)

    def to_dict(self, copy: bool = True) -> dict[str, Any]:
        """The ``__object__`` of the ``__wazuh_result__`` tag (failed items as parallel lists
        of exception objects and id lists; ``copy=False``: sharing this result's data, for an
        encoder that only reads it)."""
        keys: list[dict[str, Any]] = []
        values: list[list[Any]] = []
        for error, ids in self.failed_items.items():
            keys.append({"__object__": error.to_dict(), "__class__": type_name(error)})
            values.append(sorted_ids(ids))
        return {
            "affected_items": deepcopy(self.affected_items) if copy else self.affected_items,
            "sort_fields": self.sort_fields,
            "sort_casting": self.sort_casting,
            "sort_ascending": self.sort_ascending,
            "total_affected_items": self.total_affected_items,
            "total_failed_items": self.total_failed_items,
            "dikt": deepcopy(self.dikt) if copy else self.dikt,
            "all_msg": self.all_msg,
            "some_msg": self.some_msg,
            "none_msg": self.none_msg,
            "failed_items_keys": keys,
            "failed_items_values": values,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AffectedItemsWazuhResult:
        """Rebuild from :meth:`to_dict` contents; ValueError on a malformed object."""
        if not isinstance(data, Mapping):
            raise ValueError("AffectedItemsWazuhResult object is not a JSON object")
        items = data.get("affected_items", [])
        keys = data.get("failed_items_keys", [])
        values = data.get("failed_items_values", [])
        if not all(isinstance(v, list) for v in (items, keys, values)):
            raise ValueError("AffectedItemsWazuhResult lists are malformed")
        if len(keys) != len(values):
            raise ValueError("failed_items_keys and failed_items_values differ in length")
        total = data.get("total_affected_items", len(items))
        if isinstance(total, bool) or not isinstance(total, int):
            raise ValueError("total_affected_items must be an integer")
        dikt = data.get("dikt")
        dikt = {} if dikt is None else dikt
        if not isinstance(dikt, dict):
            raise ValueError("dikt must be an object")
        result = cls(dikt=dikt, affected_items=items, total_affected_items=total,
                     sort_fields=_str_list(data.get("sort_fields"), None),
                     sort_casting=_str_list(data.get("sort_casting"), ["int"]),
                     sort_ascending=[bool(b) for b in data.get("sort_ascending") or [True]]
                     if isinstance(data.get("sort_ascending") or [True], list) else [True],
                     all_msg=str(data.get("all_msg") or ""),
                     some_msg=str(data.get("some_msg") or ""),
                     none_msg=str(data.get("none_msg") or ""))
        for key, ids in zip(keys, values, strict=True):
            if not isinstance(key, dict) or not isinstance(ids, list):
                raise ValueError("malformed failed item")
            error = exception_from_dict(str(key.get("__class__")), key.get("__object__") or {})
            for id_ in _hashable_ids(ids):
                result.add_failed_item(id_, error)
        return result

    def render(self) -> dict[str, Any]:
        """The API's JSON body: ``{"data": {...}, "message": ..., "error": 0|1|2}`` (0 all
        done, 1 all failed, 2 partial). The body shares the items with this result (no deep
        copy: it is made to be serialised; copying 500 agents cost more than the query)."""
        failed = []
        for error, ids in sorted(self.failed_items.items(), key=lambda kv: kv[0].code):
            detail: dict[str, Any] = {"code": error.code, "message": error.message}
            if error.remediation is not None:
                detail["remediation"] = error.remediation
            failed.append({"error": detail, "id": sorted_ids(ids)})
        data = {
            "affected_items": list(self.affected_items),
            "total_affected_items": self.total_affected_items,
            "total_failed_items": self.total_failed_items,
            "failed_items": failed,
            **self.dikt,
        }
        if self.total_affected_items > 0 and self.total_failed_items > 0:
            error_code = 2
        elif self.total_affected_items == 0 and self.total_failed_items > 0:
            error_code = 1
        else:
            error_code = 0
        return {"data": data, "message": self.message, "error": error_code}


def _str_list(value: Any, default: list[str] | None) -> list[str] | None:
    if value is None:
        return default
    if not isinstance(value, list):
        raise ValueError("expected a list of strings")
    return [str(v) for v in value]


def result_from_dict(class_name: str, data: Mapping[str, Any]) -> AbstractWazuhResult:
    """Build the result a ``__wazuh_result__`` names (only the two result classes exist)."""
    if class_name == "WazuhResult":
        return WazuhResult.from_dict(data)
    if class_name == "AffectedItemsWazuhResult":
        return AffectedItemsWazuhResult.from_dict(data)
    raise ValueError(f"unknown result class {class_name!r}")


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)`` for API bodies: results render, datetimes
    become ``2023-11-14T22:13:20+00:00`` (UTC, seconds) as the Wazuh API writes them."""
    if type(value) is datetime and value.tzinfo is UTC:  # first: two per agent, already UTC
        return value.isoformat(timespec="seconds")
    if isinstance(value, AbstractWazuhResult):
        return value.render()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(sep="T", timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted_ids(value)
    raise TypeError(f"Object of type {type_name(value)} is not JSON serializable")


# --- ordered merge of affected items ----------------------------------------------------

_CASTS: dict[str, Any] = {"int": int, "float": float, "str": str}


def nested_get(item: Any, path: str) -> Any:
    """``item["a"]["b"]`` for ``"a.b"`` (None when missing)."""
    value = item
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        else:
            return value
    return value


def _before(a: Sequence[Any], b: Sequence[Any], ascending: Sequence[bool],
            casts: Sequence[Any]) -> bool:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        asc = ascending[i] if i < len(ascending) else True
        cast = casts[i] if i < len(casts) else None
        if cast is not None:
            try:
                x = cast(x) if x is not None else None
                y = cast(y) if y is not None else None
            except (TypeError, ValueError):
                x, y = (None if x is None else str(x)), (None if y is None else str(y))
        if x is None:
            return y is not None
        if y is None:
            return False
        try:
            if x < y:
                return asc
            if x > y:
                return not asc
        except TypeError:
            if str(x) != str(y):
                return (str(x) < str(y)) == asc
    return False


def merge_sorted(lists: Sequence[list[Any]], criteria: Sequence[str] | None,
                 ascending: Sequence[bool] | None, types: Sequence[str] | None) -> list[Any]:
    """Merge lists already ordered by ``criteria`` into one ordered list (stable: on ties
    the earlier list goes first). Without criteria the items themselves are compared."""
    pending = [list(lst) for lst in lists]
    positions = [0] * len(pending)
    casts = [_CASTS.get(t) for t in (types or [])]
    asc = list(ascending or [True])

    def keys(item: Any) -> list[Any]:
        return [item] if criteria is None else [nested_get(item, c) for c in criteria]

    out: list[Any] = []
    total = sum(len(lst) for lst in pending)
    while len(out) < total:
        chosen = -1
        for i, lst in enumerate(pending):
            if positions[i] >= len(lst):
                continue
            if chosen < 0 or _before(keys(lst[positions[i]]),
                                     keys(pending[chosen][positions[chosen]]), asc, casts):
                chosen = i
        out.append(pending[chosen][positions[chosen]])
        positions[chosen] += 1
    return out


def _sort_key(value: Any) -> tuple[int, Any]:
    """Order None first, then numbers, then text (lists/dicts compared as their JSON)."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value.lower())
    return (2, json.dumps(value, sort_keys=True, default=str).lower())


def sort_items(items: Sequence[Any], fields: Sequence[str], ascending: bool = True) -> list[Any]:
    """Items sorted by the (dotted) ``fields``; by the items themselves when none given."""
    if not fields:
        return sorted(items, key=_sort_key, reverse=not ascending)
    return sorted(items, key=lambda item: [_sort_key(nested_get(item, f)) for f in fields],
                  reverse=not ascending)
