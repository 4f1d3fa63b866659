"""The local API socket on a real reactor: permissions, and a real local client."""

from __future__ import annotations

import json
import os
import stat

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.support import node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.localapi.client import local_request
from wazuhcluster.localapi.factory import LocalAPIFactory, LocalSocketService
from wazuhcluster.master.node import MasterNode


class LocalSocketTests(TestCase):
    """LocalSocketService listening on a real UNIX socket."""

    timeout = 15

    async def test_permissions_and_get_config(self) -> None:
        """The directory is 0770, the socket 0660, and get_config answers without the key."""
        config = node_config(short_tempdir(self))
        node = MasterNode(config, reactor, SynchronousRunner())
        service = LocalSocketService(reactor, config.local_socket_path, LocalAPIFactory(node))
        service.startService()
        self.addCleanup(service.stopService)
        assert service.when_listening is not None
        await service.when_listening
        directory = os.path.dirname(config.local_socket_path)
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o770)
        self.assertEqual(stat.S_IMODE(os.stat(config.local_socket_path).st_mode), 0o660)
        answer = json.loads(await local_request(reactor, config.local_socket_path,
                                                b"get_config", b""))
        self.assertEqual((answer["node_name"], answer["key"]), ("master-node", "********"))
        await Deferred.fromCoroutine(_settle())


async def _settle() -> None:
    """Let the server side see the client's disconnect before the test ends."""
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0, lambda: None)
