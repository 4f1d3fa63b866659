"""The API's parts on their own: api.yaml, users, tokens, limits, parameters, problems, the
shipped OpenAPI document and the users CLI."""

from __future__ import annotations

import io
import os
import sys
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.support import node_config, short_tempdir
from wazuhcluster.api import params as P
from wazuhcluster.api.config import load_api_config
from wazuhcluster.api.endpoints import ENDPOINTS, find
from wazuhcluster.api.limits import LoginGuard, RequestLimiter
from wazuhcluster.api.problems import Problem, wazuh_problem
from wazuhcluster.api.service import SPEC_PATH
from wazuhcluster.api.specgen import render
from wazuhcluster.api.tls import ensure_certificate
from wazuhcluster.api.tokens import InvalidToken, TokenCodec, load_or_create_keypair
from wazuhcluster.api.users import UserError, UserStore, random_password
from wazuhcluster.cli import users as users_cli
from wazuhcluster.dapi.results import (
    WazuhClusterError,
    WazuhError,
    WazuhPermissionError,
    WazuhResourceNotFound,
)
from wazuhcluster.errors import ConfigError


def write_api_yaml(home: str, text: str) -> None:
    directory = os.path.join(home, "api", "configuration")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "api.yaml"), "w", encoding="utf-8") as f:
        f.write(text)


class ConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.home = short_tempdir(self)

    def test_defaults_are_wazuhs(self) -> None:
        """No api.yaml: 0.0.0.0:55000, HTTPS on, 50 attempts, 300 s block, 300/min, 900 s."""
        c = load_api_config(self.home)
        self.assertEqual((c.host, c.port, c.https, c.use_ca), ("0.0.0.0", 55000, True, False))
        self.assertEqual((c.max_login_attempts, c.block_time, c.max_request_per_minute),
                         (50, 300, 300))
        self.assertEqual(c.auth_token_exp_timeout, 900)
        self.assertEqual(c.cert_path, os.path.join(self.home, "api", "configuration", "ssl",
                                                   "server.crt"))
        self.assertFalse(c.cors["enabled"])

    def test_values_are_read(self) -> None:
        write_api_yaml(self.home, "host: 127.0.0.1\nport: 55010\nhttps:\n  enabled: false\n"
                       "access:\n  max_login_attempts: 3\n  block_time: 10\n"
                       "  max_request_per_minute: 0\nauth_token_exp_timeout: 60\n"
                       "cors:\n  enabled: true\n  source_route: 'https://x'\n"
                       "drop_privileges: true\n")
        c = load_api_config(self.home)
        self.assertEqual((c.host, c.port, c.https, c.max_login_attempts, c.block_time,
                          c.max_request_per_minute, c.auth_token_exp_timeout),
                         ("127.0.0.1", 55010, False, 3, 10, 0, 60))
        self.assertEqual(c.cors["source_route"], "https://x")

    def test_errors_are_one_line_naming_the_key(self) -> None:
        for text, words in (("port: [\n", "not valid YAML at line"),
                            ("porte: 1\n", "porte is not a known setting"),
                            ("https:\n  enabled: 'yes'\n", "https.enabled is 'yes': set it to "
                                                            "true or false"),
                            ("access:\n  block_time: -1\n", "access.block_time is -1"),
                            ("port: 70000\n", "port is 70000"),
                            ("- a\n", "must be a mapping"),
                            ("https: 3\n", "https must be a mapping")):
            write_api_yaml(self.home, text)
            with self.assertRaises(ConfigError) as e:
                load_api_config(self.home)
            self.assertIn(words, str(e.exception))
            self.assertNotIn("\n", str(e.exception))
            self.assertIn("api.yaml", str(e.exception))

    def test_bad_api_yaml_stops_twistd_with_one_line(self) -> None:
        """makeService ends with one 'configuration error' line, as for ossec.conf."""
        from wazuhcluster.tap import Options, makeService

        config = node_config(short_tempdir(self))
        write_api_yaml(config.home, "access:\n  max_login_attempts: lots\n")
        options = Options()
        options.parseOptions(["--home", config.home])
        with self.assertRaises(SystemExit) as e:
            makeService(options)
        self.assertRegex(str(e.exception), r"^wazuhcluster: configuration error: .*api\.yaml: "
                                           r"access\.max_login_attempts is 'lots'")

    def test_tls_file_errors(self) -> None:
        from wazuhcluster.api.config import check_tls_files

        config = load_api_config(self.home)
        check_tls_files(config)  # neither exists: fine, a pair will be made
        ensure_certificate(config)
        os.unlink(config.cert_path)
        with self.assertRaises(ConfigError) as e:
            check_tls_files(config)
        self.assertIn("https.cert", str(e.exception))
        os.unlink(config.key_path)
        write_api_yaml(self.home, "https:\n  use_ca: true\n")
        ensure_certificate(load_api_config(self.home))
        with self.assertRaises(ConfigError) as e:
            check_tls_files(load_api_config(self.home))
        self.assertIn("https.ca", str(e.exception))

    def test_a_start_killed_while_making_the_pair_is_completed_by_the_next(self) -> None:
        """A node killed between the two renames of its new self-signed pair (the key in
        place, the certificate still pending, or the other way round) starts next time:
        the config check accepts it and the pending half is put in place, unchanged. A
        kill before the renames leaves nothing in place: a new pair is made."""
        from wazuhcluster.api import tls
        from wazuhcluster.api.config import check_tls_files

        config = load_api_config(self.home)
        real = os.replace
        for killed_at in (1, 2):
            for path in (config.key_path, config.cert_path):
                for p in (path, path + tls.PENDING):
                    if os.path.exists(p):
                        os.unlink(p)
            calls: list[str] = []

            def replace(src: str, dst: str, *, _at: int = killed_at,
                        _calls: list[str] = calls) -> None:
                if src.endswith(tls.PENDING):  # the pair's renames, not write_atomic's
                    _calls.append(dst)
                    if len(_calls) == _at:
                        raise KeyboardInterrupt("killed")
                real(src, dst)
            self.patch(tls.os, "replace", replace)
            self.assertRaises(KeyboardInterrupt, ensure_certificate, config)
            self.patch(tls.os, "replace", real)
            pending = {p for p in (config.key_path, config.cert_path)
                       if os.path.exists(p + tls.PENDING)}
            self.assertEqual(len(pending), 3 - killed_at)
            with open(config.key_path + tls.PENDING, "rb") if killed_at == 1 else open(
                    config.key_path, "rb") as f:
                key = f.read()
            check_tls_files(config)  # no ConfigError: the start completes the pair
            made = ensure_certificate(config)
            self.assertEqual(made, killed_at == 1)  # nothing in place: a new pair
            with open(config.key_path, "rb") as f:
                if killed_at == 2:
                    self.assertEqual(f.read(), key)
            self.assertFalse(any(os.path.exists(p + tls.PENDING)
                                 for p in (config.key_path, config.cert_path)
                                 if killed_at == 2))
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization
            with open(config.cert_path, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            with open(config.key_path, "rb") as f:
                private = serialization.load_pem_private_key(f.read(), None)
            self.assertEqual(cert.public_key().public_numbers(),  # type: ignore[union-attr]
                             private.public_key().public_numbers())  # type: ignore[union-attr]

    def test_certificate_made_once(self) -> None:
        config = load_api_config(self.home)
        self.assertTrue(ensure_certificate(config))
        with open(config.cert_path, "rb") as f:
            first = f.read()
        self.assertFalse(ensure_certificate(config))
        with open(config.cert_path, "rb") as f:
            self.assertEqual(f.read(), first)
        os.unlink(config.key_path)
        with self.assertRaises(FileNotFoundError):
            ensure_certificate(config)


class UserTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = UserStore(short_tempdir(self))

    def test_no_default_users(self) -> None:
        self.assertEqual(self.store.list(), [])
        self.assertFalse(self.store.check("wazuh", "wazuh"))

    def test_add_check_passwd_delete(self) -> None:
        self.assertEqual(self.store.add("alice", "Al1ce-pass!", "administrator"), 1)
        self.assertEqual(self.store.add("bob", "B0b-pass!!", "readonly"), 2)
        self.assertTrue(self.store.check("alice", "Al1ce-pass!"))
        self.assertFalse(self.store.check("alice", "Al1ce-pass?"))
        self.store.passwd("alice", "N3w-pass!!")
        self.assertFalse(self.store.check("alice", "Al1ce-pass!"))
        self.assertTrue(self.store.check("alice", "N3w-pass!!"))
        self.assertEqual(self.store.get("alice")["generation"], 1)  # type: ignore[index]
        self.store.delete("bob")
        self.assertEqual([u["username"] for u in self.store.list()], ["alice"])

    def test_stored_hash_is_scrypt_and_salted(self) -> None:
        self.store.add("alice", "Al1ce-pass!", "administrator")
        self.store.add("carol", "Al1ce-pass!", "administrator")
        with open(self.store.path, encoding="utf-8") as f:
            text = f.read()
        self.assertNotIn("Al1ce-pass!", text)
        import json

        users = json.loads(text)["users"]
        self.assertEqual(users["alice"]["kdf"]["name"], "scrypt")
        self.assertGreaterEqual(users["alice"]["kdf"]["n"], 2**14)
        self.assertNotEqual(users["alice"]["hash"], users["carol"]["hash"])
        self.assertEqual(os.stat(self.store.path).st_mode & 0o077, 0)

    def test_refusals(self) -> None:
        for args in (("a b", "Al1ce-pass!", "administrator"), ("x", "short", "readonly"),
                     ("x", "alllowercase1!", "readonly"), ("x", "Al1ce-pass!", "root")):
            with self.assertRaises(UserError):
                self.store.add(*args)
        self.store.add("x", "Al1ce-pass!", "readonly")
        with self.assertRaises(UserError):
            self.store.add("x", "Al1ce-pass!", "readonly")
        for call in (lambda: self.store.passwd("y", "Al1ce-pass!"),
                     lambda: self.store.delete("y"), lambda: self.store.revoke("y")):
            with self.assertRaises(UserError):
                call()

    def test_random_password_is_strong(self) -> None:
        password = random_password()
        self.store.add("demo", password, "administrator")
        self.assertTrue(self.store.check("demo", password))


class CLITests(SynchronousTestCase):
    def run_cli(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdin", io.StringIO(stdin))
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        code = 0
        try:
            users_cli.main(list(argv))
        except SystemExit as e:
            code = int(e.code or 0)
        return code, out.getvalue(), err.getvalue()

    def test_add_list_passwd_delete(self) -> None:
        home = node_config(short_tempdir(self)).home
        code, out, _ = self.run_cli("--home", home, "add", "alice", "--role", "administrator",
                                    stdin="Al1ce-pass!\n")
        self.assertEqual(code, 0)
        self.assertIn("User alice added", out)
        self.assertTrue(UserStore(home).check("alice", "Al1ce-pass!"))
        code, out, _ = self.run_cli("--home", home, "list")
        self.assertIn("alice", out)
        self.assertIn("administrator", out)
        self.assertEqual(self.run_cli("--home", home, "passwd", "alice",
                                      stdin="Oth3r-pass!\n")[0], 0)
        self.assertTrue(UserStore(home).check("alice", "Oth3r-pass!"))
        self.assertEqual(self.run_cli("--home", home, "delete", "alice")[0], 0)
        code, _, err = self.run_cli("--home", home, "delete", "alice")
        self.assertEqual(code, 1)
        self.assertIn("does not exist", err)
        code, _, err = self.run_cli("--home", home, "add", "bob", "--role", "readonly",
                                    stdin="weak\n")
        self.assertEqual(code, 1)
        self.assertIn("password must be", err)

    def test_worker_home_refused(self) -> None:
        home = node_config(short_tempdir(self), node_name="worker1", role="worker").home
        code, _, err = self.run_cli("--home", home, "add", "alice", "--role", "readonly",
                                    stdin="Al1ce-pass!\n")
        self.assertEqual(code, 1)
        self.assertIn("users live on the master", err)


class TokenTests(SynchronousTestCase):
    def setUp(self) -> None:
        directory = short_tempdir(self)
        self.codec = TokenCodec(*load_or_create_keypair(directory))
        self.other = TokenCodec(*load_or_create_keypair(os.path.join(directory, "other")))

    def test_round_trip_and_claims(self) -> None:
        token = self.codec.issue("alice", [1], 3, now=1000.5, lifetime=900)
        claims = self.codec.decode(token, now=1001)
        self.assertEqual((claims["sub"], claims["rbac_roles"], claims["gen"], claims["exp"],
                          claims["iss"], claims["aud"]),
                         ("alice", [1], 3, 1900, "wazuh", "Wazuh API REST"))
        import jwt

        self.assertEqual(jwt.get_unverified_header(token)["alg"], "ES512")

    def test_expired_foreign_and_tampered_tokens_refused(self) -> None:
        token = self.codec.issue("alice", [1], 0, now=1000, lifetime=900)
        with self.assertRaises(InvalidToken):
            self.codec.decode(token, now=1900)
        with self.assertRaises(InvalidToken):
            self.other.decode(token, now=1001)
        head, body, sig = token.split(".")
        with self.assertRaises(InvalidToken):
            self.codec.decode(f"{head}.{body}x.{sig}", now=1001)
        with self.assertRaises(InvalidToken):
            self.codec.decode("garbage", now=1001)


class LimitTests(SynchronousTestCase):
    def test_login_guard(self) -> None:
        clock = Clock()
        guard = LoginGuard(clock, max_attempts=2, block_time=100)
        guard.failed("10.0.0.1")
        self.assertFalse(guard.is_blocked("10.0.0.1"))
        clock.advance(10)
        guard.failed("10.0.0.1")
        self.assertTrue(guard.is_blocked("10.0.0.1"))
        self.assertFalse(guard.is_blocked("10.0.0.2"))
        clock.advance(89)
        self.assertTrue(guard.is_blocked("10.0.0.1"))
        clock.advance(1)  # block_time after the first failure
        self.assertFalse(guard.is_blocked("10.0.0.1"))

    def test_request_limiter(self) -> None:
        clock = Clock()
        limiter = RequestLimiter(clock, 3)
        self.assertEqual([limiter.allow() for _ in range(4)], [True, True, True, False])
        clock.advance(61)
        self.assertTrue(limiter.allow())
        unlimited = RequestLimiter(clock, 0)
        self.assertTrue(all(unlimited.allow() for _ in range(1000)))


class ParamTests(SynchronousTestCase):
    def test_sort_and_search(self) -> None:
        self.assertEqual(P.parse_sort("-name,id"), {"fields": ["name", "id"], "order": "desc"})
        self.assertEqual(P.parse_sort("+name"), {"fields": ["name"], "order": "asc"})
        self.assertEqual(P.parse_sort(" name"), {"fields": ["name"], "order": "asc"})
        self.assertEqual(P.parse_search("-web"), {"negation": True, "value": "web"})

    def test_query_grammar(self) -> None:
        for ok in ("status=active", "name~web;os.platform!=windows", "id<010,id>100",
                   "(status=active,status=pending);node_name=worker1", "group=null"):
            self.assertTrue(P.QUERY.match(ok), ok)
        for bad in ("status", "=active", "status==", ";status=active", "a=1|b=2"):
            self.assertFalse(P.QUERY.match(bad), bad)

    def test_parse_query(self) -> None:
        params = (P.OFFSET, P.LIMIT, P.SELECT_P, P.DISTINCT)
        self.assertEqual(P.parse_query(params, {"select": ["id,name"], "limit": ["5"]}),
                         {"offset": 0, "limit": 5, "select": ["id", "name"], "distinct": False})
        for query in ({"limit": ["0"]}, {"limit": ["x"]}, {"other": ["1"]},
                      {"limit": ["1", "2"]}, {"distinct": ["yes"]}, {"select": ["a;b"]}):
            with self.assertRaises(Problem):
                P.parse_query(params, query)

    def test_without_nones(self) -> None:
        self.assertEqual(P.without_nones({"a": None, "b": {"c": None, "d": 1}, "e": 0}),
                         {"b": {"d": 1}, "e": 0})


class ProblemTests(SynchronousTestCase):
    def test_status_per_class(self) -> None:
        for exc, status, title in ((WazuhError(1413), 400, "Bad Request"),
                                   (WazuhPermissionError(4000), 403, "Permission Denied"),
                                   (WazuhResourceNotFound(1701), 404, "Resource Not Found"),
                                   (WazuhClusterError(3022), 500, "Wazuh Cluster Error")):
            got, body = wazuh_problem(exc)
            self.assertEqual((got, body["title"], body["error"]), (status, title, exc.code))
            self.assertEqual(body["detail"], exc.message)


class DocumentTests(SynchronousTestCase):
    def test_shipped_document_is_generated_from_the_table(self) -> None:
        """openapi.yaml describes exactly the endpoints and parameters the API serves
        (regenerate: python -m wazuhcluster.api.specgen > wazuhcluster/api/openapi.yaml)."""
        with open(SPEC_PATH, encoding="utf-8") as f:
            self.assertEqual(f.read(), render())

    def test_document_is_valid_openapi_shape(self) -> None:
        import yaml

        with open(SPEC_PATH, encoding="utf-8") as f:
            doc: dict[str, Any] = yaml.safe_load(f)
        self.assertEqual(doc["openapi"], "3.0.0")
        served = {(ep.method, ep.path) for ep in ENDPOINTS} | {
            ("POST", "/security/user/authenticate"), ("GET", "/api/spec"),
            ("GET", "/ui"), ("GET", "/ui/data"), ("POST", "/ui/login"), ("POST", "/ui/logout")}
        documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        self.assertEqual(served, documented)
        names = {p["name"] for p in doc["paths"]["/agents"]["get"]["parameters"]}
        self.assertLessEqual({"agents_list", "status", "node_name", "group", "name", "ip",
                              "os.platform", "version", "older_than", "select", "sort",
                              "search", "q", "offset", "limit", "pretty",
                              "wait_for_complete"}, names)

    def test_routing(self) -> None:
        ep, values = find("GET", "/cluster/local/info")  # type: ignore[misc]
        self.assertEqual(ep.function, "wazuh.cluster.get_node_wrapper")
        ep, values = find("GET", "/cluster/worker1/info")  # type: ignore[misc]
        self.assertEqual(values, {"node_id": "worker1"})
        self.assertIsNone(find("GET", "/nope"))
        with self.assertRaises(Problem) as e:
            find("PATCH", "/agents")
        self.assertEqual(e.exception.status, 405)




class LocalOnlyDAPITests(SynchronousTestCase):
    """The stand-in used when a node has no Distributed API."""

    def test_runs_here_only(self) -> None:
        from twisted.internet.defer import Deferred
        from zope.interface.verify import verifyObject

        from wazuhcluster.api.localdapi import LocalOnlyDAPI
        from wazuhcluster.dapi.results import WazuhResult
        from wazuhcluster.interfaces import IDistributedAPI

        class Node:
            def __init__(self, role: str) -> None:
                self.config = node_config(short_tempdir(self_), role=role,
                                          node_name="master-node" if role == "master"
                                          else "worker1")
                self.agent_db = None

            def run(self, f: Any, *a: Any) -> Any:
                return f(*a)

        self_ = self

        async def hello(ctx: Any, name: str) -> WazuhResult:
            return WazuhResult({"data": f"hello {name} from {ctx.config.node_name}"})

        def outcome(d: Deferred[Any]) -> Any:
            box: list[Any] = []
            d.addBoth(box.append)
            return box[0]

        master, worker = LocalOnlyDAPI(Node("master")), LocalOnlyDAPI(Node("worker"))
        self.assertTrue(verifyObject(IDistributedAPI, master))
        for dapi in (master, worker):
            dapi.register("x.hello", hello)
        self.assertEqual(outcome(master.call("x.hello", {"name": "a"}, "local_master"))["data"],
                         "hello a from master-node")
        self.assertEqual(outcome(worker.call("x.hello", {"name": "a"}, "local_any"))["data"],
                         "hello a from worker1")
        for dapi, request_type in ((worker, "local_master"), (master, "distributed_master")):
            failure = outcome(dapi.call("x.hello", {"name": "a"}, request_type))
            self.assertEqual(failure.value.code, 3000)
        self.assertEqual(outcome(master.call("x.nope", {}, "local_any")).value.code, 1000)
