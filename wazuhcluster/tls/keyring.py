"""Cluster keys with an overlap window, and the per-connection payload codec.

A node holds its current cluster key and, for ``tls.key_overlap`` seconds after a reload
replaced it, the previous ones. It *accepts* a payload under any key it holds and *sends* under
the newest key the peer has said it holds (``wzc_keys``), so nodes can get the new key one by
one without a link ever failing:

* a new link starts with the oldest key we hold (a peer not yet rolled still has it); the
  accepting side answers with the key the first message came in;
* after ``wzc_caps``, and after every reload, each side tells the other which keys it holds
  (key ids: HMAC-SHA256 of a fixed label under the key, 16 hex digits; the message itself is
  encrypted, so only key holders see them), and both move to the newest common key.

Between two of our nodes on a TLS link the Fernet layer is switched off per direction
(``plain_out`` / ``plain_in``), see :mod:`wazuhcluster.tls.feature`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

import attrs

from wazuhcluster.protocol.crypto import DecryptionError, FernetCodec


def key_id(key: bytes) -> str:
    """A public identifier of ``key`` (not the key, and not a plain hash of it)."""
    return hmac.new(key, b"wazuhcluster key id", hashlib.sha256).hexdigest()[:16]


@attrs.frozen
class RingKey:
    """One key the node holds."""

    id: str
    codec: FernetCodec = attrs.field(eq=False)
    expires: float | None = None  # None: the current key


class KeyRing:
    """The keys a node holds, newest first.

    :param key: the current cluster key (``<cluster><key>``).
    """

    def __init__(self, key: bytes) -> None:
        self.keys: tuple[RingKey, ...] = (RingKey(key_id(key), FernetCodec(key)),)

    @property
    def current_id(self) -> str:
        """Id of the key we send with by preference."""
        return self.keys[0].id

    def ids(self) -> list[str]:
        """Ids of every key held, newest first."""
        return [k.id for k in self.keys]

    def rotate(self, key: bytes, now: float, overlap: float) -> bool:
        """Make ``key`` current; the others stay accepted until ``now + overlap``.

        :returns: True if the key changed.
        """
        new_id = key_id(key)
        if new_id == self.current_id:
            return False
        kept = tuple(attrs.evolve(k, expires=k.expires if k.expires is not None
                                  else now + overlap)
                     for k in self.keys if k.id != new_id)
        self.keys = (RingKey(new_id, FernetCodec(key)), *kept)
        self.expire(now)
        return True

    def expire(self, now: float) -> bool:
        """Forget keys whose overlap ended; True if any was forgotten."""
        kept = tuple(k for k in self.keys if k.expires is None or k.expires > now)
        changed = len(kept) != len(self.keys)
        self.keys = kept
        return changed

    def next_expiry(self) -> float | None:
        """When the next old key will be forgotten."""
        times = [k.expires for k in self.keys if k.expires is not None]
        return min(times) if times else None


class LinkCodec:
    """Encrypts and decrypts the payloads of one connection (ClusterProtocol's ``codec``).

    Thread-safe enough for the protocol's use: at most one encryption and one decryption of
    the connection run at a time, and the fields they read are replaced, not mutated.
    """

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self.peer_ids: frozenset[str] | None = None  # from the peer's wzc_keys
        self.first_id: str | None = None  # key of the first payload received
        self.last_ok: str | None = None
        self.plain_in = False  # Fernet switched off for payloads we receive
        self.plain_out = False  # ... and for payloads we send

    def send_key(self) -> RingKey:
        """The key the next payload is sent with."""
        keys = self.ring.keys
        if self.peer_ids is not None:
            for k in keys:
                if k.id in self.peer_ids:
                    return k
        if self.first_id is not None:
            for k in keys:
                if k.id == self.first_id:
                    return k
        return keys[-1]

    def set_peer_ids(self, ids: Iterable[str]) -> None:
        """The peer told us which keys it holds."""
        self.peer_ids = frozenset(ids)

    def encrypt(self, data: bytes) -> bytes:
        """Payload as it goes on the wire."""
        if self.plain_out:
            return data
        return self.send_key().codec.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        """Plaintext of a received payload; :class:`DecryptionError` if no key fits."""
        if self.plain_in:
            return token
        keys = self.ring.keys
        ordered = sorted(keys, key=lambda k: k.id != self.last_ok)
        error: DecryptionError | None = None
        for k in ordered:
            try:
                plaintext = k.codec.decrypt(token)
            except DecryptionError as e:
                error = error or e
                continue
            self.last_ok = k.id
            if self.first_id is None:
                self.first_id = k.id
            return plaintext
        raise error or DecryptionError("no cluster key")
