"""Tests for wazuhcluster.ownership (who owns the files a worker receives)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.errors import ConfigError
from wazuhcluster.ownership import Ownership, resolve_ownership

USERS = {"wazuh": SimpleNamespace(pw_uid=110), "ops": SimpleNamespace(pw_uid=120)}
GROUPS = {"wazuh": SimpleNamespace(gr_gid=115), "ops": SimpleNamespace(gr_gid=125)}


def resolve(settings: dict[str, Any], *, euid: int = 0, groups: tuple[int, ...] = (0,),
            users: dict[str, Any] = USERS, groups_db: dict[str, Any] = GROUPS) -> Any:
    return resolve_ownership(settings, euid=euid, groups=groups,
                             getpwnam=users.__getitem__, getgrnam=groups_db.__getitem__)


class ResolveOwnershipTests(SynchronousTestCase):
    """Defaults, explicit names, missing users and non-root processes."""

    def test_default_is_wazuh_when_it_exists(self) -> None:
        decision = resolve({})
        self.assertEqual(decision.owner, Ownership(110, 115, "wazuh", "wazuh"))
        self.assertIsNone(decision.warning)

    def test_configured_user_and_group(self) -> None:
        decision = resolve({"ownership": {"user": "ops", "group": "ops"}})
        self.assertEqual(decision.owner, Ownership(120, 125, "ops", "ops"))

    def test_default_user_missing_is_a_warning_not_an_error(self) -> None:
        decision = resolve({}, users={})
        self.assertIsNone(decision.owner)
        self.assertIn("user 'wazuh' does not exist", decision.warning)
        self.assertIn("ownership.user", decision.warning)

    def test_default_group_missing_is_a_warning(self) -> None:
        decision = resolve({}, groups_db={})
        self.assertIsNone(decision.owner)
        self.assertIn("group 'wazuh' does not exist", decision.warning)

    def test_configured_user_missing_stops_start_up(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            resolve({"ownership": {"user": "nobody-here"}})
        self.assertIn("ownership.user = 'nobody-here'", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))

    def test_configured_group_missing_stops_start_up(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            resolve({"ownership": {"group": "nogroup-here"}})
        self.assertIn("ownership.group", str(caught.exception))

    def test_bad_value_and_unknown_key(self) -> None:
        with self.assertRaises(ConfigError):
            resolve({"ownership": {"user": 5}})
        with self.assertRaises(ConfigError):
            resolve({"ownership": {"mode": "0640"}})

    def test_non_root_running_as_the_owner_applies_it(self) -> None:
        decision = resolve({}, euid=110, groups=(115,))
        self.assertEqual(decision.owner, Ownership(110, 115, "wazuh", "wazuh"))

    def test_non_root_other_user_skips_with_a_warning(self) -> None:
        decision = resolve({}, euid=1000, groups=(1000,))
        self.assertIsNone(decision.owner)
        self.assertIn("running as uid 1000", decision.warning)
