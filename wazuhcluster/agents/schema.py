"""SQL schema of the embedded agent database (``<home>/queue/db/wazuhcluster-agents.db``).

The tables ``agent``, ``labels``, ``info``, ``group``, ``belongs`` and ``metadata`` have the
column names, types, constraints and defaults of the ``global.db`` that wazuh-db 4.7.5 creates
(schema version 6), so that tools which read Wazuh's database can read ours. The SQL text is
our own.

Two tables are ours: ``cluster_sync_seq`` holds, per agent, the change sequence of the last
change that marked the agent for agent-info synchronisation (``info_seq``) and for agent-groups
synchronisation (``group_seq``). It lets a worker mark exactly the rows it sent as synced once
the master has confirmed them, instead of marking them when read (see
docs/protocol.md). ``cluster_counters`` counts, through triggers, the changes that can move
the global group hash, so that the hash is computed again only when it may have changed.
"""

from __future__ import annotations

import sqlite3

#: The agents' node names, in the order a scan of ``agent_status_node`` meets them (status,
#: then name; NULL first within a status), one row per (status, name) pair: the DAPI's
#: routing keeps the first occurrence of each name. ``SELECT DISTINCT node_name FROM agent``
#: gives the same names in the same order but reads every index entry (2.4 ms for 50 000
#: agents); this walks the index by seeks (``MIN`` then ``MIN(...) > previous``), a few per
#: (status, node name) pair (0.03 ms). Only for the embedded database (it needs the index).
NODE_NAMES_SQL = """
SELECT connection_status, k, node_name FROM (
WITH RECURSIVE
  s(st) AS (
    SELECT (SELECT MIN(connection_status) FROM agent)
    UNION ALL
    SELECT (SELECT MIN(connection_status) FROM agent WHERE connection_status > s.st)
    FROM s WHERE s.st IS NOT NULL),
  n(st, nm) AS (
    SELECT st, (SELECT MIN(node_name) FROM agent WHERE connection_status = s.st)
    FROM s WHERE st IS NOT NULL
    UNION ALL
    SELECT st, (SELECT MIN(node_name) FROM agent
                WHERE connection_status = n.st AND node_name > n.nm)
    FROM n WHERE nm IS NOT NULL)
SELECT st AS connection_status, 0 AS k, NULL AS node_name FROM s
  WHERE st IS NOT NULL
    AND EXISTS (SELECT 1 FROM agent WHERE connection_status = s.st AND node_name IS NULL)
UNION ALL
SELECT st, 1, nm FROM n WHERE nm IS NOT NULL)
ORDER BY 1, 2, 3
"""

#: wazuh-db's answer size limit: ``OS_MAXSTR`` (65536) minus ``WDB_MAX_COMMAND_SIZE`` (512).
WDB_MAX_RESPONSE_SIZE = 65536 - 512

#: The ``metadata.db_version`` value of a 4.7.5 global.db.
GLOBAL_DB_VERSION = "6"

#: ``last_keepalive`` of agent 000 (the manager itself): 9999-12-31 23:59:59 UTC.
MANAGER_KEEPALIVE = 253402300799

#: Columns of the ``agent`` table, in Wazuh's order.
AGENT_COLUMNS: tuple[str, ...] = (
    "id", "name", "ip", "register_ip", "internal_key", "os_name", "os_version", "os_major",
    "os_minor", "os_codename", "os_build", "os_platform", "os_uname", "os_arch", "version",
    "config_sum", "merged_sum", "manager_host", "node_name", "date_add", "last_keepalive",
    "group", "group_hash", "group_sync_status", "sync_status", "connection_status",
    "disconnection_time", "group_config_status", "status_code",
)

#: Columns read by ``global sync-agent-info-get``, in the order wazuh-db emits them.
AGENT_INFO_COLUMNS: tuple[str, ...] = (
    "id", "name", "ip", "os_name", "os_version", "os_major", "os_minor", "os_codename",
    "os_build", "os_platform", "os_uname", "os_arch", "version", "config_sum", "merged_sum",
    "manager_host", "node_name", "last_keepalive", "connection_status", "disconnection_time",
    "group_config_status", "status_code",
)

#: Columns written by ``global sync-agent-info-set`` (everything read except the key ``id``).
AGENT_INFO_SET_COLUMNS: tuple[str, ...] = AGENT_INFO_COLUMNS[1:]

#: Agent-info columns holding integers; the others hold text.
AGENT_INFO_INTEGER_COLUMNS: frozenset[str] = frozenset(
    {"id", "last_keepalive", "disconnection_time", "status_code"}
)

#: Allowed values of ``agent.connection_status``.
CONNECTION_STATUSES: frozenset[str] = frozenset(
    {"pending", "never_connected", "active", "disconnected"}
)

#: Allowed values of ``agent.group_config_status``.
GROUP_CONFIG_STATUSES: frozenset[str] = frozenset({"synced", "not synced"})

#: Allowed values of ``agent.sync_status`` and ``agent.group_sync_status``.
SYNC_STATUSES: frozenset[str] = frozenset({"synced", "syncreq"})

_TABLES = """
CREATE TABLE IF NOT EXISTS agent (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    ip TEXT,
    register_ip TEXT,
    internal_key TEXT,
    os_name TEXT,
    os_version TEXT,
    os_major TEXT,
    os_minor TEXT,
    os_codename TEXT,
    os_build TEXT,
    os_platform TEXT,
    os_uname TEXT,
    os_arch TEXT,
    version TEXT,
    config_sum TEXT,
    merged_sum TEXT,
    manager_host TEXT,
    node_name TEXT DEFAULT 'unknown',
    date_add INTEGER NOT NULL,
    last_keepalive INTEGER,
    `group` TEXT DEFAULT 'default',
    group_hash TEXT DEFAULT NULL,
    group_sync_status TEXT NOT NULL DEFAULT 'synced'
        CHECK (group_sync_status IN ('synced', 'syncreq')),
    sync_status TEXT NOT NULL DEFAULT 'synced'
        CHECK (sync_status IN ('synced', 'syncreq')),
    connection_status TEXT NOT NULL DEFAULT 'never_connected'
        CHECK (connection_status IN ('pending', 'never_connected', 'active', 'disconnected')),
    disconnection_time INTEGER DEFAULT 0,
    group_config_status TEXT NOT NULL DEFAULT 'not synced'
        CHECK (group_config_status IN ('synced', 'not synced')),
    status_code INTEGER DEFAULT 0
);
CREATE INDEX IF NOT EXISTS agent_name ON agent (name);
-- ip and group_hash are NULL until an agent connects / gets a group (every agent of a first
-- client.keys): partial indexes hold only the rows with a value, so building them after a
-- bulk insert costs nothing (0.12 s per 200 000 agents otherwise). A query comparing the
-- column (ip = ?, group_hash IS NOT NULL) still uses them.
CREATE INDEX IF NOT EXISTS agent_ip ON agent (ip) WHERE ip IS NOT NULL;
CREATE INDEX IF NOT EXISTS agent_group_hash ON agent (group_hash) WHERE group_hash IS NOT NULL;
-- get_health's active agents per node: a covering index, no scan of the agent table.
CREATE INDEX IF NOT EXISTS agent_status_node ON agent (connection_status, node_name);
-- The agents waiting for agent-info / agent-groups synchronisation: partial indexes that hold
-- only those rows, so that the periodic rounds (every 10-30 s) read them without a scan of
-- every agent (25 ms each at 200 000 agents when none waits).
CREATE INDEX IF NOT EXISTS agent_info_syncreq ON agent (id) WHERE sync_status = 'syncreq';
CREATE INDEX IF NOT EXISTS agent_groups_syncreq ON agent (id)
    WHERE group_sync_status = 'syncreq';

CREATE TABLE IF NOT EXISTS labels (
    id INTEGER REFERENCES agent (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (id, key)
);

CREATE TABLE IF NOT EXISTS info (
    key TEXT PRIMARY KEY,
    value TEXT
);

CREATE TABLE IF NOT EXISTS `group` (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT,
    UNIQUE (name)
);
CREATE INDEX IF NOT EXISTS group_name ON `group` (name);

CREATE TABLE IF NOT EXISTS belongs (
    id_agent INTEGER REFERENCES agent (id) ON DELETE CASCADE,
    id_group INTEGER REFERENCES `group` (id) ON DELETE CASCADE,
    priority INTEGER NOT NULL DEFAULT 0,
    UNIQUE (id_agent, priority),
    PRIMARY KEY (id_agent, id_group)
);
CREATE INDEX IF NOT EXISTS belongs_id_agent ON belongs (id_agent);
CREATE INDEX IF NOT EXISTS belongs_id_group ON belongs (id_group);

CREATE TABLE IF NOT EXISTS metadata (
    key TEXT PRIMARY KEY,
    value TEXT
);

CREATE TABLE IF NOT EXISTS cluster_sync_seq (
    id INTEGER PRIMARY KEY REFERENCES agent (id) ON DELETE CASCADE,
    info_seq INTEGER NOT NULL DEFAULT 0,
    group_seq INTEGER NOT NULL DEFAULT 0
);

-- Counts the changes that can move the global group hash (an agent with a group_hash
-- inserted or deleted, a group_hash or an id changed), whoever makes them: the hash is kept
-- until it moves instead of being read from every agent each round.
CREATE TABLE IF NOT EXISTS cluster_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO cluster_counters (name, value) VALUES ('group_hash', 0);
CREATE TRIGGER IF NOT EXISTS agent_group_hash_insert AFTER INSERT ON agent
    WHEN NEW.group_hash IS NOT NULL
BEGIN UPDATE cluster_counters SET value = value + 1 WHERE name = 'group_hash'; END;
CREATE TRIGGER IF NOT EXISTS agent_group_hash_delete AFTER DELETE ON agent
    WHEN OLD.group_hash IS NOT NULL
BEGIN UPDATE cluster_counters SET value = value + 1 WHERE name = 'group_hash'; END;
CREATE TRIGGER IF NOT EXISTS agent_group_hash_update AFTER UPDATE OF group_hash, id ON agent
    WHEN OLD.group_hash IS NOT NEW.group_hash OR OLD.id IS NOT NEW.id
BEGIN UPDATE cluster_counters SET value = value + 1 WHERE name = 'group_hash'; END;
"""


def configure_connection(conn: sqlite3.Connection) -> None:
    """Set the per-connection pragmas: WAL journal, foreign keys, normal fsync policy."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")


def create_schema(conn: sqlite3.Connection, now: int) -> None:
    """Create every table that does not exist yet, plus agent 000 and the version row.

    :param now: the creation time (POSIX seconds) stored as agent 000's ``date_add``.
    """
    _drop_replaced_indexes(conn)
    conn.executescript(_TABLES)
    with conn:
        conn.execute(
            "INSERT OR IGNORE INTO agent (id, ip, register_ip, name, date_add, last_keepalive,"
            " `group`, connection_status) VALUES (0, '127.0.0.1', '127.0.0.1', 'localhost',"
            " ?, ?, NULL, 'active')",
            (now, MANAGER_KEEPALIVE),
        )
        conn.execute(
            "INSERT OR IGNORE INTO metadata (key, value) VALUES ('db_version', ?)",
            (GLOBAL_DB_VERSION,),
        )


#: Indexes whose definition changed since a database may have been created: dropped when
#: their stored SQL differs, then created again by the schema (``name: SQL of today``).
_REPLACED_INDEXES = {
    "agent_ip": "CREATE INDEX agent_ip ON agent (ip) WHERE ip IS NOT NULL",
    "agent_group_hash": ("CREATE INDEX agent_group_hash ON agent (group_hash)"
                         " WHERE group_hash IS NOT NULL"),
}


def _drop_replaced_indexes(conn: sqlite3.Connection) -> None:
    """Drop the indexes of :data:`_REPLACED_INDEXES` stored with another definition (a
    database of an earlier version: full indexes on ``ip`` and ``group_hash``)."""
    stored = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                               " AND tbl_name = 'agent'").fetchall())
    with conn:
        for name, sql in _REPLACED_INDEXES.items():
            if name in stored and stored[name] != sql:
                conn.execute(f'DROP INDEX "{name}"')
