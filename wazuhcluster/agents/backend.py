"""Which agent database a node uses: settings section ``agent_db`` of etc/wazuhcluster.yaml.

``backend: embedded`` (the default) is wazuhcluster's own SQLite ``global.db``;
``backend: wazuh-db`` talks to the wazuh-db of a real Wazuh manager over ``socket``
(default ``queue/db/wdb``, relative to the home or absolute): drop-in mode.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import Service

from wazuhcluster.agents.db import database_path, refuse_next_to_live_wazuh_db
from wazuhcluster.agents.threaded import make_agent_database
from wazuhcluster.agents.wazuhdb import WazuhDbAgentDatabase, unix_connector
from wazuhcluster.errors import ConfigError
from wazuhcluster.settings import section

BACKENDS = ("embedded", "wazuh-db")
DEFAULTS: dict[str, Any] = {"backend": "embedded", "socket": "queue/db/wdb", "timeout": 30.0}


def agent_db_settings(config: Any) -> dict[str, Any]:
    """Section ``agent_db``, checked; ``socket`` made absolute."""
    values = section(config.settings, "agent_db", DEFAULTS)
    where = "etc/wazuhcluster.yaml: agent_db"
    if values["backend"] not in BACKENDS:
        raise ConfigError(f"{where}.backend must be one of {', '.join(BACKENDS)} "
                          f"(got {values['backend']!r})")
    if not isinstance(values["socket"], str) or not values["socket"]:
        raise ConfigError(f"{where}.socket must be the path of wazuh-db's socket")
    timeout = values["timeout"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"{where}.timeout must be a positive number of seconds")
    values["socket"] = os.path.join(config.home, values["socket"])
    values["timeout"] = float(timeout)
    return values


def make_agent_backend(config: Any, reactor: Any, run: Any) -> Service:
    """The ``agent-db`` service the settings ask for."""
    values = agent_db_settings(config)
    if values["backend"] == "wazuh-db":
        service = WazuhDbAgentDatabase(reactor, unix_connector(reactor, values["socket"]), run,
                                       timeout=values["timeout"])
        service.setName("agent-db")
        return service
    refuse_next_to_live_wazuh_db(config.home)  # embedded beside a running wazuh-db: refused
    return make_agent_database(reactor, database_path(config.home))
