"""JWT bearer tokens: ES512 with a key pair per node, as Wazuh's API signs them.

The key pair lives in ``HOME/api/configuration/security/`` and is made at first start. A token
carries the user name (``sub``), its roles (``rbac_roles``) and the user's token generation
(``gen``): revoking a user's tokens bumps the generation on the master, which every node
checks through the Distributed API.
"""

from __future__ import annotations

import os
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wazuhcluster.api.files import write_atomic

ISSUER = "wazuh"
AUDIENCE = "Wazuh API REST"
ALGORITHM = "ES512"


class InvalidToken(Exception):
    """The bearer token is malformed, badly signed, expired or not for this API."""


def load_or_create_keypair(security_dir: str) -> tuple[bytes, bytes]:
    """The node's (private PEM, public PEM), created on first use. Blocking."""
    private_path = os.path.join(security_dir, "private_key.pem")
    public_path = os.path.join(security_dir, "public_key.pem")
    if os.path.exists(private_path) and os.path.exists(public_path):
        with open(private_path, "rb") as f, open(public_path, "rb") as g:
            return f.read(), g.read()
    key = ec.generate_private_key(ec.SECP521R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    os.makedirs(security_dir, mode=0o750, exist_ok=True)
    write_atomic(private_path, private, mode=0o600)
    write_atomic(public_path, public, mode=0o640)
    return private, public


class TokenCodec:
    """Issues and checks this node's tokens. ``now`` is injected (seconds, the API clock)."""

    def __init__(self, private_pem: bytes, public_pem: bytes) -> None:
        self._private = serialization.load_pem_private_key(private_pem, password=None)
        self._public = serialization.load_pem_public_key(public_pem)

    def issue(self, user: str, roles: list[int], generation: int, now: float,
              lifetime: int) -> str:
        ts = int(now)
        payload = {"iss": ISSUER, "aud": AUDIENCE, "nbf": ts, "exp": ts + lifetime, "sub": user,
                   "run_as": False, "rbac_roles": roles, "rbac_mode": "white",
                   "gen": generation}
        return jwt.encode(payload, self._private, algorithm=ALGORITHM)  # type: ignore[arg-type]

    def decode(self, token: str, now: float) -> dict[str, Any]:
        """The claims of a valid token; :raises InvalidToken: otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._public, algorithms=[ALGORITHM], audience=AUDIENCE,  # type: ignore[arg-type]
                issuer=ISSUER, options={"verify_exp": False, "verify_nbf": False,
                                        "require": ["exp", "nbf", "sub"]})
        except jwt.PyJWTError as e:
            raise InvalidToken(str(e)) from None
        # Time checks against the injected clock, not the wall clock.
        if not isinstance(claims.get("exp"), int) or now >= claims["exp"]:
            raise InvalidToken("expired")
        if not isinstance(claims.get("nbf"), int) or now + 1 < claims["nbf"]:
            raise InvalidToken("not yet valid")
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("gen"), int):
            raise InvalidToken("missing claims")
        return claims
