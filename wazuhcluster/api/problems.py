"""Wazuh's problem bodies: ``{"title", "detail", "remediation", "dapi_errors", "error"}``.

A WazuhException from a framework function (or from the DAPI) becomes the HTTP status Wazuh
gives its class; errors made by the API itself (bad parameters, authentication, limits) are
:class:`Problem` instances with the same body shape.
"""

from __future__ import annotations

from typing import Any

#: HTTP status per Wazuh exception class (the first class found in the exception's MRO wins).
STATUS_BY_CLASS = (
    ("WazuhPermissionError", 403),
    ("WazuhResourceNotFound", 404),
    ("WazuhTooManyRequests", 429),
    ("WazuhNotAcceptable", 406),
    ("WazuhInternalError", 500),
    ("WazuhError", 400),
)
TITLE_BY_CLASS = {
    "WazuhPermissionError": "Permission Denied", "WazuhResourceNotFound": "Resource Not Found",
    "WazuhTooManyRequests": "Too Many Requests", "WazuhNotAcceptable": "Not Acceptable",
    "WazuhInternalError": "Wazuh Internal Error", "WazuhClusterError": "Wazuh Cluster Error",
    "WazuhError": "Bad Request",
}


class Problem(Exception):
    """An error answered by the API itself."""

    def __init__(self, status: int, title: str, detail: str | None = None, *,
                 code: int | None = None, remediation: str | None = None) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code
        self.remediation = remediation

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"title": self.title}
        if self.detail:
            out["detail"] = _clean(self.detail)
        if self.remediation:
            out["remediation"] = self.remediation
        if self.code is not None:
            out["error"] = self.code
        return out


def _clean(detail: str) -> str:
    return " ".join(str(detail).replace("\n\n", ". ").replace("\n", "").split())


def is_wazuh_exception(exc: BaseException) -> bool:
    return any(c.__name__ == "WazuhException" for c in type(exc).__mro__)


def wazuh_problem(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """Status and body for a WazuhException (duck-typed: code, message, remediation, title,
    dapi_errors)."""
    names = [c.__name__ for c in type(exc).__mro__]
    status = next((s for n, s in STATUS_BY_CLASS if n in names), 500)
    title = getattr(exc, "title", None) or next(
        (TITLE_BY_CLASS[n] for n in names if n in TITLE_BY_CLASS), "Wazuh Internal Error")
    message = getattr(exc, "message", None) or str(exc)
    body: dict[str, Any] = {"title": title, "detail": _clean(message)}
    remediation = getattr(exc, "remediation", None)
    if remediation:
        body["remediation"] = remediation
    dapi_errors = getattr(exc, "dapi_errors", None)
    if dapi_errors:
        body["dapi_errors"] = dapi_errors
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        body["error"] = code
    return status, body


def bad_request(detail: str) -> Problem:
    return Problem(400, "Bad Request", detail)


INVALID_CREDENTIALS = Problem(401, "Unauthorized", "Invalid credentials")
NO_TOKEN = Problem(401, "Unauthorized", "No authorization token provided")
INVALID_TOKEN = Problem(401, "Unauthorized", "Invalid token")
LOGIN_BLOCKED = Problem(
    403, "Permission Denied",
    "Limit of login attempts reached. The current IP has been blocked due to a high number "
    "of login attempts", code=6000)
TOO_MANY_REQUESTS = Problem(
    429, "Too Many Requests", "Maximum number of requests per minute reached", code=6001,
    remediation="Raise access.max_request_per_minute in api/configuration/api.yaml, or send "
                "fewer requests")
READ_ONLY = Problem(
    403, "Permission Denied", "Permission denied: Resource type: *:*", code=4000,
    remediation="This user's role is readonly: log in as an administrator to change anything")
