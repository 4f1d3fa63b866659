"""StatusPage: ``/ui`` (HTML), ``/ui/data`` (JSON), ``/ui/login`` and ``/ui/logout``, served
by the REST API (same port, TLS and users) through its page hook (IWebPage).

Authentication, in this order: ``Authorization: Bearer <token>`` (scripts), the
``wzc_session`` cookie set by the login form (people), or ``?token=<token>`` in the URL (a
browser that cannot send a header, e.g. a kiosk or the headless-browser test; the token then
sits in the browser's history, so prefer the form). The form is CSRF-safe: its hidden field
must equal the ``wzc_csrf`` cookie (double submit), and a cross-site ``Origin`` is refused;
both cookies are HttpOnly, Secure, SameSite=Strict and limited to ``/ui``.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

from wazuhcluster.interfaces import IAPIAuth, IWebPage
from wazuhcluster.ui.page import login_page, status_page
from wazuhcluster.ui.status import GET_STATUS, status_json

SESSION_COOKIE = b"wzc_session"
CSRF_COOKIE = b"wzc_csrf"
MAX_FORM = 4096


class PageError(Exception):
    """An answer other than the page: ``status`` and a short text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


@implementer(IWebPage)
class StatusPage:
    """The status page of one node.

    :param node: the role node (its DAPI answers ``wazuhcluster.ui.get_status``).
    :param clock: the reactor's time.
    :param token_lifetime: seconds a login cookie lives (the API's token lifetime).
    """

    prefix = "/ui"
    _log = Logger()

    def __init__(self, node: Any, clock: IReactorTime, token_lifetime: int = 900) -> None:
        self._node = node
        self._clock = clock
        self._lifetime = token_lifetime

    def serve(self, request: Any, auth: IAPIAuth) -> Deferred[None]:
        return Deferred.fromCoroutine(self._serve(request, auth))

    async def _serve(self, request: Request, auth: IAPIAuth) -> None:
        start = self._clock.seconds()
        method = request.method.decode("ascii", "replace")
        split = urlsplit(request.uri.decode("utf-8", "replace"))
        path = split.path.rstrip("/") or "/"
        address = getattr(request.getClientAddress(), "host", "unknown")
        user = "unknown_user"
        status = 200
        try:
            if path == "/ui/login" and method == "POST":
                user = await self._login(request, auth, address)
                status = 303
            elif path == "/ui/logout" and method == "POST":
                self._check_form(request)
                self._cookie(request, SESSION_COOKIE, "", 0)
                self._redirect(request)
                status = 303
            elif path in ("/ui", "/ui/data") and method == "GET":
                query = parse_qs(split.query)
                who = await self._who(request, auth, query)
                if who is None:
                    if path == "/ui/data":
                        raise PageError(401, "Log in: send Authorization: Bearer <token>")
                    self._send_login(request)
                else:
                    user = who[0]
                    data = await self._data()
                    if path == "/ui/data":
                        self._send(request, 200, status_json(data),
                                   "application/json; charset=utf-8")
                    else:
                        nonce = secrets.token_urlsafe(16)
                        csrf = self._csrf(request)
                        html = status_page(data, user, csrf, nonce, cookie_session=(
                            request.getCookie(SESSION_COOKIE) is not None))
                        self._send(request, 200, html.encode(), "text/html; charset=utf-8",
                                   nonce)
            elif path in ("/ui", "/ui/data", "/ui/login", "/ui/logout"):
                raise PageError(405, "Method not allowed")
            else:
                raise PageError(404, "Not found")
        except PageError as e:
            status = e.status
            if e.status == 401 and path == "/ui/login":
                self._send_login(request, e.text, status=401)
            else:
                self._send(request, e.status, f"{e.text}\n".encode(), "text/plain; charset=utf-8")
        except Exception as e:  # noqa: BLE001 - a page error never escapes as a traceback
            status = int(getattr(e, "status", 500) or 500)
            text = "Log in again" if status == 401 else "The status could not be read"
            if status >= 500:
                self._log.failure("[API] [UI] Could not answer {path}", path=path)
            if status == 401 and path == "/ui":
                self._send_login(request, "Your session expired: log in again")
                status = 200
            else:
                self._send(request, status, f"{text}\n".encode(), "text/plain; charset=utf-8")
        auth.log_request(user, address, method, path, status, self._clock.seconds() - start)

    # -- authentication ----------------------------------------------------------------------
    async def _who(self, request: Request, auth: IAPIAuth,
                   query: dict[str, list[str]]) -> tuple[str, str] | None:
        header = (request.getHeader("authorization") or "").strip()
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            result: tuple[str, str] = await auth.authenticate_token(token.strip())
            return result
        cookie = request.getCookie(SESSION_COOKIE)
        if cookie:
            try:
                result = await auth.authenticate_token(cookie.decode("ascii", "replace"))
            except Exception:  # noqa: BLE001 - an expired or revoked cookie: log in again
                self._cookie(request, SESSION_COOKIE, "", 0)
                return None
            return result
        if query.get("token"):
            result = await auth.authenticate_token(query["token"][0])
            return result
        return None

    async def _login(self, request: Request, auth: IAPIAuth, address: str) -> str:
        form = self._check_form(request)
        name = form.get("username", [""])[0]
        password = form.get("password", [""])[0]
        if not name or not password:
            raise PageError(401, "User and password are required")
        try:
            token = await auth.login(name, password, address)
        except Exception as e:
            status = int(getattr(e, "status", 401) or 401)
            if status == 403:
                raise PageError(403, "Too many failed logins from this address: wait") from None
            if status >= 500:
                raise
            raise PageError(401, "Invalid user or password") from None
        self._cookie(request, SESSION_COOKIE, token, self._lifetime)
        self._redirect(request)
        return name

    def _check_form(self, request: Request) -> dict[str, list[str]]:
        """The posted form, once its CSRF field matches the cookie and its Origin is ours."""
        origin = request.getHeader("origin")
        host = request.getHeader("host")
        if origin and origin != "null" and (host is None or urlsplit(origin).netloc != host):
            raise PageError(403, "Cross-site form refused")
        request.content.seek(0, 0)  # type: ignore[union-attr]
        body = request.content.read(MAX_FORM + 1)  # type: ignore[union-attr]
        if len(body) > MAX_FORM:
            raise PageError(413, "Form too large")
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        sent = form.get("csrf", [""])[0].encode()
        expected = request.getCookie(CSRF_COOKIE) or b""
        if not expected or not hmac.compare_digest(sent, expected):
            raise PageError(403, "The form expired: reload /ui and log in again")
        return form

    def _csrf(self, request: Request) -> str:
        token: bytes | None = request.getCookie(CSRF_COOKIE)
        if token and 20 <= len(token) <= 64 and token.isascii():
            return str(token.decode("ascii"))
        value = secrets.token_urlsafe(24)
        self._cookie(request, CSRF_COOKIE, value, None)
        return value

    # -- output ----------------------------------------------------------------------------
    async def _data(self) -> dict[str, Any]:
        dapi = getattr(self._node, "dapi", None)
        if dapi is None:
            raise PageError(500, "The distributed API of this node is not available")
        result = await dapi.call(GET_STATUS, {}, "local_master")
        # The page only reads the data: no copy of it (``render()`` would deep-copy every
        # sync of the hour on the reactor, most of the cost of a page on the master).
        body = result.to_dict(copy=False)["result"] if hasattr(result, "to_dict") else result
        data: dict[str, Any] = body["data"]
        return data

    def _cookie(self, request: Request, name: bytes, value: str, max_age: int | None) -> None:
        request.addCookie(name, value.encode("ascii"), path=b"/ui",
                          max_age=None if max_age is None else str(max_age).encode(),
                          secure=True, httpOnly=True, sameSite="strict")

    def _redirect(self, request: Request) -> None:
        request.setHeader(b"location", b"/ui")
        self._send(request, 303, b"", "text/plain; charset=utf-8")

    def _send_login(self, request: Request, message: str = "", status: int = 200) -> None:
        nonce = secrets.token_urlsafe(16)
        html = login_page(self._csrf(request), nonce, message)
        self._send(request, status, html.encode(), "text/html; charset=utf-8", nonce)

    def _send(self, request: Request, status: int, body: bytes, content_type: str,
              nonce: str | None = None) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        style = f"'nonce-{nonce}'" if nonce else "'none'"
        request.setResponseCode(status)
        request.setHeader(b"content-type", content_type.encode())
        request.setHeader(b"content-length", str(len(body)).encode())
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"content-security-policy",
                          f"default-src 'none'; style-src {style}; img-src data:; "
                          "form-action 'self'; frame-ancestors 'none'; base-uri 'none'".encode())
        request.write(body)
        request.finish()
