"""Asking a node's DAPI through its local socket (what the control CLI and local tools use)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import TimeoutError

from wazuhcluster.dapi import codec
from wazuhcluster.dapi.codec import DapiRequest, FunctionName
from wazuhcluster.dapi.results import WazuhClusterError, WazuhException, WazuhInternalError
from wazuhcluster.errors import ClusterError, RemoteCommandError
from wazuhcluster.localapi.client import local_request
from wazuhcluster.protocol.commands import DAPI, DAPI_EARLY, DAPI_SYNC


def build_request(function: str, f_kwargs: Mapping[str, Any] | None = None,
                  request_type: str = "local_master", **fields: Any) -> DapiRequest:
    """A DAPI request for ``function`` (Wazuh's dotted name)."""
    if request_type not in codec.REQUEST_TYPES:
        raise ValueError(f"request type must be one of {', '.join(codec.REQUEST_TYPES)}")
    return DapiRequest(f=FunctionName.from_dotted(function), f_kwargs=dict(f_kwargs or {}),
                       request_type=request_type, **{**codec.request_fields(function), **fields})


async def dapi_call(reactor: Any, socket_path: str, request: DapiRequest,
                    final_timeout: float = 200.0, early: bool = False) -> Any:
    """Send ``request`` as ``wzc_dapi`` (``dapi`` whose ``ok`` reply is the answer itself: one
    round trip instead of ``dapi`` then a long string) and return the decoded answer. With
    ``early``, as ``wzc_dapi_e`` (at a worker revalidating a kept answer, its bytes come
    ahead while the master is asked; docs/protocol.md, "Early answers on the local socket").

    :raises WazuhException: the error the request was answered with, 3012 when the node is
        not running, 3020 when no answer came within ``final_timeout``.
    """
    payload = request.to_json().encode()
    try:
        raw: bytes | None = None
        # nodes older than this client (rolling upgrade) do not know the newer commands:
        # (wzc_dapi_e, early answers,) then wzc_dapi, then 4.7.5's dapi + long string
        for command in ((DAPI_EARLY, DAPI_SYNC) if early else (DAPI_SYNC,)):
            try:
                raw = await local_request(reactor, socket_path, command, payload,
                                          timeout=final_timeout)
                break
            except RemoteCommandError as e:
                if not _unknown_command(e):
                    raise
        if raw is None:
            raw = await local_request(reactor, socket_path, DAPI, payload,
                                      final_timeout=final_timeout)
    except TimeoutError:
        raise WazuhInternalError(3020, extra_message="no answer to the DAPI request") from None
    except RemoteCommandError as e:
        raise codec.error_from_text(e.to_wire().decode()) from None
    except ClusterError as e:
        raise WazuhClusterError(e.code, extra_message=e.extra_message) from None
    answer = codec.loads(raw) if raw[:1] in (b"{", b"[", b'"') or raw[:1].isdigit() \
        else codec.error_from_text(raw.decode("utf-8", "replace"))
    if isinstance(answer, WazuhException):
        raise answer
    return answer


def _unknown_command(error: RemoteCommandError) -> bool:
    """Whether the node answered that it does not know the command it was sent."""
    return error.code == 3000 and (error.extra_message or "").startswith("unknown command")
