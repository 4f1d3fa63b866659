"""Owner and group of the files a worker receives from its master.

On a real manager the Wazuh daemons run as user ``wazuh`` and must read the rules, decoders,
lists, ``etc/shared/`` and ``client.keys`` a worker receives. Wazuh's own worker gives each
received file the ``wazuh`` user and group and the mode of its cluster.json item
(``permissions``). We do the same; the user and group are set in ``HOME/etc/wazuhcluster.yaml``::

    ownership:
      user: wazuh      # default: wazuh, when that user exists
      group: wazuh     # default: wazuh, when that group exists

A user or group named in the file must exist (start-up stops otherwise). With the defaults, a
machine without a ``wazuh`` user keeps the files owned by the user running wazuhcluster and says
so once at start-up. A process that is not root can only give files its own user and one of its
groups; otherwise ownership is skipped with a start-up warning.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from wazuhcluster.errors import ConfigError
from wazuhcluster.settings import section

DEFAULT_USER = "wazuh"
DEFAULT_GROUP = "wazuh"
_KNOWN = {"user": None, "group": None}


@attrs.frozen
class Ownership:
    """The owner given to received files and the directories created for them."""

    uid: int
    gid: int
    user: str
    group: str


@attrs.frozen
class OwnershipDecision:
    """What :func:`resolve_ownership` decided: an owner to apply, or why none is applied."""

    owner: Ownership | None
    warning: str | None = None


def resolve_ownership(
    settings: Mapping[str, Mapping[str, Any]],
    *,
    euid: int | None = None,
    groups: tuple[int, ...] | None = None,
    getpwnam: Callable[[str], Any] = pwd.getpwnam,
    getgrnam: Callable[[str], Any] = grp.getgrnam,
) -> OwnershipDecision:
    """Decide the owner of received files from the ``ownership`` settings section.

    :raises ConfigError: a user or group named in the settings does not exist, or is not a
        non-empty string.
    """
    values = section(settings, "ownership", _KNOWN)
    for key in ("user", "group"):
        if values[key] is not None and (not isinstance(values[key], str) or not values[key]):
            raise ConfigError(f"etc/wazuhcluster.yaml: ownership.{key} = {values[key]!r} is "
                              "invalid: expected a user or group name")
    euid = os.geteuid() if euid is None else euid
    groups = (os.getegid(), *os.getgroups()) if groups is None else groups
    user_name = values["user"] or DEFAULT_USER
    group_name = values["group"] or DEFAULT_GROUP
    try:
        user = getpwnam(user_name)
    except KeyError:
        if values["user"] is not None:
            raise ConfigError(f"etc/wazuhcluster.yaml: ownership.user = {user_name!r} is not a "
                              "user of this machine: create it or name an existing user") from None
        return OwnershipDecision(None, (
            f"user {user_name!r} does not exist: received files keep the owner of this process "
            f"(uid {euid}); set ownership.user and ownership.group in etc/wazuhcluster.yaml"))
    try:
        group = getgrnam(group_name)
    except KeyError:
        if values["group"] is not None:
            raise ConfigError(f"etc/wazuhcluster.yaml: ownership.group = {group_name!r} is not "
                              "a group of this machine: create it or name an existing group"
                              ) from None
        return OwnershipDecision(None, (
            f"group {group_name!r} does not exist: received files keep the group of this "
            "process; set ownership.group in etc/wazuhcluster.yaml"))
    owner = Ownership(int(user.pw_uid), int(group.gr_gid), user_name, group_name)
    if euid != 0 and (owner.uid != euid or owner.gid not in groups):
        return OwnershipDecision(None, (
            f"running as uid {euid}, which cannot give files to {user_name}:{group_name}: "
            "received files keep the owner of this process; run as root or as that user"))
    return OwnershipDecision(owner)
