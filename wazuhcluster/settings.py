"""``HOME/etc/wazuhcluster.yaml``: wazuhcluster's own deployment settings.

ossec.conf is also read by Wazuh's C daemons on a real manager and must stay valid for them, so
settings that only wazuhcluster understands (TLS on the cluster link, the agent-database backend,
...) live in this optional YAML file instead. Each top-level key is a section owned by one feature;
the feature validates its own section (``section()`` helpers below) and any error stops start-up
with one line naming the file, the key and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml

from wazuhcluster.errors import ConfigError

#: Top-level sections and the feature that owns each; add yours here.
KNOWN_SECTIONS: dict[str, str] = {
    "tls": "mutual TLS on the cluster link",
    "agent_db": "agent database backend (embedded SQLite or wazuh-db)",
    "logging": "log format and rotation",
    "dapi": "distributed API limits",
    "sendsync": "daemon sockets reached by sendsync",
    "enrolment": "agent enrolment limits (connections, waiting for the master)",
    "api": "the REST API service (enabled: true|false; the rest is api/configuration/api.yaml)",
    "ownership": "owner and group of files received from the master",
}


def settings_path(home: str) -> str:
    """Where the settings file of ``home`` lives."""
    return os.path.join(home, "etc", "wazuhcluster.yaml")


def load_settings(home: str, path: str | None = None) -> dict[str, dict[str, Any]]:
    """Read and check the top level of the settings file; ``{}`` when it does not exist.

    :raises ConfigError: unreadable file, invalid YAML, a top level that is not a mapping, an
        unknown section, or a section that is not a mapping.
    """
    path = path or settings_path(home)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror}): make it readable by the "
                          "wazuhcluster user, or remove it") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}: fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at top level "
                          f"({', '.join(sorted(KNOWN_SECTIONS))})")
    sections: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key not in KNOWN_SECTIONS:
            raise ConfigError(f"{path}: {key!r} is not a known section: remove it (known: "
                              f"{', '.join(sorted(KNOWN_SECTIONS))})")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: section {key!r} must be a mapping of settings")
        sections[str(key)] = value
    return sections


def section(settings: Mapping[str, Mapping[str, Any]], name: str, known: Mapping[str, Any],
            path: str = "etc/wazuhcluster.yaml") -> dict[str, Any]:
    """One section with its defaults filled in; unknown keys refused.

    :param known: the section's keys and their defaults.
    :raises ConfigError: for a key of the section that is not in ``known``.
    """
    given = dict(settings.get(name, {}))
    for key in given:
        if key not in known:
            raise ConfigError(f"{path}: {name}.{key} is not a known setting: remove it (known: "
                              f"{', '.join(sorted(known))})")
    return {**known, **given}
