"""``wazuhcluster-certs``: a CA and per-node certificates for the TLS cluster link.

::

    wazuhcluster-certs --dir DIR init-ca [--days N]
    wazuhcluster-certs --dir DIR issue NODE_NAME [--ip IP]... [--dns NAME]... [--days N]
    wazuhcluster-certs --dir DIR revoke NODE_NAME [--days N]

Files in DIR: ``ca.pem`` / ``ca.key`` (the CA), ``NODE_NAME.pem`` / ``NODE_NAME.key`` per node,
``crl.pem`` (revoked certificates). Private keys are written with mode 0600.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from cryptography import x509

from wazuhcluster.config import valid_name
from wazuhcluster.tls import certs


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="wazuhcluster-certs",
        description="Make a CA and node certificates for the wazuhcluster TLS cluster link.")
    parser.add_argument("--dir", required=True, help="where the CA and certificates live")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init-ca", help="create the CA (ca.pem, ca.key)")
    init.add_argument("--days", type=int, default=3650, help="validity (default 3650)")
    init.add_argument("--name", default="wazuhcluster CA", help="the CA's common name")
    node = sub.add_parser("issue", help="issue NODE_NAME.pem / NODE_NAME.key")
    node.add_argument("node_name", metavar="NODE_NAME", help="the node's <node_name>")
    node.add_argument("--ip", action="append", default=[],
                      help="an IP address workers dial to reach this node (repeatable)")
    node.add_argument("--dns", action="append", default=[],
                      help="a host name workers dial to reach this node (repeatable)")
    node.add_argument("--days", type=int, default=825, help="validity (default 825)")
    revoke = sub.add_parser("revoke", help="add NODE_NAME's certificate to crl.pem")
    revoke.add_argument("node_name", metavar="NODE_NAME")
    revoke.add_argument("--days", type=int, default=30,
                        help="days until the CRL's next update (default 30)")
    return parser


class CertsError(Exception):
    """A problem to report on one line."""


def run(args: argparse.Namespace) -> str:
    """Do what ``args`` says; return the line to print."""
    directory = args.dir
    if getattr(args, "days", 1) < 1:
        raise CertsError("--days must be at least 1")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    ca_pem, ca_key = os.path.join(directory, certs.CA_CERT), os.path.join(directory, certs.CA_KEY)
    if args.command == "init-ca":
        if os.path.exists(ca_pem) or os.path.exists(ca_key):
            raise CertsError(f"{ca_pem} already exists: remove it first, or use another --dir")
        cert, key = certs.make_ca(args.name, args.days)
        certs.write_private(ca_key, key)
        certs.write_public(ca_pem, certs.cert_pem(cert))
        return f"CA written to {ca_pem} (key {ca_key}, mode 0600)"
    try:
        ca_cert, ca_private = certs.load_cert(ca_pem), certs.load_key(ca_key)
    except FileNotFoundError:
        raise CertsError(f"no CA in {directory}: run `wazuhcluster-certs --dir {directory} "
                         "init-ca` first") from None
    except ValueError as e:
        raise CertsError(f"cannot read the CA in {directory}: {e}") from None
    name = args.node_name
    if not valid_name(name) or "/" in name:
        raise CertsError(f"{name!r} is not a valid node name")
    node_pem = os.path.join(directory, f"{name}.pem")
    if args.command == "issue":
        for ip in args.ip:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise CertsError(f"--ip {ip!r} is not an IP address") from None
        cert, key = certs.issue(ca_cert, ca_private, name, ips=args.ip, dns=args.dns,
                                days=args.days)
        node_key = os.path.join(directory, f"{name}.key")
        certs.write_private(node_key, key)
        certs.write_public(node_pem, certs.cert_pem(cert))
        return (f"certificate for {name} written to {node_pem} (key {node_key}, mode 0600; "
                f"serial {cert.serial_number:x})")
    # revoke
    try:
        serial = certs.load_cert(node_pem).serial_number
    except FileNotFoundError:
        raise CertsError(f"{node_pem} does not exist: nothing to revoke") from None
    crl_path = os.path.join(directory, certs.CRL_FILE)
    serials = {serial}
    if os.path.exists(crl_path):
        with open(crl_path, "rb") as f:
            serials |= {r.serial_number for r in x509.load_pem_x509_crl(f.read())}
    certs.write_public(crl_path, certs.crl_pem(certs.make_crl(ca_cert, ca_private, serials,
                                                              args.days)))
    return (f"{name} (serial {serial:x}) revoked in {crl_path}; copy it to the nodes and "
            "reload them (wazuhcluster-control --home DIR --reload)")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = build_parser().parse_args(argv)
    try:
        line = run(args)
    except (CertsError, OSError) as e:
        sys.stderr.write(f"wazuhcluster-certs: {e}\n")
        raise SystemExit(1) from None
    sys.stdout.write(line + "\n")
