"""``wazuhcluster-users``: the REST API's users, kept on the master.

Examples::

    wazuhcluster-users --home /var/ossec add alice --role administrator   (password on stdin,
                                                                           or prompted)
    wazuhcluster-users --home /var/ossec passwd alice
    wazuhcluster-users --home /var/ossec delete alice
    wazuhcluster-users --home /var/ossec list

There is no default user and no default password. Users work at every node: a login at a
worker is checked by the master through the Distributed API.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from wazuhcluster.api.users import ROLES, UserError, UserStore
from wazuhcluster.config import ClusterDisabled, Role, load_config
from wazuhcluster.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wazuhcluster-users",
                                     description="Users of the wazuhcluster REST API.")
    parser.add_argument("--home", required=True, help="the master's home directory")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add a user (password read from stdin or prompted)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    passwd = sub.add_parser("passwd", help="change a user's password (its tokens stop working)")
    passwd.add_argument("name")
    delete = sub.add_parser("delete", help="delete a user")
    delete.add_argument("name")
    sub.add_parser("list", help="list the users")
    return parser


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != first:
            raise UserError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _check_master(home: str) -> None:
    try:
        config = load_config(home)
    except (ConfigError, ClusterDisabled):
        return  # a home without a cluster block: a standalone manager keeps its own users
    if config.role is not Role.MASTER:
        raise UserError(f"{home} is a worker's home: users live on the master, run this "
                        "with the master's --home")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    store = UserStore(args.home)
    try:
        _check_master(args.home)
        if args.command == "add":
            user_id = store.add(args.name, _read_password(), args.role)
            print(f"User {args.name} added (id {user_id}, role {args.role}).")
        elif args.command == "passwd":
            store.passwd(args.name, _read_password())
            print(f"Password of {args.name} changed; its tokens no longer work.")
        elif args.command == "delete":
            store.delete(args.name)
            print(f"User {args.name} deleted.")
        else:
            for user in store.list():
                print(f"{user['id']:>4}  {user['username']:<24} {user['role']}")
    except UserError as e:
        sys.stderr.write(f"wazuhcluster-users: {e}\n")
        raise SystemExit(1) from None
    except OSError as e:
        sys.stderr.write(f"wazuhcluster-users: {e.filename}: {e.strerror}\n")
        raise SystemExit(1) from None
