"""The test bed's network: one network namespace per node, joined by veth pairs to a bridge.

The bridge lives in a namespace of its own (``wzb-<pid>-<n>-sw``), so the host's own namespace has
no interface and no route on the bed's subnet: nothing the bed does can address anything outside
the box. Cutting a node's link (``ip link set ... down`` on its bridge port) drops its frames
silently, which is what a dead switch port or a half-open partition looks like: no RST, no FIN.

Where namespaces cannot be made (not root, no ``ip``), :class:`LoopbackBed` gives every node its
own 127.0.0.x address instead; links can then not be cut, and the bed says so.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

#: The bed's subnet (inside the bed's namespaces only).
SUBNET_PREFIX = "10.213"
BRIDGE = "wzcbr0"
_beds = itertools.count(1)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def namespaces_available() -> bool:
    """True when this process may create network namespaces (root with iproute2)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"wzb-{os.getpid()}-probe"
    if _ip("netns", "add", probe, check=False).returncode != 0:
        return False
    _ip("netns", "del", probe, check=False)
    return True


class NetnsBed:
    """Nodes in network namespaces ``wzb-<pid>-<bed>-<i>`` on 10.213.0.0/16 behind one bridge.

    Every bed has its own switch namespace, so beds running at once (two test processes) are
    separate networks even though they use the same addresses.
    """

    kind = "netns"

    def __init__(self) -> None:
        self.nodes: dict[str, int] = {}
        self._created = False
        self.tag = f"wzb-{os.getpid()}-{next(_beds)}"
        self.switch = f"{self.tag}-sw"

    def _ns(self, index: int) -> str:
        return f"{self.tag}-{index}"

    def create(self, names: list[str]) -> None:
        """Make the switch namespace, its bridge, and one namespace + veth per node."""
        self.destroy_leftovers()
        _ip("netns", "add", self.switch)
        self._created = True
        _ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", self.switch, "link", "set", BRIDGE, "up")
        for index, name in enumerate(names, start=1):
            self.add(name, index)

    def add(self, name: str, index: int) -> None:
        """One node namespace, linked to the bridge, with its address and loopback up."""
        ns = self._ns(index)
        _ip("netns", "add", ns)
        port = f"vp{index}"
        _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", ns)
        _ip("-n", self.switch, "link", "set", port, "master", BRIDGE)
        _ip("-n", self.switch, "link", "set", port, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{self._address(index)}/16", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        self.nodes[name] = index

    @staticmethod
    def _address(index: int) -> str:
        return f"{SUBNET_PREFIX}.{index // 250}.{index % 250 + 1}"

    def address(self, name: str) -> str:
        """The node's address on the bed."""
        return self._address(self.nodes[name])

    def prefix(self, name: str) -> list[str]:
        """The command prefix that runs a program inside the node's namespace."""
        return ["ip", "netns", "exec", self._ns(self.nodes[name])]

    def cut(self, name: str) -> None:
        """Silently cut the node off (its bridge port down: frames dropped, no RST)."""
        _ip("-n", self.switch, "link", "set", f"vp{self.nodes[name]}", "down")

    def heal(self, name: str) -> None:
        """Bring the node's link back."""
        _ip("-n", self.switch, "link", "set", f"vp{self.nodes[name]}", "up")

    def destroy(self) -> None:
        """Remove every namespace the bed made (their veths go with them)."""
        for index in self.nodes.values():
            _ip("netns", "del", self._ns(index), check=False)
        if self._created:
            _ip("netns", "del", self.switch, check=False)
        self.nodes.clear()
        self._created = False

    @staticmethod
    def destroy_leftovers() -> None:
        """Remove namespaces left by an earlier run whose process is gone (killed)."""
        listing = _ip("netns", "list", check=False).stdout
        for line in listing.splitlines():
            name = line.split()[0] if line.split() else ""
            parts = name.split("-")
            if (len(parts) >= 3 and parts[0] == "wzb" and parts[1].isdigit()
                    and not os.path.exists(f"/proc/{parts[1]}")):
                _ip("netns", "del", name, check=False)


class LoopbackBed:
    """Fallback: every node on its own 127.0.0.x address; links cannot be cut."""

    kind = "loopback"

    def __init__(self) -> None:
        self.nodes: dict[str, int] = {}

    def create(self, names: list[str]) -> None:
        for index, name in enumerate(names, start=1):
            self.add(name, index)

    def add(self, name: str, index: int) -> None:
        self.nodes[name] = index

    def address(self, name: str) -> str:
        index = self.nodes[name]
        return f"127.0.{index // 250}.{index % 250 + 1}"

    def prefix(self, name: str) -> list[str]:
        return []

    def cut(self, name: str) -> None:
        raise RuntimeError("links cannot be cut without network namespaces (run as root)")

    def heal(self, name: str) -> None:
        raise RuntimeError("links cannot be cut without network namespaces (run as root)")

    def destroy(self) -> None:
        self.nodes.clear()


def make_bed(prefer_netns: bool = True) -> NetnsBed | LoopbackBed:
    """A namespace bed when possible, else the loopback fallback."""
    if prefer_netns and namespaces_available():
        return NetnsBed()
    return LoopbackBed()
