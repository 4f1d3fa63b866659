"""APIService: the HTTPS listener, authentication, limits, logging and dispatch to endpoints."""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.ssl import Certificate, CertificateOptions, PrivateCertificate
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from wazuhcluster.api import endpoints as E
from wazuhcluster.api import problems
from wazuhcluster.api.config import APIConfig
from wazuhcluster.api.functions import CHECK_TOKEN, CHECK_USER, GET_PERMISSIONS
from wazuhcluster.api.limits import LoginGuard, RequestLimiter
from wazuhcluster.api.params import NAMES, Param, parse_query, path_value
from wazuhcluster.api.problems import Problem
from wazuhcluster.api.tls import ensure_certificate
from wazuhcluster.api.tokens import InvalidToken, TokenCodec, load_or_create_keypair
from wazuhcluster.dapi.results import json_default
from wazuhcluster.interfaces import IAPIAuth, IWebPage

log = Logger(namespace="wazuhcluster.api")
SPEC_PATH = os.path.join(os.path.dirname(__file__), "openapi.yaml")
LOGIN_PATH = "/security/user/authenticate"
_ROLE_NAMES = {1: "administrator", 2: "readonly"}


class _CappedBuffer:
    """Request body storage that stops keeping bytes beyond ``cap`` (and says so)."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._chunks: list[bytes] = []
        self._size = 0
        self._pos = 0
        self.overflow = False

    def write(self, data: bytes) -> None:
        if self.overflow or self._size + len(data) > self._cap:
            self.overflow = True
            self._chunks = []
            return
        self._chunks.append(data)
        self._size += len(data)

    def seek(self, pos: int, whence: int = 0) -> None:
        self._pos = pos

    def tell(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        data = b"".join(self._chunks)[self._pos:]
        self._pos = self._size
        return data

    def close(self) -> None:
        self._chunks = []


class APIRequest(Request):
    """A request whose body is refused past ``max_upload_size`` before it is stored."""

    max_body = 10485760

    def gotLength(self, length: int | None) -> None:
        self.content = _CappedBuffer(self.max_body)  # type: ignore[assignment]
        if length is not None and length > self.max_body:
            self.content.overflow = True  # type: ignore[attr-defined]


class APILogFile:
    """``logs/api.log``: one line per request (user, address, method, path, parameters,
    duration, status). Never a password, a token or a body."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._file: Any = None

    def open(self) -> None:
        os.makedirs(os.path.dirname(self._path), exist_ok=True)
        self._file = open(self._path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(self, level: str, text: str) -> None:
        if self._file is None:
            return
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime())
        self._file.write(f"{stamp} {level}: {text}\n")


@implementer(IAPIAuth)
class APIResource(Resource):
    """The whole API: one leaf resource dispatching on method and path (and to the pages
    mounted with ``mount``)."""

    isLeaf = True

    def __init__(self, config: APIConfig, clock: IReactorTime,
                 dapi: Callable[[], Any], tokens: Callable[[], TokenCodec | None],
                 api_log: APILogFile,
                 run: Callable[..., Deferred[Any]] | None = None) -> None:
        """:param run: runs a blocking callable off the reactor (the node's runner); JSON
            bodies are encoded there (500 agents are milliseconds of CPU). None: encode
            inline (tests without a runner)."""
        super().__init__()
        self._run = run
        self._config = config
        self._clock = clock
        self._dapi = dapi
        self._tokens = tokens
        self._log = api_log
        self.logins = LoginGuard(clock, config.max_login_attempts, config.block_time)
        self.limiter = RequestLimiter(clock, config.max_request_per_minute)
        self._token_cache: dict[tuple[str, int, tuple[int, ...]], tuple[float, str]] = {}
        self._verified: dict[str, dict[str, Any]] = {}
        with open(SPEC_PATH, "rb") as f:
            self._spec = f.read()
        self._pages: list[IWebPage] = []  # mounted pages (the status page)

    def mount(self, page: IWebPage) -> None:
        """Serve ``page`` at its prefix and below (e.g. the status page at ``/ui``)."""
        self._pages.append(page)

    def render(self, request: Request) -> Any:
        path = request.path.decode("utf-8", "replace")
        for page in self._pages:
            if path == page.prefix or path.startswith(page.prefix + "/"):
                if not self.limiter.allow():
                    request.setResponseCode(429)
                    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                    return b"Too many requests\n"
                d = page.serve(request, self)
                d.addErrback(lambda f: log.failure("[API] [Main] Page request failed", f))
                return NOT_DONE_YET
        d = ensureDeferred(self._handle(request))
        d.addErrback(lambda f: log.failure("[API] [Main] Request failed", f))
        return NOT_DONE_YET

    # -- the request pipeline --------------------------------------------------------------

    async def _handle(self, request: Request) -> None:
        start = self._clock.seconds()
        method = request.method.decode("ascii", "replace")
        split = urlsplit(request.uri.decode("utf-8", "replace"))
        path = split.path or "/"  # matched raw; path values are unquoted after matching
        if len(path) > 1:
            path = path.rstrip("/")
        query = parse_qs(split.query, keep_blank_values=True)
        address = getattr(request.getClientAddress(), "host", "unknown")
        user = "unknown_user"
        pretty = query.get("pretty", ["false"])[0].lower() == "true"
        try:
            if self._config.cors.get("enabled"):
                self._cors(request)
                if method == "OPTIONS":
                    self._finish(request, 200, b"", "text/plain")
                    return
            if not self.limiter.allow():
                raise problems.TOO_MANY_REQUESTS
            if self.logins.is_blocked(address):
                log.warn("[API] [Security] IP blocked due to exceeded number of logins attempts: "
                         "{address}",
                         address=address)
                raise problems.LOGIN_BLOCKED
            if request.content.overflow:  # type: ignore[union-attr]
                raise Problem(413, "Request Entity Too Large",
                              f"The body is larger than max_upload_size "
                              f"({self._config.max_upload_size} bytes)")
            if method == "GET" and path == "/api/spec":
                self._finish(request, 200, self._spec, "application/yaml")
                return
            if path == LOGIN_PATH and method == "POST":
                user, reply = await self._login(request, query, address)
            else:
                found = E.find(method, path)
                if found is None:
                    raise Problem(404, "Not Found", "404: Not Found")
                ep, raw_path = found
                user, role = await self._authenticate(request)
                if ep.write and role != "administrator":
                    raise problems.READ_ONLY
                reply = await self._call(ep, raw_path, query, request, user, role)
            await self._reply(request, reply, pretty)
            status = reply.status
        except Problem as p:
            status = p.status
            self._problem(request, p.status, p.body(), pretty)
        except Exception as exc:  # noqa: BLE001  (every failure becomes a problem body)
            if problems.is_wazuh_exception(exc):
                status, body = problems.wazuh_problem(exc)
            else:
                log.failure("[API] [Main] Unexpected error answering {method} {path}", Failure(),
                            method=method, path=path)
                status, body = 500, {"title": "Wazuh Internal Error",
                                     "detail": "Unexpected error: see the node's logs",
                                     "error": 1000}
            self._problem(request, status, body, pretty)
        shown = {k: v[0] if len(v) == 1 else v for k, v in query.items()}
        took = self._clock.seconds() - start
        self._log.write("INFO", f'{user} {address} "{method} {path}" with parameters '
                                f"{json.dumps(shown)} done in {took:.3f}s: {status}")

    async def _login(self, request: Request, query: dict[str, list[str]],
                     address: str) -> tuple[str, E.Reply]:
        args = parse_query((Param("raw", "bool", False),), query)
        credentials = _basic_credentials(request)
        if credentials is None:
            self.logins.failed(address)
            raise problems.INVALID_CREDENTIALS
        name, password = credentials
        token = await self._issue_token(name, password, address)
        if args["raw"]:
            return name, E.Reply(token, content_type="text/plain")
        return name, E.Reply({"data": {"token": token}, "error": 0})

    # -- IAPIAuth: what mounted pages use -------------------------------------------------
    def login(self, name: str, password: str, address: str) -> Deferred[str]:
        """A new token for an API user (failed-login blocking as for the API's login)."""
        return ensureDeferred(self._page_login(name, password, address))

    async def _page_login(self, name: str, password: str, address: str) -> str:
        if self.logins.is_blocked(address):
            raise problems.LOGIN_BLOCKED
        return await self._issue_token(name, password, address)

    async def _issue_token(self, name: str, password: str, address: str) -> str:
        """A token for ``name`` once the master accepted the password (a failed login is
        counted for ``address``); the API's login and the pages' login alike."""
        checked = await self._dapi_call(CHECK_USER, {"user": name, "password": password},
                                        "local_master")
        if not checked.get("result"):
            self.logins.failed(address)
            raise problems.INVALID_CREDENTIALS
        permissions = await self._dapi_call(GET_PERMISSIONS, {"user_id": name}, "local_master")
        if not all(k in permissions for k in ("roles", "generation")):
            # Seen with a real Wazuh 4.7.5 master: its get_permissions answers {"roles": [...]}
            # from its own RBAC database, with no token generation to put in our tokens.
            raise problems.Problem(500, "Wazuh Internal Error", (
                "the master's get_permissions answer has no token generation: logins at a "
                "worker need a wazuhcluster master (a Wazuh master keeps its users in its "
                "own RBAC database)"), code=1000)
        return self._codec().issue(name, list(permissions["roles"]),
                                   int(permissions["generation"]), self._clock.seconds(),
                                   self._config.auth_token_exp_timeout)

    def authenticate_token(self, token: str) -> Deferred[tuple[str, str]]:
        """``(user, role)`` of a valid bearer token; fails with a Problem."""
        return ensureDeferred(self._check_bearer(token))

    def log_request(self, user: str, address: str, method: str, path: str, status: int,
                    took: float) -> None:
        """One api.log line for a page request (no query string: it may hold a token)."""
        self._log.write("INFO", f'{user} {address} "{method} {path}" done in {took:.3f}s: '
                                f"{status}")

    async def _authenticate(self, request: Request) -> tuple[str, str]:
        header = (request.getHeader("authorization") or "").strip()
        if not header:
            raise problems.NO_TOKEN
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise problems.NO_TOKEN
        return await self._check_bearer(token.strip())

    async def _check_bearer(self, token: str) -> tuple[str, str]:
        claims = self._verify(token)
        roles = claims.get("rbac_roles")
        if not isinstance(roles, list) or not all(isinstance(r, int) for r in roles):
            raise problems.INVALID_TOKEN
        key = (claims["sub"], claims["gen"], tuple(roles))
        now = self._clock.seconds()
        cached = self._token_cache.get(key)
        if cached is not None and cached[0] > now:
            return claims["sub"], cached[1]
        answer = await self._dapi_call(CHECK_TOKEN, {"username": claims["sub"], "roles": roles,
                                                     "generation": claims["gen"]},
                                       "local_master")
        if not answer.get("valid"):
            self._token_cache.pop(key, None)
            raise problems.INVALID_TOKEN
        role = str(answer.get("role") or _ROLE_NAMES.get(roles[0] if roles else 0, "readonly"))
        if self._config.cache_enabled and self._config.cache_time > 0:
            if len(self._token_cache) > 10000:
                self._token_cache.clear()
            self._token_cache[key] = (now + self._config.cache_time, role)
        return claims["sub"], role

    def _verify(self, token: str) -> dict[str, Any]:
        """The token's claims: signature checked once, expiry on every request (an ES512
        verification costs about a millisecond)."""
        now = self._clock.seconds()
        known = self._verified.get(token)
        if known is not None and now < known["exp"]:
            return known
        try:
            claims = self._codec().decode(token, now)
        except InvalidToken:
            raise problems.INVALID_TOKEN from None
        if len(self._verified) >= 10000:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    async def _call(self, ep: E.Endpoint, raw_path: dict[str, str],
                    query: dict[str, list[str]], request: Request, user: str,
                    role: str) -> E.Reply:
        args = parse_query(ep.params, query)
        for name, raw in raw_path.items():
            args[name] = path_value(name, unquote(raw), ep.path_params.get(name, NAMES))
        wait = bool(args.get("wait_for_complete"))

        async def dapi(function: str, f_kwargs: dict[str, Any], request_type: str, *,
                       broadcasting: bool = False) -> dict[str, Any]:
            return await self._dapi_call(function, f_kwargs, request_type, user=user,
                                         role=role, wait=wait, broadcasting=broadcasting)

        request.content.seek(0, 0)  # type: ignore[union-attr]
        body = request.content.read()  # type: ignore[union-attr]
        call = E.Call(args, body, request.getHeader("content-type") or "", dapi, user,
                      self._config.max_upload_size)
        reply = await ep.handler(call)
        if ep.path == LOGIN_PATH and ep.method == "DELETE":
            self._token_cache = {k: v for k, v in self._token_cache.items() if k[0] != user}
        return reply

    async def _dapi_call(self, function: str, f_kwargs: dict[str, Any], request_type: str, *,
                         user: str = "", role: str = "", wait: bool = False,
                         broadcasting: bool = False) -> dict[str, Any]:
        dapi = self._dapi()
        if dapi is None:
            raise Problem(500, "Wazuh Internal Error",
                          "The distributed API of this node is not available", code=1000)
        result = await dapi.call(function, f_kwargs, request_type, wait_for_complete=wait,
                                 current_user=user,
                                 rbac_permissions={"rbac_mode": "white", "role": role},
                                 broadcasting=broadcasting,
                                 api_timeout=self._config.request_timeout)
        if isinstance(result, str):  # raw file contents come back as a bare string
            return {"message": result}
        rendered = result.render() if hasattr(result, "render") else result
        if not isinstance(rendered, dict):
            raise Problem(500, "Wazuh Internal Error",
                          f"{function} answered with an unexpected value", code=1000)
        return rendered

    def _codec(self) -> TokenCodec:
        codec = self._tokens()
        if codec is None:
            raise Problem(500, "Wazuh Internal Error", "The API keys are not loaded yet",
                          code=1000)
        return codec

    # -- output ----------------------------------------------------------------------------

    def _headers(self, request: Request) -> None:
        request.setHeader(b"server", b"Wazuh")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", b"none")
        request.setHeader(b"cache-control", b"no-store")

    def _cors(self, request: Request) -> None:
        cors = self._config.cors
        request.setHeader(b"access-control-allow-origin", str(cors["source_route"]).encode())
        request.setHeader(b"access-control-expose-headers", str(cors["expose_headers"]).encode())
        request.setHeader(b"access-control-allow-headers", str(cors["allow_headers"]).encode())
        request.setHeader(b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS")
        if cors["allow_credentials"]:
            request.setHeader(b"access-control-allow-credentials", b"true")

    def _finish(self, request: Request, status: int, payload: bytes, content_type: str) -> None:
        if request.finished or getattr(request, "_disconnected", False):
            return
        self._headers(request)
        request.setResponseCode(status)
        request.setHeader(b"content-type", content_type.encode())
        request.setHeader(b"content-length", str(len(payload)).encode())
        request.write(payload)
        request.finish()

    async def _reply(self, request: Request, reply: E.Reply, pretty: bool) -> None:
        if reply.content_type == "application/json":
            if self._run is not None:
                payload: bytes = await self._run(_dumps, reply.body, pretty)
            else:
                payload = _dumps(reply.body, pretty)
            self._finish(request, reply.status, payload, "application/json; charset=utf-8")
        else:
            self._finish(request, reply.status, str(reply.body).encode("utf-8"),
                         f"{reply.content_type}; charset=utf-8")

    def _problem(self, request: Request, status: int, body: dict[str, Any],
                 pretty: bool) -> None:
        self._finish(request, status, _dumps(body, pretty), "application/problem+json")


#: The C encoder, built once, without circular-reference bookkeeping (API bodies are trees).
_ENCODER = json.JSONEncoder(default=json_default, check_circular=False)


def _dumps(body: Any, pretty: bool) -> bytes:
    if pretty:
        return json.dumps(body, indent=3, default=json_default).encode("utf-8")
    try:
        return _ENCODER.encode(body).encode("utf-8")
    except RecursionError:
        raise ValueError("Circular reference detected") from None


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = (request.getHeader("authorization") or "").strip()
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or len(value) > 1024:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    if not sep or not name:
        return None
    return name, password


class APIService(Service):
    """The REST API of one node (service name ``api``): makes its TLS and token keys at first
    start (off the reactor), then listens on ``host:port``."""

    name = "api"

    def __init__(self, config: APIConfig, reactor: Any, node: Any,
                 clock: IReactorTime | None = None) -> None:
        self.config = config
        self._reactor = reactor
        self._node = node
        self._codec: TokenCodec | None = None
        self._log = APILogFile(config.log_path)
        self.resource = APIResource(config, clock or reactor,
                                    lambda: getattr(node, "dapi", None),
                                    lambda: self._codec, self._log,
                                    run=getattr(node, "run", None))
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] = Deferred()

    def startService(self) -> None:
        super().startService()
        self._log.open()
        d = ensureDeferred(self._start())
        d.addErrback(self._failed)

    def _failed(self, failure: Failure) -> None:
        log.failure("[API] [Main] Could not start on {host}:{port}", failure,
                    host=self.config.host, port=self.config.port)
        if not self.listening.called:
            self.listening.errback(failure)

    async def _start(self) -> None:
        private, public = await self._node.run(load_or_create_keypair, self.config.security_dir)
        self._codec = TokenCodec(private, public)
        site = Site(self.resource, timeout=60)  # idle connections closed after a minute
        site.displayTracebacks = False
        site.noisy = False  # no "Site starting on" lines: our own line says where we listen
        site.log = lambda request: None  # type: ignore[method-assign]  # api.log has them
        max_body = self.config.max_upload_size

        class _Request(APIRequest):
            pass

        _Request.max_body = max_body
        site.requestFactory = _Request  # type: ignore[assignment]
        if self.config.https:
            created = await self._node.run(ensure_certificate, self.config)
            if created:
                log.info("[API] [Main] Created a self-signed certificate {path}",
                         path=self.config.cert_path)
            options = await self._node.run(self._tls_options)
            endpoint: Any = SSL4ServerEndpoint(self._reactor, self.config.port, options,
                                               interface=self.config.host)
        else:
            endpoint = TCP4ServerEndpoint(self._reactor, self.config.port,
                                          interface=self.config.host)
        if not self.running:
            return
        self.port = await endpoint.listen(site)
        log.info("[API] [Main] Listening on {scheme}://{host}:{port}",
                 scheme="https" if self.config.https else "http", host=self.config.host,
                 port=getattr(self.port.getHost(), "port", self.config.port))
        self.listening.callback(self.port)

    def _tls_options(self) -> Any:
        with open(self.config.key_path, "rb") as f, open(self.config.cert_path, "rb") as g:
            pem = f.read() + b"\n" + g.read()
        extra = []
        if self.config.use_ca:
            with open(self.config.ca_path, "rb") as f:
                extra = [Certificate.loadPEM(f.read()).original]
        cert = PrivateCertificate.loadPEM(pem)
        return CertificateOptions(privateKey=cert.privateKey.original,
                                  certificate=cert.original, extraCertChain=extra)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self._log.close()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()  # type: ignore[no-any-return]
        return None
