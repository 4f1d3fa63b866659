"""Access to the captured real Wazuh 4.7.5 session in the repository's test data.

The decoded summary (``session.decoded.jsonl``) truncates payload previews to 400 characters,
so full payloads are decrypted here from the raw streams (20-byte ``!2I12s`` headers, Fernet
payloads, fragments joined by counter).
"""

from __future__ import annotations

import base64
import json
import os
import struct

from cryptography.fernet import Fernet

#: Where the captured session lives (tests/data/wazuh-4.7.5, origin in tests/data/README.md).
SESSION_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "wazuh-4.7.5")
_KEY = base64.b64encode(b"abcdefghijklmnopqrstuvwxyz012345")
_HEADER = struct.Struct("!2I12s")


def _path(name: str) -> str:
    """Path of a session file of the captured session."""
    return os.path.join(SESSION_DIR, name)


def decoded_messages() -> list[dict[str, object]]:
    """Every line of ``session.decoded.jsonl``."""
    with open(_path("session.decoded.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def raw_messages(direction: str) -> list[tuple[int, str, bytes]]:
    """``(counter, command, plaintext)`` of every message of ``w2m`` or ``m2w``."""
    with open(_path(f"session.{direction}.bin"), "rb") as f:
        data = f.read()
    fernet = Fernet(_KEY)
    pending: dict[int, bytes] = {}
    messages = []
    offset = 0
    while offset < len(data):
        counter, length, field = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        pending[counter] = pending.get(counter, b"") + data[offset:offset + length]
        offset += length
        if field.endswith(b"d"):
            continue
        command = field[:11].split(b" ")[0].decode("ascii")
        messages.append((counter, command, fernet.decrypt(pending.pop(counter))))
    return messages


def long_strings(direction: str) -> list[bytes]:
    """Full contents of the long strings sent in one direction (``str_upd`` minus the id)."""
    return [payload.split(b" ", 1)[1] for _, command, payload in raw_messages(direction)
            if command == "str_upd"]
