"""The ``<auth>`` block of ossec.conf (Wazuh 4.7.5's options and defaults), plus wazuhcluster's
own enrolment limits from the ``enrolment`` section of ``etc/wazuhcluster.yaml``.

Pure code: a file in, a frozen :class:`AuthConfig` out, or a ConfigError whose one line names the
element, the bad value and what is expected.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

import attrs

from wazuhcluster.errors import ConfigError
from wazuhcluster.settings import section

DEFAULT_CIPHERS = "HIGH:!ADH:!EXP:!MD5:!RC4:!3DES:!CAMELLIA:@STRENGTH"

_ELEMENTS = frozenset({
    "disabled", "port", "ipv6", "use_source_ip", "force_insert", "force_time", "force", "purge",
    "use_password", "limit_maxagents", "ciphers", "ssl_agent_ca", "ssl_verify_host",
    "ssl_manager_cert", "ssl_manager_key", "ssl_auto_negotiate", "remote_enrollment", "agents",
    "key_request"})
_FORCE_ELEMENTS = frozenset({"enabled", "key_mismatch", "disconnected_time",
                             "after_registration_time"})
_INTERVAL = re.compile(r"^(\d+)([dhms]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

#: wazuhcluster's own settings (``enrolment`` section of etc/wazuhcluster.yaml) and defaults.
EXTRA_DEFAULTS: dict[str, Any] = {
    "max_connections": 1024,    # TLS connections served at once; more are closed at once
    "request_timeout": 10.0,    # seconds an agent has to send its request
    "forward_deadline": 300.0,  # worker: seconds an enrolment waits for an unreachable master
    "max_waiting": 1000,        # worker: enrolments waiting for the master at once
}


@attrs.frozen
class ForceOptions:
    """``<force>``: when an enrolment may replace an agent with the same name or IP."""

    enabled: bool = True
    key_mismatch: bool = True
    disconnected_time_enabled: bool = True
    disconnected_time: int = 3600
    after_registration_time: int = 3600

    def to_json(self) -> dict[str, Any]:
        """The ``force`` object of authd's local protocol."""
        return {"enabled": self.enabled, "key_mismatch": self.key_mismatch,
                "disconnected_time": {"enabled": self.disconnected_time_enabled,
                                      "value": self.disconnected_time},
                "after_registration_time": self.after_registration_time}


@attrs.frozen
class AuthConfig:
    """The registration service's configuration, validated; paths are absolute."""

    disabled: bool = False
    port: int = 1515
    use_source_ip: bool = False
    purge: bool = False
    use_password: bool = False
    force: ForceOptions = ForceOptions()
    ciphers: str = DEFAULT_CIPHERS
    ssl_agent_ca: str | None = None
    ssl_verify_host: bool = False
    ssl_manager_cert: str = "etc/sslmanager.cert"
    ssl_manager_key: str = "etc/sslmanager.key"
    ssl_auto_negotiate: bool = False
    remote_enrollment: bool = True
    allow_higher_versions: bool = False
    max_connections: int = 1024
    request_timeout: float = 10.0
    forward_deadline: float = 300.0
    max_waiting: int = 1000


def parse_interval(text: str) -> int | None:
    """Wazuh's time interval (``90``, ``90s``, ``10m``, ``1h``, ``2d``) in seconds, or None."""
    match = _INTERVAL.match(text.strip())
    if match is None:
        return None
    return int(match.group(1)) * _UNITS[match.group(2)]


def _read_auth_block(path: str) -> ET.Element | None:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror}): pass a readable ossec.conf"
                          ) from None
    text = re.sub(r"<\?xml[^>]*\?>", "", text)
    try:
        root = ET.fromstring(f"<root>{text}</root>")
    except ET.ParseError as e:
        raise ConfigError(f"{path}: not well-formed XML ({e}): fix the file") from None
    blocks = root.findall(".//auth")
    return blocks[-1] if blocks else None


def load_auth_config(config_path: str, home: str,
                     settings: Mapping[str, Mapping[str, Any]] | None = None) -> AuthConfig:
    """Read ``<auth>`` from ``config_path`` (defaults when absent) and the enrolment settings.

    :raises ConfigError: one line naming the element and the fix.
    """
    block = _read_auth_block(config_path)
    values: dict[str, Any] = {}

    def bad(tag: str, value: str, expected: str) -> ConfigError:
        return ConfigError(f"{config_path}: <auth><{tag}> = {value!r} is invalid: {expected}")

    def boolean(tag: str, value: str) -> bool:
        if value not in ("yes", "no"):
            raise bad(tag, value, "expected 'yes' or 'no'")
        return value == "yes"

    force: dict[str, Any] = {}
    for child in block if block is not None else ():
        tag, value = child.tag, (child.text or "").strip()
        if tag not in _ELEMENTS:
            raise ConfigError(f"{config_path}: <auth><{tag}> is not a valid element: remove it "
                              f"(valid: {', '.join(sorted(_ELEMENTS))})")
        if tag in ("disabled", "use_source_ip", "purge", "use_password", "ssl_verify_host",
                   "ssl_auto_negotiate", "remote_enrollment"):
            values[tag] = boolean(tag, value)
        elif tag == "port":
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise bad(tag, value, "expected a port number between 1 and 65535")
            values["port"] = int(value)
        elif tag in ("ipv6", "force_insert"):
            boolean(tag, value)
        elif tag == "force_time":
            if not value.lstrip("-").isdigit():
                raise bad(tag, value, "expected a number of seconds")
        elif tag == "ciphers":
            if not value:
                raise bad(tag, value, "expected an OpenSSL cipher list")
            values["ciphers"] = value
        elif tag in ("ssl_agent_ca", "ssl_manager_cert", "ssl_manager_key"):
            if not value:
                raise bad(tag, value, "expected a file path")
            values[tag] = value
        elif tag == "agents":
            for sub in child:
                if sub.tag != "allow_higher_versions":
                    raise ConfigError(f"{config_path}: <auth><agents><{sub.tag}> is not a valid "
                                      "element: remove it (valid: allow_higher_versions)")
                values["allow_higher_versions"] = boolean(
                    "agents><allow_higher_versions", (sub.text or "").strip())
        elif tag == "force":
            force.update(_read_force(child, config_path, boolean))
    extra = section(settings or {}, "enrolment", EXTRA_DEFAULTS)
    for key in ("max_connections", "max_waiting"):
        if isinstance(extra[key], bool) or not isinstance(extra[key], int) or extra[key] < 1:
            raise ConfigError(f"etc/wazuhcluster.yaml: enrolment.{key} = {extra[key]!r} is "
                              "invalid: expected an integer of at least 1")
    for key in ("request_timeout", "forward_deadline"):
        if isinstance(extra[key], bool) or not isinstance(extra[key], int | float) or (
                extra[key] <= 0):
            raise ConfigError(f"etc/wazuhcluster.yaml: enrolment.{key} = {extra[key]!r} is "
                              "invalid: expected a number of seconds greater than 0")
    values.update(extra)

    def absolute(path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(home, path)

    for key in ("ssl_manager_cert", "ssl_manager_key"):
        values[key] = absolute(values.get(key, getattr(AuthConfig(), key)))
    if values.get("ssl_agent_ca"):
        values["ssl_agent_ca"] = absolute(values["ssl_agent_ca"])
        if not os.path.isfile(values["ssl_agent_ca"]):
            raise bad("ssl_agent_ca", values["ssl_agent_ca"],
                      "the file does not exist: give the CA that signs the agents' certificates")
    return AuthConfig(force=ForceOptions(**force), **values)


def _read_force(block: ET.Element, config_path: str, boolean: Any) -> dict[str, Any]:
    force: dict[str, Any] = {}
    for sub in block:
        tag, value = sub.tag, (sub.text or "").strip()
        name = f"force><{tag}"
        if tag not in _FORCE_ELEMENTS:
            raise ConfigError(f"{config_path}: <auth><force><{tag}> is not a valid element: "
                              f"remove it (valid: {', '.join(sorted(_FORCE_ELEMENTS))})")
        if tag in ("enabled", "key_mismatch"):
            force[tag] = boolean(name, value)
        elif tag == "disconnected_time":
            enabled = sub.get("enabled")
            if enabled is None:
                raise ConfigError(f"{config_path}: <auth><force><disconnected_time> needs the "
                                  "attribute enabled='yes' or enabled='no'")
            force["disconnected_time_enabled"] = boolean(f"{name} enabled", enabled)
            if force["disconnected_time_enabled"]:
                seconds = parse_interval(value)
                if seconds is None:
                    raise ConfigError(f"{config_path}: <auth><force><disconnected_time> = "
                                      f"{value!r} is invalid: expected a time such as 1h, 30m, "
                                      "90s or 2d")
                force["disconnected_time"] = seconds
        else:
            seconds = parse_interval(value)
            if seconds is None:
                raise ConfigError(f"{config_path}: <auth><force><{tag}> = {value!r} is "
                                  "invalid: expected a time such as 1h, 30m, 90s or 2d")
            force[tag] = seconds
    return force
