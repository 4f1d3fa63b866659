"""Configuration: the ``<cluster>`` block of ossec.conf plus cluster.json tunables.

Pure code (no reactor, no services): files in, one frozen :class:`ClusterConfig` out, or a
:class:`~wazuhcluster.errors.ConfigError` whose one-line message names the key, the bad value
and what is expected. Validation follows Wazuh 4.7.5 so that a configuration one
accepts the other accepts too.
"""

from __future__ import annotations

import copy
import enum
import json
import os
import re
import xml.etree.ElementTree as ET
from importlib import resources
from typing import Any

import attrs

from wazuhcluster.errors import ConfigError
from wazuhcluster.settings import load_settings

DEFAULT_KEY_PLACEHOLDER = ""
_NAME_CHARS = re.compile(r"^[!\"#$%&'\-.0-9:<=>?A-Z\[\\\]^_a-z{|}~]+$")
_KEY = re.compile(r"^\w{32}$", re.ASCII)
_FORBIDDEN_NODES = frozenset({"localhost", "NODE_IP", "0.0.0.0", "127.0.1.1"})
_KNOWN_ELEMENTS = frozenset({"disabled", "name", "node_name", "node_type", "key", "port",
                             "bind_addr", "nodes", "hidden", "interval", "socket_timeout",
                             "connection_timeout"})
MAX_UNIX_PATH = 107


class Role(enum.Enum):
    """A node's role."""

    MASTER = "master"
    WORKER = "worker"


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"cluster.json: {attribute.name} = {value!r} is invalid: "
                          "expected a number greater than 0")


def _niceness(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or not -20 <= value <= 19:
        raise ConfigError(f"cluster.json: wazuhcluster.{attribute.name} = {value!r} is invalid:"
                          " expected a whole number from -20 to 19 (0 leaves the niceness "
                          "as it is)")


@attrs.frozen
class Intervals:
    """Timing tunables of cluster.json ``intervals`` (seconds unless noted)."""

    # worker
    sync_integrity: float = attrs.field(default=9, validator=_positive)
    sync_agent_info: float = attrs.field(default=10, validator=_positive)
    timeout_agent_groups: float = attrs.field(default=40, validator=_positive)
    keep_alive: float = attrs.field(default=60, validator=_positive)
    connection_retry: float = attrs.field(default=10, validator=_positive)
    max_failed_keepalive_attempts: int = attrs.field(default=2, validator=_positive)
    agent_groups_mismatch_limit: int = attrs.field(default=5, validator=_positive)
    # master
    process_pool_size: int = attrs.field(default=2, validator=_positive)
    sync_agent_groups: float = attrs.field(default=10, validator=_positive)
    recalculate_integrity: float = attrs.field(default=8, validator=_positive)
    timeout_agent_info: float = attrs.field(default=40, validator=_positive)
    agent_group_start_delay: float = attrs.field(default=30, validator=_positive)
    check_worker_lastkeepalive: float = attrs.field(default=60, validator=_positive)
    max_allowed_time_without_keepalive: float = attrs.field(default=120, validator=_positive)
    max_locked_integrity_time: float = attrs.field(default=1000, validator=_positive)
    # communication
    timeout_cluster_request: float = attrs.field(default=20, validator=_positive)
    timeout_dapi_request: float = attrs.field(default=200, validator=_positive)
    timeout_receiving_file: float = attrs.field(default=120, validator=_positive)
    max_zip_size: int = attrs.field(default=1073741824, validator=_positive)
    min_zip_size: int = attrs.field(default=31457280, validator=_positive)
    compress_level: int = attrs.field(default=1, validator=_positive)
    zip_limit_tolerance: float = attrs.field(default=0.2, validator=_positive)


@attrs.frozen
class Extensions:
    """wazuhcluster's own tunables (cluster.json section ``wazuhcluster``)."""

    compatibility_version: str = "4.7.5"
    max_frame_payload: int = attrs.field(default=8 * 1024 * 1024, validator=_positive)
    max_message_size: int = attrs.field(default=256 * 1024 * 1024, validator=_positive)
    max_divided_messages: int = attrs.field(default=10, validator=_positive)
    max_pending_strings_bytes: int = attrs.field(default=256 * 1024 * 1024, validator=_positive)
    hello_timeout: float = attrs.field(default=20, validator=_positive)
    pre_hello_max_payload: int = attrs.field(default=65536, validator=_positive)
    partial_frame_timeout: float = attrs.field(default=30, validator=_positive)
    reconnect_initial_delay: float = attrs.field(default=1.0, validator=_positive)
    reconnect_max_delay: float = attrs.field(default=10.0, validator=_positive)
    connect_timeout: float = attrs.field(default=2.0, validator=_positive)
    duplicate_probe_timeout: float = attrs.field(default=3.0, validator=_positive)
    idle_probe_after: float = attrs.field(default=3.0, validator=_positive)
    liveness_timeout: float = attrs.field(default=5.0, validator=_positive)
    reaper_check_interval: float = attrs.field(default=1.0, validator=_positive)
    max_concurrent_full_group_pushes: int = attrs.field(default=4, validator=_positive)
    max_concurrent_integrity_tasks: int = attrs.field(default=8, validator=_positive)
    max_concurrent_agent_info_applies: int = attrs.field(default=2, validator=_positive)
    sync_retry_initial_delay: float = attrs.field(default=10.0, validator=_positive)
    sync_retry_max_delay: float = attrs.field(default=60.0, validator=_positive)
    memory_budget: int = attrs.field(default=1024 * 1024 * 1024, validator=_positive)
    memory_per_connection: int = attrs.field(default=288 * 1024 * 1024, validator=_positive)
    max_pre_hello_connections: int = attrs.field(default=256, validator=_positive)
    max_pre_hello_per_address: int = attrs.field(default=16, validator=_positive)
    max_events_per_turn: int = attrs.field(default=8, validator=_positive)
    master_nice: int = attrs.field(default=-10, validator=_niceness)


@attrs.frozen
class ClusterConfig:
    """Everything a node needs to start, validated."""

    home: str
    role: Role
    name: str
    node_name: str
    key: bytes = attrs.field(repr=False)
    port: int
    bind_addr: str
    nodes: tuple[str, ...]
    hidden: bool
    intervals: Intervals
    ext: Extensions
    files: dict[str, Any] = attrs.field(eq=False, repr=False)
    config_path: str
    debug: int = 0
    #: Sections of HOME/etc/wazuhcluster.yaml (wazuhcluster.settings); each feature reads its own.
    settings: dict[str, dict[str, Any]] = attrs.field(factory=dict, eq=False, repr=False)

    @property
    def master_address(self) -> str:
        """The master's address (``nodes[0]``)."""
        return self.nodes[0]

    @property
    def local_socket_path(self) -> str:
        """The local API socket."""
        return os.path.join(self.home, "queue", "cluster", "c-internal.sock")

    @property
    def log_path(self) -> str:
        """``logs/cluster.log`` under the home."""
        return os.path.join(self.home, "logs", "cluster.log")

    @property
    def version(self) -> str:
        """The version announced in ``hello`` and node lists."""
        return self.ext.compatibility_version

    def public_dict(self) -> dict[str, Any]:
        """The ``<cluster>`` block as ``get_config`` reports it, key redacted."""
        return {
            "disabled": False, "node_type": self.role.value, "name": self.name,
            "node_name": self.node_name, "key": "********", "port": self.port,
            "bind_addr": self.bind_addr, "nodes": list(self.nodes),
            "hidden": "yes" if self.hidden else "no",
        }


class ClusterDisabled(Exception):
    """The ``<cluster>`` block is absent or says ``<disabled>yes</disabled>``."""


def valid_name(value: str) -> bool:
    """A cluster or node name Wazuh accepts, and safe as a directory name."""
    return name_problem(value) is None


def name_problem(value: str) -> str | None:
    """What is wrong with a cluster or node name, or ``None`` if it is valid."""
    if not value:
        return "empty name"
    if len(value) > 128:
        return f"too long ({len(value)} characters, at most 128)"
    if value in (".", ".."):
        return f"{value!r} is not allowed"
    if "/" in value:
        return "contains a path separator '/'"
    if any(not c.isprintable() for c in value):
        return "contains a control or non-printable character"
    if " " in value:
        return "contains a space"
    if not _NAME_CHARS.match(value):
        bad = sorted({c for c in value if not _NAME_CHARS.match(c)})
        return ("contains characters Wazuh does not allow in a node name: "
                + " ".join(repr(c) for c in bad[:5]))
    return None


def default_cluster_json() -> dict[str, Any]:
    """The cluster.json shipped in the package."""
    text = resources.files("wazuhcluster").joinpath("data/cluster.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def load_config(home: str, *, config_path: str | None = None, role: str | None = None,
                cluster_json: str | None = None, debug: int = 0) -> ClusterConfig:
    """Read and validate a node's configuration.

    :param home: the Wazuh-style home directory (etc/, logs/, queue/, var/).
    :param config_path: the file holding the ``<cluster>`` block (default home/etc/ossec.conf).
    :param role: ``--role`` from the command line; it must agree with ``<node_type>``.
    :param cluster_json: a cluster.json whose values override the shipped ones.
    :raises ConfigError: with a one-line explanation.
    :raises ClusterDisabled: when the cluster is disabled.
    """
    home = os.path.abspath(home)
    if not os.path.isdir(home):
        raise ConfigError(f"--home {home!r} is not a directory: create it or pass the right path")
    config_path = os.path.abspath(config_path or os.path.join(home, "etc", "ossec.conf"))
    block = _read_cluster_block(config_path)
    tunables = _load_tunables(cluster_json)

    def text(tag: str, default: str) -> str:
        element = block.find(tag)
        if element is None or element.text is None or not element.text.strip():
            return default
        return element.text.strip()

    def bad(tag: str, value: str, expected: str) -> ConfigError:
        return ConfigError(f"{config_path}: <cluster><{tag}> = {value!r} is invalid: {expected}")

    for child in block:
        if child.tag not in _KNOWN_ELEMENTS:
            raise ConfigError(f"{config_path}: <cluster><{child.tag}> is not a valid element: "
                              f"remove it (valid: {', '.join(sorted(_KNOWN_ELEMENTS))})")
    disabled = text("disabled", "no")
    if disabled not in ("yes", "no"):
        raise bad("disabled", disabled, "expected 'yes' or 'no'")
    if disabled == "yes":
        raise ClusterDisabled(f"{config_path}: <cluster><disabled> is 'yes'")
    name = text("name", "wazuh")
    node_name = text("node_name", "node01")
    for tag, value in (("name", name), ("node_name", node_name)):
        if not valid_name(value):
            raise bad(tag, value, "use letters, digits and !\"#$%&'-.:<=>?[\\]^_{|}~ only "
                                  "(no spaces)")
    node_type = text("node_type", "master")
    if node_type == "client":
        node_type = "worker"
    if node_type not in ("master", "worker"):
        raise bad("node_type", node_type, "expected 'master' or 'worker'")
    if role is not None and role != node_type:
        raise ConfigError(f"--role {role} contradicts {config_path}: <cluster><node_type> = "
                          f"{node_type!r}: make them agree, or omit --role")
    key = text("key", DEFAULT_KEY_PLACEHOLDER)
    if not key:
        raise ConfigError(f"{config_path}: <cluster><key> is missing: set a 32-character key "
                          "of letters, digits or '_' (e.g. from `openssl rand -hex 16`)")
    if not _KEY.match(key):
        raise ConfigError(f"{config_path}: <cluster><key> is invalid (value hidden, "
                          f"{len(key)} characters): expected exactly 32 letters, digits or '_'")
    port_text = text("port", "1516")
    try:
        port = int(port_text)
    except ValueError:
        raise bad("port", port_text, "expected an integer between 1025 and 65534") from None
    if not 1024 < port < 65535:
        raise bad("port", port_text, "expected an integer between 1025 and 65534")
    bind_addr = text("bind_addr", "0.0.0.0")
    nodes_element = block.find("nodes")
    nodes = tuple((n.text or "").strip() for n in nodes_element.findall("node")) if (
        nodes_element is not None) else ()
    nodes = tuple(n for n in nodes if n) or ("NODE_IP",)
    if nodes[0] in _FORBIDDEN_NODES:
        raise bad("nodes><node", nodes[0], "set the master's IP address (localhost, NODE_IP, "
                                           "0.0.0.0 and 127.0.1.1 are not accepted)")
    hidden = text("hidden", "no")
    if hidden not in ("yes", "no"):
        raise bad("hidden", hidden, "expected 'yes' or 'no'")
    config = ClusterConfig(
        home=home, role=Role(node_type), name=name, node_name=node_name, key=key.encode(),
        port=port, bind_addr=bind_addr, nodes=nodes, hidden=hidden == "yes",
        intervals=tunables[0], ext=tunables[1], files=tunables[2], config_path=config_path,
        debug=debug, settings=load_settings(home))
    if len(config.local_socket_path) > MAX_UNIX_PATH:
        raise ConfigError(f"--home {home!r} is too long: the local socket path "
                          f"{config.local_socket_path!r} exceeds {MAX_UNIX_PATH} bytes; "
                          "use a shorter home directory")
    return config


def _read_cluster_block(path: str) -> ET.Element:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"--config {path!r} cannot be read ({e.strerror}): "
                          "pass an ossec.conf with a <cluster> block") from None
    # ossec.conf holds several top-level <ossec_config> blocks: wrap them in one root.
    text = re.sub(r"<\?xml[^>]*\?>", "", text)
    try:
        root = ET.fromstring(f"<root>{text}</root>")
    except ET.ParseError as e:
        raise ConfigError(f"{path}: not well-formed XML ({e}): fix the file") from None
    blocks = root.findall(".//cluster")
    if not blocks:
        raise ClusterDisabled(f"{path}: no <cluster> block")
    return blocks[-1]


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load_tunables(path: str | None) -> tuple[Intervals, Extensions, dict[str, Any]]:
    data = default_cluster_json()
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                override = json.load(f)
        except OSError as e:
            raise ConfigError(f"--cluster-json {path!r} cannot be read ({e.strerror}): "
                              "pass a readable JSON file") from None
        except ValueError as e:
            raise ConfigError(f"--cluster-json {path!r} is not valid JSON ({e}): "
                              "fix the file") from None
        if not isinstance(override, dict):
            raise ConfigError(f"--cluster-json {path!r}: expected a JSON object at top level")
        data = _merge(data, override)
    flat: dict[str, Any] = {}
    intervals = data.get("intervals", {})
    known = {f.name for f in attrs.fields(Intervals)}
    for section in ("worker", "master", "communication"):
        for key, value in intervals.get(section, {}).items():
            if key in known:
                flat[key] = _number(f"intervals.{section}.{key}", value)
    ext_data = {k: v for k, v in data.get("wazuhcluster", {}).items() if not k.startswith("_")}
    ext_known = {f.name for f in attrs.fields(Extensions)}
    for key in ext_data:
        if key not in ext_known:
            raise ConfigError(f"cluster.json: wazuhcluster.{key} is not a known setting: remove "
                              f"it (known: {', '.join(sorted(ext_known))})")
    for key, value in ext_data.items():
        if key == "master_nice":
            pass  # any whole number in its range, 0 and negatives included (_niceness)
        elif key != "compatibility_version":
            ext_data[key] = _number(f"wazuhcluster.{key}", value)
        elif not isinstance(value, str) or not value or " " in value:
            raise ConfigError(f"cluster.json: wazuhcluster.compatibility_version = {value!r} is "
                              "invalid: expected a version string without spaces, e.g. '4.7.5'")
    files = data.get("files", {})
    try:
        intervals = Intervals(**flat)
        ext = Extensions(**ext_data)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cluster.json: {e}") from None
    if intervals.min_zip_size > intervals.max_zip_size:
        raise ConfigError(f"cluster.json: intervals.communication.min_zip_size = "
                          f"{intervals.min_zip_size} is invalid: expected at most max_zip_size "
                          f"({intervals.max_zip_size})")
    _check_limits(ext)
    from wazuhcluster.integrity.errors import ItemsConfigError
    from wazuhcluster.integrity.items import parse_cluster_items

    try:
        parse_cluster_items(files if isinstance(files, dict) else {})
    except ItemsConfigError as e:
        raise ConfigError(f"cluster.json: files: {e}: fix the item (see "
                          "docs/operations.md, cluster.json)") from None
    if not isinstance(files, dict):
        raise ConfigError("cluster.json: files must be a JSON object of cluster items")
    return intervals, ext, files


def _number(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"cluster.json: {name} = {value!r} is invalid: expected a number")
    if not value > 0:
        raise ConfigError(f"cluster.json: {name} = {value!r} is invalid: expected a number "
                          "greater than 0")
    return value


def _check_limits(ext: Extensions) -> None:
    """The memory and connection limits must be consistent with each other."""
    largest = ext.max_message_size + ext.max_frame_payload
    if ext.memory_per_connection < largest:
        raise ConfigError(f"cluster.json: wazuhcluster.memory_per_connection = "
                          f"{ext.memory_per_connection} is invalid: expected at least "
                          f"max_message_size + max_frame_payload ({largest}) so that the largest "
                          "message fits")
    if ext.memory_budget < ext.memory_per_connection:
        raise ConfigError(f"cluster.json: wazuhcluster.memory_budget = {ext.memory_budget} is "
                          f"invalid: expected at least memory_per_connection "
                          f"({ext.memory_per_connection})")
    if ext.max_pre_hello_per_address > ext.max_pre_hello_connections:
        raise ConfigError(f"cluster.json: wazuhcluster.max_pre_hello_per_address = "
                          f"{ext.max_pre_hello_per_address} is invalid: expected at most "
                          f"max_pre_hello_connections ({ext.max_pre_hello_connections})")
