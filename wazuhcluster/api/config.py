"""``HOME/api/configuration/api.yaml``: Wazuh's API configuration keys and defaults.

Only the keys this API acts on are accepted besides Wazuh's other documented top-level keys,
which are read and ignored so that a Wazuh api.yaml can be reused unchanged. Any error stops
start-up with one line naming the file, the key and the fix.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import attrs
import yaml

from wazuhcluster.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "host": "0.0.0.0",
    "port": 55000,
    "https": {"enabled": True, "key": "server.key", "cert": "server.crt", "use_ca": False,
              "ca": "ca.crt", "ssl_protocol": "TLSv1.2", "ssl_ciphers": ""},
    "access": {"max_login_attempts": 50, "block_time": 300, "max_request_per_minute": 300},
    "auth_token_exp_timeout": 900,
    "cors": {"enabled": False, "source_route": "*", "expose_headers": "*", "allow_headers": "*",
             "allow_credentials": False},
    "cache": {"enabled": True, "time": 0.750},
    "max_upload_size": 10485760,
    "intervals": {"request_timeout": 10},
    "logs": {"level": "info", "format": "plain"},
}
#: Wazuh keys that are accepted and not acted on (they concern Wazuh's own daemon).
IGNORED = frozenset({"drop_privileges", "experimental_features", "upload_configuration",
                     "rbac_mode",
                     "metrics"})  # ours, read by wazuhcluster.metrics.config


def api_dir(home: str) -> str:
    """``HOME/api/configuration``."""
    return os.path.join(home, "api", "configuration")


@attrs.frozen
class APIConfig:
    """The validated API configuration of one node."""

    home: str
    host: str
    port: int
    https: bool
    key_path: str
    cert_path: str
    use_ca: bool
    ca_path: str
    max_login_attempts: int
    block_time: int
    max_request_per_minute: int
    auth_token_exp_timeout: int
    cors: Mapping[str, Any]
    cache_enabled: bool
    cache_time: float
    max_upload_size: int
    request_timeout: float

    @property
    def path(self) -> str:
        return os.path.join(api_dir(self.home), "api.yaml")

    @property
    def security_dir(self) -> str:
        return os.path.join(api_dir(self.home), "security")

    @property
    def log_path(self) -> str:
        return os.path.join(self.home, "logs", "api.log")


def _merge(path: str, prefix: str, defaults: dict[str, Any], given: Any) -> dict[str, Any]:
    if not isinstance(given, dict):
        raise ConfigError(f"{path}: {prefix.rstrip('.') or 'the top level'} must be a mapping")
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        name = f"{prefix}{key}"
        if not prefix and key in IGNORED:
            continue
        if key not in defaults:
            raise ConfigError(f"{path}: {name} is not a known setting: remove it (known: "
                              f"{', '.join(sorted(defaults))})")
        default = defaults[key]
        if isinstance(default, dict):
            out[key] = _merge(path, f"{name}.", default, value)
            continue
        if isinstance(default, bool):
            ok = isinstance(value, bool)
            kind = "true or false"
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            kind = "a whole number >= 0"
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            kind = "a number >= 0"
        else:
            ok = isinstance(value, str)
            kind = "a string"
        if not ok:
            raise ConfigError(f"{path}: {name} is {value!r}: set it to {kind}")
        out[key] = value
    return out


def load_api_config(home: str) -> APIConfig:
    """Read ``HOME/api/configuration/api.yaml`` (defaults when it does not exist).

    :raises ConfigError: one line naming the file, the key and the fix.
    """
    path = os.path.join(api_dir(home), "api.yaml")
    data: Any = {}
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f.read())
    except FileNotFoundError:
        data = {}
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror}): make it readable by the "
                          "wazuhcluster user, or remove it") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}: fix the file") from None
    c = _merge(path, "", DEFAULTS, {} if data is None else data)
    if not 1 <= c["port"] <= 65535:
        raise ConfigError(f"{path}: port is {c['port']}: set it to a TCP port (1-65535)")
    ssl_dir = os.path.join(api_dir(home), "ssl")

    def in_ssl(name: str) -> str:
        return name if os.path.isabs(name) else os.path.join(ssl_dir, name)

    https = c["https"]
    access = c["access"]
    return APIConfig(
        home=home, host=c["host"], port=c["port"], https=https["enabled"],
        key_path=in_ssl(https["key"]), cert_path=in_ssl(https["cert"]), use_ca=https["use_ca"],
        ca_path=in_ssl(https["ca"]), max_login_attempts=access["max_login_attempts"],
        block_time=access["block_time"], max_request_per_minute=access["max_request_per_minute"],
        auth_token_exp_timeout=c["auth_token_exp_timeout"], cors=c["cors"],
        cache_enabled=c["cache"]["enabled"], cache_time=float(c["cache"]["time"]),
        max_upload_size=c["max_upload_size"],
        request_timeout=float(c["intervals"]["request_timeout"]))


def check_tls_files(config: APIConfig) -> None:
    """With HTTPS on, the key and certificate must both exist or both be absent (then a
    self-signed pair is made), and ``use_ca`` needs its CA file.

    :raises ConfigError: one line naming the file and the fix.
    """
    if not config.https:
        return
    have_key, have_cert = os.path.exists(config.key_path), os.path.exists(config.cert_path)
    # The half of a self-signed pair left pending by a start killed while making it
    # (wazuhcluster.api.tls.PENDING): completed by the start, not an operator's error.
    have_key = have_key or (have_cert and os.path.exists(config.key_path + ".pending"))
    have_cert = have_cert or (have_key and os.path.exists(config.cert_path + ".pending"))
    if have_key != have_cert:
        missing, key = (config.cert_path, "https.cert") if have_key else (config.key_path,
                                                                          "https.key")
        raise ConfigError(f"{config.path}: {key} {missing} does not exist while its pair does: "
                          "restore it, or remove both to have a self-signed pair made")
    if config.use_ca and not os.path.exists(config.ca_path):
        raise ConfigError(f"{config.path}: https.ca {config.ca_path} does not exist: put the CA "
                          "certificate there or set https.use_ca to false")
