"""The floor both agent benchmarks compare against: plain sqlite3, one transaction."""

from __future__ import annotations

import sqlite3
import time

from wazuhcluster.agents.schema import AGENT_INFO_SET_COLUMNS


def agent_info_rows(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    """The agent-info columns of every agent but 000, id first."""
    columns = ("id", *AGENT_INFO_SET_COLUMNS)
    return [tuple(r) for r in conn.execute(
        f"SELECT {', '.join(columns)} FROM agent WHERE id > 0 ORDER BY id")]


def floor_seconds(db_path: str, rows: list[tuple[object, ...]]) -> float:
    """Seconds to write ``rows`` into ``db_path`` with one executemany in one transaction
    (WAL, synchronous=NORMAL, the same UPDATE columns as the master)."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = ("UPDATE agent SET " + ", ".join(f"{c} = ?" for c in AGENT_INFO_SET_COLUMNS)
           + ", sync_status = 'synced' WHERE id = ?")
    params = [(*r[1:], r[0]) for r in rows]
    start = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(sql, params)
    conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    conn.close()
    return seconds
