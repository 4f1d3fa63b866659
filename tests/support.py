"""Shared test support: vectors, config builders, in-memory connections."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IProtocol
from twisted.internet.task import Clock
from twisted.test import iosim  # the only import of iosim in the code base

from wazuhcluster.config import ClusterConfig, load_config
from wazuhcluster.homes import make_home

#: The Wazuh 4.7.5 test data carried in the repository (origin: tests/data/README.md).
VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "wazuh-4.7.5")
VECTOR_KEY = b"abcdefghijklmnopqrstuvwxyz012345"


def vector_path(*parts: str) -> str:
    """Path of a file in the Wazuh 4.7.5 test data."""
    return os.path.join(VECTORS, *parts)


def manifest() -> dict[str, Any]:
    """The test data manifest."""
    with open(vector_path("manifest.json")) as f:
        data: dict[str, Any] = json.load(f)
    return data


def read_vector(*parts: str) -> bytes:
    """Bytes of a test data file."""
    with open(vector_path(*parts), "rb") as f:
        return f.read()


def connected_pair(server: Callable[[], IProtocol], client: Callable[[], IProtocol],
                   clock: Clock) -> tuple[Any, Any, iosim.IOPump]:
    """Connect two protocols in memory; returns (server, client, pump)."""
    client_side, server_side, pump = iosim.connectedServerAndClient(server, client, clock=clock)
    return server_side, client_side, pump


def node_config(base: str, *, node_name: str = "master-node", role: str = "master",
                key: str = "abcdefghijklmnopqrstuvwxyz012345", port: int = 15160,
                cluster: str = "wazuh", cluster_json: dict[str, Any] | None = None
                ) -> ClusterConfig:
    """Create a home under ``base`` and load its configuration."""
    home = make_home(os.path.join(base, node_name), node_name=node_name, node_type=role,
                     key=key, port=port, name=cluster)
    override = None
    if cluster_json is not None:
        override = os.path.join(home, "cluster-override.json")
        with open(override, "w") as f:
            json.dump(cluster_json, f)
    return load_config(home, cluster_json=override)


def short_tempdir(testcase: Any) -> str:
    """A short temporary directory (UNIX socket paths are limited), removed after the test."""
    path = tempfile.mkdtemp(prefix="wzc", dir="/tmp")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path
