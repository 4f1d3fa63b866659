"""API users, kept on the master in ``HOME/api/configuration/security/users.json``.

Passwords are hashed with scrypt (memory-hard: n=2**14, r=8, p=1, 16 MiB per hash) and a
random 16-byte salt. There is no default user and no default password: operators add users
with ``wazuhcluster-users``. Every call here blocks (file I/O, scrypt): run it off the reactor.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from typing import Any

from wazuhcluster.api.files import write_atomic

ROLES = ("administrator", "readonly")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
USERNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 64


class UserError(Exception):
    """A refused user operation (unknown user, bad name, weak password, ...)."""


def users_path(home: str) -> str:
    return os.path.join(home, "api", "configuration", "security", "users.json")


def _hash(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=128 * r * (n + p + 2) + 1024 * 1024, dklen=32)


def check_password_strength(password: str) -> None:
    """Wazuh's rule: 8-64 characters with upper and lower case, a digit and a symbol."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD or not (
            re.search(r"[a-z]", password) and re.search(r"[A-Z]", password)
            and re.search(r"\d", password) and re.search(r"[^A-Za-z0-9]", password)):
        raise UserError("the password must be 8 to 64 characters long with at least one "
                        "upper-case and one lower-case letter, a digit and a symbol")


class UserStore:
    """The users file of one home. Reads the file on each call (it is small and changed by
    the CLI while the node runs)."""

    def __init__(self, home: str) -> None:
        self.path = users_path(home)

    def _load(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {"users": {}}
        if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
            raise UserError(f"{self.path} is not a users file: restore it or remove it")
        return data

    def _save(self, data: dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o750, exist_ok=True)
        write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True).encode(), mode=0o600)

    def list(self) -> list[dict[str, Any]]:
        """Users as ``{"id", "username", "role"}``, by id."""
        users = self._load()["users"]
        return sorted(({"id": u["id"], "username": name, "role": u["role"]}
                       for name, u in users.items()), key=lambda u: u["id"])

    def get(self, name: str) -> dict[str, Any] | None:
        user = self._load()["users"].get(name)
        if user is None:
            return None
        return {"id": user["id"], "username": name, "role": user["role"],
                "generation": user.get("generation", 0)}

    def add(self, name: str, password: str, role: str) -> int:
        if not USERNAME.match(name):
            raise UserError(f"{name!r} is not a valid user name: use 1-64 letters, digits, "
                            "'_', '.' or '-'")
        if role not in ROLES:
            raise UserError(f"role {role!r} is unknown: use one of {', '.join(ROLES)}")
        check_password_strength(password)
        data = self._load()
        if name in data["users"]:
            raise UserError(f"user {name!r} already exists: use passwd to change its password")
        new_id = max((u["id"] for u in data["users"].values()), default=0) + 1
        data["users"][name] = {"id": new_id, "role": role, "generation": 0,
                               **self._new_hash(password)}
        self._save(data)
        return int(new_id)

    def passwd(self, name: str, password: str) -> None:
        check_password_strength(password)
        data = self._load()
        user = data["users"].get(name)
        if user is None:
            raise UserError(f"user {name!r} does not exist")
        user.update(self._new_hash(password))
        user["generation"] = user.get("generation", 0) + 1  # old tokens stop working
        self._save(data)

    def delete(self, name: str) -> None:
        data = self._load()
        if data["users"].pop(name, None) is None:
            raise UserError(f"user {name!r} does not exist")
        self._save(data)

    def revoke(self, name: str) -> int:
        """Invalidate every token of ``name`` issued so far; return the new generation."""
        data = self._load()
        user = data["users"].get(name)
        if user is None:
            raise UserError(f"user {name!r} does not exist")
        user["generation"] = user.get("generation", 0) + 1
        self._save(data)
        return int(user["generation"])

    def check(self, name: str, password: str) -> bool:
        """True when ``password`` is the user's (constant-time compare)."""
        user = self._load()["users"].get(name)
        if user is None:
            # Spend the same time as for a real user so names cannot be probed by timing.
            _hash(password, b"\0" * 16, SCRYPT_N, SCRYPT_R, SCRYPT_P)
            return False
        kdf = user["kdf"]
        digest = _hash(password, base64.b64decode(kdf["salt"]), kdf["n"], kdf["r"], kdf["p"])
        return hmac.compare_digest(digest, base64.b64decode(user["hash"]))

    @staticmethod
    def _new_hash(password: str) -> dict[str, Any]:
        salt = secrets.token_bytes(16)
        digest = _hash(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return {"kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                        "salt": base64.b64encode(salt).decode()},
                "hash": base64.b64encode(digest).decode()}


def random_password() -> str:
    """A strong random password that passes check_password_strength."""
    while True:
        candidate = secrets.token_urlsafe(18) + "a1A."
        try:
            check_password_strength(candidate)
        except UserError:
            continue
        return candidate
