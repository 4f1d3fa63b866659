"""The status page on the REST API's real HTTPS socket (127.0.0.1), driven with treq: login
form, CSRF, cookies, bearer token, the data endpoint against the OpenAPI document, escaping.
The DAPI is the API tests' in-process fake."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tests.api.harness import ADMIN, APIClient, APIHarness, Response
from tests.support import short_tempdir
from tests.ui.test_page import EVIL, status_data
from wazuhcluster.dapi.results import WazuhResult
from wazuhcluster.interfaces import IAPIAuth
from wazuhcluster.ui.resource import StatusPage
from wazuhcluster.ui.status import GET_STATUS

FORM = "application/x-www-form-urlencoded"


def cookies(r: Response, headers: Any) -> dict[str, str]:
    """``name -> whole Set-Cookie value`` of a response."""
    out = {}
    for value in headers.getRawHeaders("set-cookie") or []:
        out[value.split("=", 1)[0]] = value
    return out


class UIServiceTests(TestCase):
    async def start(self) -> tuple[APIHarness, APIClient]:
        h = APIHarness(self, reactor, short_tempdir(self))

        async def get_status(ctx: Any, **_: Any) -> WazuhResult:
            return WazuhResult({"data": status_data()})
        h.dapi.register(GET_STATUS, get_status)
        verifyObject(IAPIAuth, h.service.resource)
        h.service.resource.mount(StatusPage(h.node, h.clock, 900))
        client = await h.start()
        return h, client

    async def raw(self, client: APIClient, method: str, path: str, *,
                  headers: dict[str, str] | None = None,
                  data: bytes | None = None) -> tuple[Response, Any]:
        response = await client.http.request(method, client.base + path, headers=headers or {},
                                             data=data, allow_redirects=False)
        import treq
        body = await treq.content(response)
        ctype = (response.headers.getRawHeaders("content-type") or [""])[0]
        return Response(response.code, ctype, body, body), response.headers

    async def test_login_form_csrf_and_session_cookie(self) -> None:
        h, client = await self.start()
        # Not logged in: the form, and a CSRF cookie that scripts and other sites cannot use.
        r, headers = await self.raw(client, "GET", "/ui")
        self.assertEqual(r.status, 200)
        self.assertIn(b'action="/ui/login"', r.raw)
        csrf_cookie = cookies(r, headers)["wzc_csrf"]
        for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/ui"):
            self.assertIn(flag, csrf_cookie)
        csp = headers.getRawHeaders("content-security-policy")[0]
        self.assertIn("default-src 'none'", csp)
        csrf = csrf_cookie.split("=", 1)[1].split(";")[0]
        self.assertIn(f'name="csrf" value="{csrf}"'.encode(), r.raw)

        def form(**fields: str) -> bytes:
            return urlencode(fields).encode()
        jar = {"Cookie": f"wzc_csrf={csrf}", "Content-Type": FORM}
        # No CSRF field, a wrong one, or a cross-site origin: refused before any password check.
        for fields, extra in (({"username": ADMIN[0], "password": ADMIN[1]}, {}),
                              ({"username": ADMIN[0], "password": ADMIN[1], "csrf": "x" * 32},
                               {}),
                              ({"username": ADMIN[0], "password": ADMIN[1], "csrf": csrf},
                               {"Origin": "https://evil.example"})):
            r, _ = await self.raw(client, "POST", "/ui/login", headers={**jar, **extra},
                                  data=form(**fields))
            self.assertEqual(r.status, 403, r.raw)
        self.assertNotIn(GET_STATUS, [c["function"] for c in h.dapi.calls])
        # A wrong password: the form again, 401.
        r, _ = await self.raw(client, "POST", "/ui/login", headers=jar,
                              data=form(username=ADMIN[0], password="wrong", csrf=csrf))
        self.assertEqual(r.status, 401)
        self.assertIn(b"Invalid user or password", r.raw)
        # The right one: a session cookie and back to /ui.
        r, headers = await self.raw(client, "POST", "/ui/login", headers=jar,
                                    data=form(username=ADMIN[0], password=ADMIN[1], csrf=csrf))
        self.assertEqual(r.status, 303)
        self.assertEqual(headers.getRawHeaders("location"), ["/ui"])
        session = cookies(r, headers)["wzc_session"]
        for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/ui", "Max-Age=900"):
            self.assertIn(flag, session)
        token = session.split("=", 1)[1].split(";")[0]
        page_jar = {"Cookie": f"wzc_csrf={csrf}; wzc_session={token}"}
        r, _ = await self.raw(client, "GET", "/ui", headers=page_jar)
        self.assertEqual(r.status, 200)
        html = r.raw.decode()
        self.assertIn('<span id="node-count">3</span>', html)
        self.assertIn("Logged in as admin", html)
        self.assertIn('action="/ui/logout"', html)
        self.assertNotIn("<script", html.lower())
        self.assertIn("&lt;script&gt;", html)
        # Log out: the session cookie is cleared.
        r, headers = await self.raw(client, "POST", "/ui/logout",
                                    headers={**page_jar, "Content-Type": FORM},
                                    data=form(csrf=csrf))
        self.assertEqual(r.status, 303)
        self.assertIn("Max-Age=0", cookies(r, headers)["wzc_session"])
        self.assertNotIn(ADMIN[1], h.api_log())
        self.assertNotIn(token, h.api_log())
        self.assertIn('admin 127.0.0.1 "POST /ui/login" done in', h.api_log())

    async def test_bearer_token_and_data_endpoint(self) -> None:
        h, client = await self.start()
        token = await client.login()
        r = await client.request("GET", "/ui/data", token=token)  # validated against the doc
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body["nodes"][1]["name"], EVIL)
        self.assertEqual(h.dapi.last(GET_STATUS)["request_type"], "local_master")
        r = await client.request("GET", "/ui/data")
        self.assertEqual(r.status, 401)
        r = await client.request("GET", "/ui/data", token="not-a-token")
        self.assertEqual(r.status, 401)
        r, _ = await self.raw(client, "GET", "/ui", headers={"Authorization": f"Bearer {token}"})
        self.assertEqual(r.status, 200)
        self.assertNotIn(b'action="/ui/logout"', r.raw)  # no cookie session to end
        self.assertIn(b'id="sync-chart"', r.raw)
        r, _ = await self.raw(client, "GET", f"/ui?token={token}")
        self.assertIn(b'<span id="node-count">3</span>', r.raw)
        self.assertNotIn(token, h.api_log())  # the query string is never logged
        r, _ = await self.raw(client, "GET", "/ui/nothing")
        self.assertEqual(r.status, 404)
        r, _ = await self.raw(client, "DELETE", "/ui")
        self.assertEqual(r.status, 405)
        # The API itself is unchanged next to the page.
        r = await client.request("GET", "/", token=token)
        self.assertEqual(r.status, 200)
        self.assertTrue(re.search(r'"GET /ui/data" done in [0-9.]+s: 200', h.api_log()))
