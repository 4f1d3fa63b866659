"""A stand-in wazuh-db for the tests of the wazuh-db agent backend (drop-in mode).

``StandInWazuhDb`` answers, over the 4-byte little-endian framing of ``queue/db/wdb``, the
``global`` commands wazuhcluster sends, the way wazuh-db 4.7.5 answers them: ``ok``/``due``/
``err`` answers, ``sync-agent-info-get`` marking rows synced as it reads them and paging by
repetition, ``set-agent-groups`` refusing groups that do not exist, ``global sql`` rows as JSON
objects with NULL columns left out and cut at wazuh-db's 64 KiB output buffer. Its data
lives in its own SQLite file with wazuh-db's global.db schema
(``wazuhcluster.agents.db.AgentDatabase``, whose schema is that of a 4.7.5 global.db).

``loopback_database`` connects a WazuhDbAgentDatabase to a stand-in in memory (answers are
delivered synchronously, so Clock-driven tests stay synchronous); ``StandInFactory`` serves a
real Unix socket for real-process tests.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from wazuhcluster.agents.db import GROUPS_SET_ERROR, AgentDatabase
from wazuhcluster.agents.schema import WDB_MAX_RESPONSE_SIZE
from wazuhcluster.agents.wazuhdb import WazuhDbAgentDatabase, WdbProtocol
from wazuhcluster.protocol.lenprefix import LengthPrefixDecoder, encode

#: wazuh-db's output buffer.
OS_MAXSTR = 65536


class StandInBackend:
    """The command interpreter (no I/O): one text in, one answer out.

    :param db: the stand-in's own global.db.
    :param clock: gives wazuh-db's "now" (registration delta of sync-agent-groups-get).
    """

    def __init__(self, db: AgentDatabase, clock: Any) -> None:
        self.db = db
        self.clock = clock
        self.commands: list[str] = []  # every command received, as text

    def answer(self, text: str) -> str:
        self.commands.append(text)
        area, _, rest = text.partition(" ")
        if area != "global":
            return f"err Invalid DB query syntax, near '{area}'"
        command, _, args = rest.partition(" ")
        handler = getattr(self, "_" + command.replace("-", "_"), None)
        if handler is None:
            return f"err Invalid DB query syntax, near '{command}'"
        try:
            result: str = handler(args)
        except (ValueError, KeyError, TypeError) as e:
            return f"err Invalid JSON syntax, near '{args[:32]}': {e}"
        except Exception as e:  # noqa: BLE001 -- like wazuh-db: the query fails, not the daemon
            return f"err Cannot execute Global database query; {e}"
        return result

    # -- the cluster's commands --------------------------------------------------------------
    def _sync_agent_info_get(self, args: str) -> str:
        # wazuh-db reads an optional ``last_id N`` and ignores any other argument text
        # (wazuh-clusterd 4.7.5 sends ``sync-agent-info-get {}``).
        batch = self.db.get_agent_info_sync(max_chunk_size=WDB_MAX_RESPONSE_SIZE)
        if not batch.chunks:
            return "ok []"
        chunk = batch.chunks[0]
        ids = [int(a["id"]) for a in json.loads(chunk)]
        self.db._conn.executemany("UPDATE agent SET sync_status = 'synced' WHERE id = ?",
                                  [(i,) for i in ids])  # marked as read (wazuh-db's way)
        return f"{'due' if len(batch.chunks) > 1 else 'ok'} {chunk}"

    def _sync_agent_info_set(self, args: str) -> str:
        result = self.db.set_agent_info([args])
        if result.error_messages:
            return "err " + result.error_messages[0]
        return "ok"

    def _sync_agent_groups_get(self, args: str) -> str:
        options = json.loads(args) if args.strip() else {}
        page = self.db.sync_agent_groups_get(
            options.get("condition"), int(self.clock.seconds()), int(options.get("last_id", 0)),
            bool(options.get("set_synced", False)), bool(options.get("get_global_hash", False)),
            int(options.get("agent_registration_delta", 0)))
        return f"{page.status} {page.payload}"

    def _set_agent_groups(self, args: str) -> str:
        options = json.loads(args)
        existing = set(self.db.list_groups())
        data = options["data"]
        if any(g not in existing for item in data for g in item["groups"]):
            return "err " + GROUPS_SET_ERROR  # wazuh-db does not create groups here
        result = self.db.set_agent_groups([(int(d["id"]), d["groups"]) for d in data],
                                          options.get("mode", "override"),
                                          options.get("sync_status", "synced"))
        return "err " + GROUPS_SET_ERROR if result.failed_agents else "ok"

    def _recalculate_agent_group_hashes(self, args: str) -> str:
        self.db.recalculate_group_hashes()
        return "ok"

    # -- other global commands -----------------------------------------------------------------
    def _insert_agent_group(self, args: str) -> str:
        self.db.create_groups([args.strip()])
        return "ok"

    def _insert_agent(self, args: str) -> str:
        a = json.loads(args)
        self.db._conn.execute(
            "INSERT INTO agent (id, name, ip, register_ip, internal_key, date_add, `group`)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (int(a["id"]), str(a["name"]), a.get("ip"), a.get("register_ip"),
             a.get("internal_key"), int(a["date_add"]), a.get("group")))
        return "ok"

    def _update_agent_name(self, args: str) -> str:
        a = json.loads(args)
        self.db._conn.execute("UPDATE agent SET name = ? WHERE id = ?",
                              (str(a["name"]), int(a["id"])))
        return "ok"

    def _delete_agent(self, args: str) -> str:
        self.db._conn.execute("DELETE FROM agent WHERE id = ?", (int(args),))
        return "ok"

    def _delete_group(self, args: str) -> str:
        self.db.delete_groups([args.strip()], "syncreq")
        return "ok"

    def _sql(self, args: str) -> str:
        cursor = self.db._conn.execute(args)
        names = [d[0] for d in cursor.description or ()]
        rows = [{n: v for n, v in zip(names, row, strict=True) if v is not None}
                for row in cursor.fetchall()]
        text = "ok " + json.dumps(rows, separators=(",", ":"))
        return text[:OS_MAXSTR]  # wazuh-db cuts its output buffer: too big arrives cut


class StandInWazuhDb(Protocol):
    """One wazuh-db connection: framed commands in, framed answers out, in order."""

    def __init__(self, backend: StandInBackend) -> None:
        self._backend = backend
        self._decoder = LengthPrefixDecoder(1024 * 1024)

    def dataReceived(self, data: bytes) -> None:
        for message in self._decoder.feed(data):
            answer = self._backend.answer(message.decode("utf-8", "replace"))
            assert self.transport is not None
            self.transport.write(encode(answer.encode("utf-8")))


class StandInFactory(Factory):
    """Serves a stand-in on a real socket (``UNIXServerEndpoint(...).listen(factory)``)."""

    def __init__(self, backend: StandInBackend) -> None:
        self.backend = backend

    def buildProtocol(self, addr: Any) -> StandInWazuhDb:
        return StandInWazuhDb(self.backend)


class _Pipe:
    """A transport that hands what is written straight to the other protocol."""

    def __init__(self) -> None:
        self.peer: Protocol | None = None
        self.owner: Protocol | None = None
        self.closed = False

    def write(self, data: bytes) -> None:
        if not self.closed and self.peer is not None:
            self.peer.dataReceived(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.abortConnection()

    def abortConnection(self) -> None:
        if self.closed:
            return
        self.closed = True
        for protocol in (self.owner, self.peer):
            if protocol is not None:
                protocol.connectionLost(Failure(connectionDone.value))


def loopback(backend: StandInBackend) -> WdbProtocol:
    """A client connection to ``backend`` in memory."""
    client, server = WdbProtocol(), StandInWazuhDb(backend)
    pipe_to_server, pipe_to_client = _Pipe(), _Pipe()
    pipe_to_server.owner, pipe_to_server.peer = client, server
    pipe_to_client.owner, pipe_to_client.peer = server, client
    server.makeConnection(pipe_to_client)  # type: ignore[arg-type]
    client.makeConnection(pipe_to_server)  # type: ignore[arg-type]
    return client


class _SyncRunner:
    def __call__(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        from twisted.internet.defer import maybeDeferred

        return maybeDeferred(f, *args, **kwargs)


def loopback_database(clock: Any, home: str) -> WazuhDbAgentDatabase:
    """A started WazuhDbAgentDatabase talking to a fresh stand-in for ``home`` in memory.

    ``.standin`` is the stand-in's own global.db (tests inspect it), ``.backend`` its
    interpreter (``.backend.commands`` lists what was sent).
    """
    db = AgentDatabase(os.path.join(home, "queue", "db", "global.db"), int(clock.seconds()))
    backend = StandInBackend(db, clock)

    async def connect() -> WdbProtocol:
        return loopback(backend)

    client = WazuhDbAgentDatabase(clock, connect, _SyncRunner())
    client.standin = db  # type: ignore[attr-defined]
    client.backend = backend  # type: ignore[attr-defined]
    client.startService()
    return client


class BlockingView:
    """The blocking ``AgentDatabase`` API, served by a WazuhDbAgentDatabase over a loopback
    stand-in: every call goes through wazuh-db commands and must complete synchronously.
    Attributes the client does not have (``_conn``, ``agent_row``, ...) are the stand-in's
    own database, for inspection.

    :param home: where the stand-in keeps its global.db.
    :param now: the stand-in's clock.
    """

    def __init__(self, home: str, now: int) -> None:
        from twisted.internet.task import Clock

        clock = Clock()
        clock.advance(now)
        self.client = loopback_database(clock, home)
        self.standin: AgentDatabase = self.client.standin  # type: ignore[attr-defined]
        self.backend: StandInBackend = self.client.backend  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name, None)
        if method is None or name.startswith("_") or name in ("query", "query_all"):
            return getattr(self.standin, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            d = method(*args, **kwargs)
            results: list[Any] = []
            d.addBoth(results.append)
            if not results:
                raise AssertionError(f"{name} did not complete synchronously")
            result = results[0]
            if isinstance(result, Failure):
                result.raiseException()
            return result
        return call

    def close(self) -> None:
        self.client.stopService()
        self.standin.close()


#: Why a test of the embedded database's improvements cannot pass over wazuh-db.
MARKS_ON_READ = ("wazuh-db's sync-agent-info-get marks agents synced as it reads them "
                 "(the embedded database's improvement cannot exist over wazuh-db)")


def not_with_wazuh_db(test: Any, reason: str) -> Any:
    """``test``, skipped for the wazuh-db backend with the reason wazuh-db behaves otherwise."""
    def skipped(self: Any) -> None:
        test(self)
    skipped.skip = f"wazuh-db backend: {reason}"  # type: ignore[attr-defined]
    skipped.__doc__ = test.__doc__
    return skipped
