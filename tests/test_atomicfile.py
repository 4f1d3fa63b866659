"""write_atomic: content replaced whole, mode set from the start, nothing left on failure."""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.atomicfile import write_atomic


class WriteAtomicTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "client.keys")

    def test_replaces_with_mode(self) -> None:
        with open(self.path, "wb") as f:
            f.write(b"old")
        write_atomic(self.path, b"new", 0o600)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"new")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(os.listdir(self.dir), ["client.keys"])

    def test_failure_leaves_old_file_and_no_temp(self) -> None:
        with open(self.path, "wb") as f:
            f.write(b"old")
        self.assertRaises(TypeError, write_atomic, self.path, "not bytes", 0o640)  # type: ignore[arg-type]
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"old")
        self.assertEqual(os.listdir(self.dir), ["client.keys"])
