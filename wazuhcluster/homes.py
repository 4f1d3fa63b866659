"""Create Wazuh-style node homes (etc/ossec.conf with a <cluster> block and the item dirs).

Used by the demo, the integration tests and operators setting up a test cluster.
"""

from __future__ import annotations

import os
from xml.sax.saxutils import escape

DEMO_KEY = "demo_key_0123456789abcdefghijklm"  # 32 characters; demo only


def cluster_block(*, node_name: str, node_type: str, key: str, port: int,
                  master_address: str = "127.0.0.1", bind_addr: str = "127.0.0.1",
                  name: str = "wazuh", auth: str | None = None) -> str:
    """An ossec.conf holding one <cluster> block and ``auth``, an ``<auth>`` block (default:
    the agent registration service disabled, so that several nodes share one host)."""
    if auth is None:
        auth = auth_block(None)
    return (
        "<ossec_config>\n  <cluster>\n"
        f"    <name>{escape(name)}</name>\n"
        f"    <node_name>{escape(node_name)}</node_name>\n"
        f"    <node_type>{node_type}</node_type>\n"
        f"    <key>{escape(key)}</key>\n"
        f"    <port>{port}</port>\n"
        f"    <bind_addr>{escape(bind_addr)}</bind_addr>\n"
        f"    <nodes>\n      <node>{escape(master_address)}</node>\n    </nodes>\n"
        "    <hidden>no</hidden>\n    <disabled>no</disabled>\n"
        f"  </cluster>\n{auth}</ossec_config>\n")


def auth_block(port: int | None, extra: str = "") -> str:
    """An ``<auth>`` block: the registration service on ``port``, or disabled when None."""
    if port is None:
        return "  <auth>\n    <disabled>yes</disabled>\n  </auth>\n"
    return f"  <auth>\n    <port>{port}</port>\n{extra}  </auth>\n"


def make_home(path: str, *, node_name: str, node_type: str, key: str, port: int,
              name: str = "wazuh", auth_port: int | None = None, auth_extra: str = "",
              api_port: int | None = None, metrics_port: int | None = None) -> str:
    """Create ``path`` as a node home with its ossec.conf and the cluster item dirs.

    The agent registration service listens on ``auth_port`` (TLS); None disables it. With
    ``api_port``, an api.yaml serving the REST API on 127.0.0.1:api_port (and, with
    ``metrics_port``, Prometheus metrics on 127.0.0.1:metrics_port).
    """
    for sub in ("etc/shared/default", "etc/rules", "etc/decoders", "etc/lists", "logs",
                "queue/cluster", "queue/db", "var/run", "var/multigroups"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    with open(os.path.join(path, "etc", "ossec.conf"), "w", encoding="utf-8") as f:
        f.write(cluster_block(node_name=node_name, node_type=node_type, key=key, port=port,
                              name=name, auth=auth_block(auth_port, auth_extra)))
    if api_port is not None:
        api_dir = os.path.join(path, "api", "configuration")
        os.makedirs(api_dir, exist_ok=True)
        with open(os.path.join(api_dir, "api.yaml"), "w", encoding="utf-8") as f:
            f.write(f"host: 127.0.0.1\nport: {api_port}\n")
            if metrics_port is not None:
                f.write(f"metrics:\n  host: 127.0.0.1\n  port: {metrics_port}\n")
    keys = os.path.join(path, "etc", "client.keys")
    if not os.path.exists(keys):
        open(keys, "w").close()
    return path
