"""The ``metrics`` section of ``HOME/api/configuration/api.yaml``.

It is read even when the REST API is disabled: the metrics listener stands alone. Any error
stops start-up with one line naming the file, the key and the fix.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import attrs
import yaml

from wazuhcluster.errors import ConfigError

#: 9465: next to OpenTelemetry's Prometheus exporter (9464), and none of the ports the
#: Prometheus components and common exporters use (9090-9093, 9100-9199).
DEFAULT_PORT = 9465
DEFAULTS: dict[str, Any] = {"enabled": True, "host": "127.0.0.1", "port": DEFAULT_PORT}


@attrs.frozen
class MetricsConfig:
    """Where the node serves ``/metrics`` (plain HTTP, no token)."""

    enabled: bool
    host: str
    port: int
    path: str  # the api.yaml it was read from (for messages)


def api_yaml(home: str) -> str:
    return os.path.join(home, "api", "configuration", "api.yaml")


def load_metrics_config(home: str) -> MetricsConfig:
    """The ``metrics`` section (defaults when api.yaml or the section is missing).

    :raises ConfigError: one line naming the file, the key and the fix.
    """
    path = api_yaml(home)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f.read())
    except FileNotFoundError:
        data = None
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror}): make it readable by the "
                          "wazuhcluster user, or remove it") from None
    except yaml.YAMLError:
        raise ConfigError(f"{path} is not valid YAML: fix the file") from None
    section = data.get("metrics") if isinstance(data, dict) else None
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: metrics must be a mapping (enabled, host, port)")
    merged = dict(DEFAULTS)
    for key, value in section.items():
        if key not in DEFAULTS:
            raise ConfigError(f"{path}: metrics.{key} is not a known setting: remove it "
                              "(known: enabled, host, port)")
        merged[key] = value
    if not isinstance(merged["enabled"], bool):
        raise ConfigError(f"{path}: metrics.enabled is {merged['enabled']!r}: set it to true "
                          "or false")
    port = merged["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"{path}: metrics.port is {port!r}: set it to a TCP port (1-65535), "
                          f"e.g. {DEFAULT_PORT}")
    host = merged["host"]
    try:
        ipaddress.IPv4Address(host)
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: metrics.host is {host!r}: set it to an IPv4 address, e.g. "
                          "127.0.0.1 (all interfaces: 0.0.0.0)") from None
    return MetricsConfig(enabled=merged["enabled"], host=host, port=port, path=path)
