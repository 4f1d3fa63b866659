"""The link-security extensions provide the role nodes' extension interfaces."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from wazuhcluster.interfaces import ILocalExtension, IMasterExtension, IWorkerExtension
from wazuhcluster.tls.feature import MasterLinkSecurity, ReloadCommand, WorkerLinkSecurity


class InterfaceTests(SynchronousTestCase):
    def test_extensions(self) -> None:
        security: Any = object()
        self.assertTrue(verifyObject(IMasterExtension, MasterLinkSecurity(None, security)))
        self.assertTrue(verifyObject(IWorkerExtension, WorkerLinkSecurity(None, security)))
        self.assertTrue(verifyObject(ILocalExtension, ReloadCommand(security)))
