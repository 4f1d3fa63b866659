"""tls.heap: glibc keeps freed MiB-size buffers in the heap once a TLS link is configured."""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Any

import attrs
import yaml
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.support import node_config, short_tempdir
from tests.tls.pki import shared_pki
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.master.service import make_master_service
from wazuhcluster.settings import load_settings
from wazuhcluster.tls import feature, heap
from wazuhcluster.worker.service import make_worker_service


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def mmapped_regions() -> int | None:
    """glibc's count of separately mapped allocations (mallinfo2().hblks), if available."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = MallInfo2
    return int(mallinfo2().hblks)


class HeapTests(SynchronousTestCase):
    def test_big_buffers_come_from_the_heap(self) -> None:
        """After keep_freed_buffers, a 2 MiB buffer is not mapped on its own."""
        if platform.libc_ver()[0] != "glibc" or mmapped_regions() is None:
            raise self.skipTest("glibc with mallinfo2 only")
        self.assertTrue(heap.keep_freed_buffers())
        self.assertEqual(heap.applied(), (heap.MMAP_THRESHOLD, heap.TRIM_THRESHOLD))
        before = mmapped_regions()
        buffer = bytearray(2 * 1024 * 1024)
        self.assertEqual(mmapped_regions(), before)
        del buffer
        self.assertTrue(heap.keep_freed_buffers())  # a second call changes nothing


class InstallTests(SynchronousTestCase):
    """The role nodes set the heap thresholds when TLS is on, and only then."""

    def setUp(self) -> None:
        self.calls: list[Any] = []
        self.patch(feature, "keep_freed_buffers", lambda: self.calls.append(True))

    def config(self, name: str, role: str, mode: str) -> Any:
        config = node_config(short_tempdir(self), node_name=name, role=role)
        shared_pki().write_node(os.path.join(config.home, "etc", "certs"),
                                "master" if role == "master" else "w1")
        section = {"mode": mode, "ca": "etc/certs/ca.pem", "cert": "etc/certs/node.pem",
                   "key": "etc/certs/node.key"}
        with open(os.path.join(config.home, "etc", "wazuhcluster.yaml"), "w") as f:
            yaml.safe_dump({"tls": section}, f)
        return attrs.evolve(config, settings=load_settings(config.home))

    def test_tls_on(self) -> None:
        reactor = MemoryReactorClock()
        make_master_service(self.config("master", "master", "prefer"), reactor,
                            SynchronousRunner())
        make_worker_service(self.config("w1", "worker", "require"), reactor,
                            SynchronousRunner())
        self.assertEqual(self.calls, [True, True])

    def test_tls_off(self) -> None:
        reactor = MemoryReactorClock()
        make_master_service(self.config("master", "master", "off"), reactor,
                            SynchronousRunner())
        make_worker_service(self.config("w1", "worker", "off"), reactor, SynchronousRunner())
        self.assertEqual(self.calls, [])
