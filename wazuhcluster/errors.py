"""Exception hierarchy, and the JSON error objects that travel in ``err`` replies.

Errors cross the wire as ``{"__wazuh_exception__": {"__class__": ..., "__object__": {...}}}``
(docs/protocol.md, "Error objects").
Decoding is data-only: the class name is looked up in a fixed allow-list
and nothing named in a payload is ever imported, evaluated or called (the 4.7.5 decoder
``eval``s and imports names: CVE-2025-24016).
"""

from __future__ import annotations

import json
from typing import Any

from wazuhcluster.logsafe import peer_text

#: Exception classes Wazuh uses on the wire, with their default titles.
TITLES: dict[str, str] = {
    "WazuhException": "Wazuh Exception",
    "WazuhInternalError": "Wazuh Internal Error",
    "WazuhClusterError": "Wazuh Cluster Error",
    "WazuhError": "Bad Request",
    "WazuhPermissionError": "Permission Denied",
    "WazuhResourceNotFound": "Resource Not Found",
    "WazuhTooManyRequests": "Too Many Requests",
    "WazuhNotAcceptable": "Not Acceptable",
    "WazuhHAPHelperError": "HAProxy Helper Error",
}
#: Classes of the WazuhError family carry an ``ids`` list.
_WITH_IDS = frozenset({"WazuhError", "WazuhPermissionError", "WazuhResourceNotFound",
                       "WazuhTooManyRequests", "WazuhNotAcceptable"})

#: Our own wording of the cluster error codes; not part of the protocol.
MESSAGES: dict[int, str] = {
    1000: "Internal error",
    1724: "Not a valid select field",
    1728: "Invalid type",
    1730: "Node does not exist",
    3000: "Cluster error",
    3004: "Invalid cluster configuration",
    3009: "Error connecting to the local cluster socket",
    3012: "Cluster is not running",
    3015: "Cannot access a synchronised directory",
    3016: "Peer returned an error while receiving a string",
    3018: "Error sending request",
    3020: "Timeout sending request",
    3021: "Timeout executing API request",
    3022: "Unknown node or node not connected",
    3023: "Worker is not connected to the master",
    3024: "Command name too long",
    3025: "Could not decrypt message",
    3027: "Unknown task id",
    3028: "Node name already exists",
    3029: "Worker name is the same as the master name",
    3030: "Worker does not belong to the same cluster",
    3031: "Worker and master versions are not the same",
    3032: "Could not forward DAPI response",
    3034: "File to send does not exist",
    3035: "String not found",
    3036: "JSON could not be decoded",
    3037: "Error while processing agent-info or agent-groups chunks",
    3039: "Timeout while waiting to receive a file",
    3040: "Error while waiting to receive a file",
    3050: "Message exceeds the size limit",
    3051: "Too many divided messages",
    3060: "TLS is required on the cluster link",
    3061: "Node name does not match its certificate",
    3062: "TLS certificate refused",
    3063: "TLS handshake failed",
}


class ClusterError(Exception):
    """An expected failure with a Wazuh error code; becomes an ``err`` reply.

    :param code: Wazuh error code.
    :param extra_message: detail appended to the code's message.
    :param class_name: the Wazuh exception class name used on the wire.
    """

    def __init__(self, code: int, extra_message: str | None = None,
                 class_name: str = "WazuhClusterError", title: str | None = None) -> None:
        self.code = code
        self.extra_message = extra_message
        self.class_name = class_name if class_name in TITLES else "WazuhClusterError"
        self.title = title or TITLES[self.class_name]
        super().__init__(str(self))

    def __str__(self) -> str:
        base = MESSAGES.get(self.code, "Cluster error")
        if self.extra_message:
            base = f"{base}: {self.extra_message}"
        return f"Error {self.code} - {base}"

    def to_wire(self) -> bytes:
        """The JSON object a Wazuh peer decodes back into this exception."""
        obj: dict[str, Any] = {
            "type": "about:blank", "title": self.title, "code": self.code,
            "extra_message": self.extra_message, "extra_remediation": None,
            "cmd_error": False, "dapi_errors": {},
        }
        if self.class_name in _WITH_IDS:
            obj["ids"] = []
        return json.dumps({"__wazuh_exception__": {"__class__": self.class_name,
                                                   "__object__": obj}}).encode()


class InternalError(ClusterError):
    """Any unexpected failure of a responder, reported as WazuhInternalError 1000."""

    def __init__(self, extra_message: str | None = None) -> None:
        super().__init__(1000, extra_message, class_name="WazuhInternalError")


class UnknownCommand(Exception):
    """The peer sent a command this role does not serve."""

    def __init__(self, command: bytes) -> None:
        self.command = command
        super().__init__(f"unknown command {command!r}")

    def to_wire(self) -> bytes:
        """Wazuh's plain-text answer to an unknown command (decoded by peers as 3000)."""
        return f"unknown command '{self.command!r}'".encode()


#: A peer's error text is escaped (it reaches logs) and cut to this many characters.
REMOTE_TEXT_LIMIT = 2000


class RemoteCommandError(ClusterError):
    """The peer answered ``err``; its error object, decoded as plain data (texts escaped by
    :func:`~wazuhcluster.logsafe.peer_text`, as they end up in log lines)."""

    @classmethod
    def from_payload(cls, payload: bytes) -> RemoteCommandError:
        """Decode an ``err`` payload: a JSON exception object, or plain text (code 3000)."""
        text = payload.decode("utf-8", "replace")
        try:
            decoded = json.loads(text)
        except ValueError:
            return cls(3000, peer_text(text, REMOTE_TEXT_LIMIT))
        if isinstance(decoded, dict):
            exc = decoded.get("__wazuh_exception__")
            if isinstance(exc, dict):
                name = exc.get("__class__")
                obj = exc.get("__object__")
                if isinstance(name, str) and isinstance(obj, dict):
                    code = obj.get("code")
                    extra = obj.get("extra_message")
                    title = obj.get("title")
                    return cls(code if isinstance(code, int) else 3000,
                               peer_text(extra, REMOTE_TEXT_LIMIT)
                               if isinstance(extra, str) else None,
                               class_name=name if name in TITLES else "WazuhClusterError",
                               title=peer_text(title, REMOTE_TEXT_LIMIT)
                               if isinstance(title, str) else None)
        return cls(3000, peer_text(text, REMOTE_TEXT_LIMIT))


class ConfigError(Exception):
    """The configuration is invalid; the message names the key, the value and the fix."""
