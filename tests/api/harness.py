"""A real listening API service (127.0.0.1, free port, HTTPS) with a fake DAPI, and a treq
client that trusts its self-signed certificate and validates every response it receives
against the OpenAPI document."""

from __future__ import annotations

import base64
import os
from typing import Any

import attrs
import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from tests.api.fakes import FakeDAPI, FakeNode
from tests.api.spec import validate
from tests.support import node_config
from wazuhcluster.api.config import APIConfig, load_api_config
from wazuhcluster.api.functions import register_functions
from wazuhcluster.api.service import APIService
from wazuhcluster.api.users import UserStore

ADMIN = ("admin", "Adm1n-pass!")
READER = ("reader", "Read3r-pass!")


@implementer(IPolicyForHTTPS)
class TrustOne:
    """Trust exactly one certificate (the node's self-signed one)."""

    def __init__(self, pem: bytes) -> None:
        self._cert = Certificate.loadPEM(pem)

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS(hostname.decode(), trustRoot=self._cert)


@attrs.define
class Response:
    status: int
    content_type: str
    raw: bytes
    body: Any


class APIClient:
    """treq against one service; ``request`` checks the answer against the document."""

    def __init__(self, reactor: Any, base: str, cert_pem: bytes | None) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, contextFactory=TrustOne(cert_pem), pool=self.pool) \
            if cert_pem is not None else Agent(reactor, pool=self.pool)
        self.http = HTTPClient(agent)
        self.base = base

    async def request(self, method: str, path: str, *, token: str | None = None,
                      auth: tuple[str, str] | None = None, data: bytes | None = None,
                      content_type: str | None = None, check: bool = True,
                      headers: dict[str, str] | None = None) -> Response:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if auth is not None:
            h["Authorization"] = "Basic " + base64.b64encode(
                f"{auth[0]}:{auth[1]}".encode()).decode()
        if content_type is not None:
            h["Content-Type"] = content_type
        response = await self.http.request(method, self.base + path, headers=h, data=data)
        raw = await treq.content(response)
        ctype = (response.headers.getRawHeaders("content-type") or [""])[0]
        body: Any = raw
        if check:
            body = validate(method, path, response.code, ctype, raw)
        return Response(response.code, ctype, raw, body)

    async def login(self, who: tuple[str, str] = ADMIN) -> str:
        r = await self.request("POST", "/security/user/authenticate", auth=who)
        assert r.status == 200, r.body
        return str(r.body["data"]["token"])


class APIHarness:
    """One node's API service on 127.0.0.1 with users admin (administrator) and reader
    (readonly)."""

    def __init__(self, testcase: Any, reactor: Any, base: str, *, https: bool = True,
                 env: Any = None, **overrides: Any) -> None:
        self.reactor = reactor
        self.clock = Clock()
        cluster_config = env.config if env is not None else node_config(base)
        self.home = cluster_config.home
        store = UserStore(self.home)
        store.add(*ADMIN, role="administrator")
        store.add(*READER, role="readonly")
        config: APIConfig = attrs.evolve(load_api_config(self.home), host="127.0.0.1", port=0,
                                         https=https, **overrides)
        self.config = config
        self.node = FakeNode(cluster_config, agent_db=getattr(env, "db", None),
                             clock=getattr(env, "clock", None))
        self.dapi = FakeDAPI(self.node)
        self.node.dapi = self.dapi
        register_functions(self.dapi)
        self.service = APIService(config, reactor, self.node, clock=self.clock)
        self.testcase = testcase

    async def start(self) -> APIClient:
        self.service.startService()
        self.testcase.addCleanup(self.service.stopService)
        port = await self.service.listening
        number = port.getHost().port
        pem = None
        if self.config.https:
            with open(self.config.cert_path, "rb") as f:
                pem = f.read()
        client = APIClient(self.reactor, f"{'https' if pem else 'http'}://127.0.0.1:{number}",
                           pem)
        self.testcase.addCleanup(client.pool.closeCachedConnections)
        return client

    def api_log(self) -> str:
        path = os.path.join(self.home, "logs", "api.log")
        with open(path, encoding="utf-8") as f:
            return f.read()


def settle(reactor: Any) -> Deferred[None]:
    from twisted.internet.task import deferLater

    return deferLater(reactor, 0, lambda: None)
