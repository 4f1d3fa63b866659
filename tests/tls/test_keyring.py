"""Key rotation with an overlap window, at the codec level: three nodes rolled one by one."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.protocol.crypto import DecryptionError, FernetCodec
from wazuhcluster.tls.keyring import KeyRing, LinkCodec, key_id

K1 = b"A" * 32
K2 = b"B" * 32


class Link:
    """Both ends of one connection: a and b, each with its own codec."""

    def __init__(self, a: KeyRing, b: KeyRing) -> None:
        self.a, self.b = LinkCodec(a), LinkCodec(b)

    def exchange(self) -> None:
        """wzc_keys both ways."""
        self.a.set_peer_ids(self.b.ring.ids())
        self.b.set_peer_ids(self.a.ring.ids())

    def works(self) -> bool:
        try:
            return (self.b.decrypt(self.a.encrypt(b"x")) == b"x"
                    and self.a.decrypt(self.b.encrypt(b"y")) == b"y")
        except DecryptionError:
            return False


class KeyRingTests(SynchronousTestCase):
    def test_key_id_is_not_the_key(self) -> None:
        self.assertEqual(len(key_id(K1)), 16)
        self.assertNotIn(key_id(K1), K1.decode())
        self.assertNotEqual(key_id(K1), key_id(K2))

    def test_rotate_and_expire(self) -> None:
        ring = KeyRing(K1)
        self.assertFalse(ring.rotate(K1, 0.0, 10))
        self.assertTrue(ring.rotate(K2, 100.0, 10))
        self.assertEqual(ring.ids(), [key_id(K2), key_id(K1)])
        self.assertEqual(ring.next_expiry(), 110.0)
        self.assertFalse(ring.expire(109.0))
        self.assertTrue(ring.expire(110.0))
        self.assertEqual(ring.ids(), [key_id(K2)])

    def test_rolling_rotation_never_breaks_a_link(self) -> None:
        """Master and two workers get K2 one at a time; every link works at every step,
        new links too, and after the overlap everybody sends with K2 only."""
        m, w1, w2 = KeyRing(K1), KeyRing(K1), KeyRing(K1)
        links = [Link(w1, m), Link(w2, m)]
        for link in links:
            link.exchange()
        now = 0.0
        for ring in (w1, m, w2):
            now += 1
            ring.rotate(K2, now, 60)
            for link in links:
                link.exchange()  # the reloaded node announces its keys
                self.assertTrue(link.works())
            fresh = [Link(w1, m), Link(w2, m)]  # a reconnect during the rollout
            for link in fresh:
                self.assertTrue(link.works())
        for link in links:
            self.assertEqual(link.a.send_key().id, key_id(K2))
            self.assertEqual(link.b.send_key().id, key_id(K2))
        for ring in (m, w1, w2):
            ring.expire(now + 60)
        for link in links:
            self.assertTrue(link.works())
        self.assertEqual(m.ids(), [key_id(K2)])

    def test_peer_without_new_key_keeps_old(self) -> None:
        """A rolled node still sends K1 to a peer that only holds K1."""
        m, w1 = KeyRing(K1), KeyRing(K1)
        w1.rotate(K2, 0, 60)
        link = Link(w1, m)
        self.assertTrue(link.works())  # before any exchange: oldest key
        link.exchange()
        self.assertEqual(link.a.send_key().id, key_id(K1))
        self.assertTrue(link.works())

    def test_unknown_key_refused(self) -> None:
        codec = LinkCodec(KeyRing(K1))
        with self.assertRaises(DecryptionError):
            codec.decrypt(FernetCodec(K2).encrypt(b"secret"))

    def test_plain_switch_per_direction(self) -> None:
        codec = LinkCodec(KeyRing(K1))
        token = codec.encrypt(b"payload")
        self.assertNotEqual(token, b"payload")
        codec.plain_out = True
        self.assertEqual(codec.encrypt(b"payload"), b"payload")
        self.assertEqual(codec.decrypt(token), b"payload")  # receive side still Fernet
        codec.plain_in = True
        self.assertEqual(codec.decrypt(b"raw"), b"raw")
