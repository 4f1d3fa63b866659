"""An agent simulator: many agents enrol through registration ports, then report keepalives.

Agents enrol round-robin through the given registration ports (a stand-in for a load
balancer), at most ``rate`` new connections per second and ``concurrency`` at a time; an agent
whose connection fails (node not listening yet) tries again every second, as agents do. Each
agent is then attached to the node it enrolled through and reports a keepalive with its OS and
version every ``keepalive`` seconds, the way remoted records it in that node's agent database
(through the node's local socket, so the simulator needs each node's home); ``churn`` percent
of the agents move to another node per minute. A progress line is printed every second and a
summary at the end; the run stops after ``duration`` seconds.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import attrs
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.task import deferLater

from wazuhcluster.agents.listing import WZC_AG_KAL, KeepaliveRequest, encode_keepalive_request
from wazuhcluster.enrolment.agent import enrol, make_context
from wazuhcluster.enrolment.messages import encode_request
from wazuhcluster.localapi.client import local_request

OS_NAME = "Ubuntu"
OS_VERSION = "22.04"
AGENT_VERSION = "Wazuh v4.7.5"
#: Seconds before an agent whose connection failed tries again.
RETRY_DELAY = 1.0


@attrs.define
class SimulationOptions:
    """What ``wazuhcluster-agents simulate`` was asked."""

    nodes: list[tuple[str, int]]
    count: int
    homes: list[str] = attrs.Factory(list)  # per node, for keepalives; empty: enrol only
    password: str | None = None
    rate: float | None = None
    keepalive: float = 10.0
    duration: float = 60.0
    churn: float = 0.0
    concurrency: int = 50
    prefix: str = attrs.Factory(lambda: f"sim-{secrets.token_hex(3)}")
    groups: str | None = None


@attrs.define
class SimulationResult:
    """What happened."""

    enrolled: int = 0
    refused: int = 0
    errors: dict[str, int] = attrs.Factory(dict)
    enrol_seconds: float = 0.0
    keepalives_sent: int = 0
    keepalives_unknown: int = 0
    moves: int = 0
    retries: int = 0  # connections that failed and were tried again
    attached: dict[str, int] = attrs.Factory(dict)  # agent id -> node index


class Simulator:
    """Runs one simulation."""

    def __init__(self, reactor: Any, options: SimulationOptions,
                 out: TextIO = sys.stdout, rng: random.Random | None = None,
                 enrol_one: Callable[..., Any] = enrol) -> None:
        self._reactor = reactor
        self.options = options
        self._out = out
        self._rng = rng or random.Random()
        self._enrol = enrol_one
        self.result = SimulationResult()
        self._context = make_context()
        self._progress_call: Any = None

    def _socket(self, node: int) -> str:
        return os.path.join(self.options.homes[node], "queue", "cluster", "c-internal.sock")

    async def run(self) -> SimulationResult:
        """Enrol, then report keepalives until the duration is over."""
        start = self._reactor.seconds()
        end = start + self.options.duration
        self._progress_call = self._reactor.callLater(1.0, self._progress, start)
        try:
            await self._enrol_all(end)
        finally:
            self.result.enrol_seconds = self._reactor.seconds() - start
        self._out.write(f"enrolment: {self.result.enrolled} enrolled, {self.result.refused} "
                        f"refused in {self.result.enrol_seconds:.2f} s"
                        f"{self._errors_text()}\n")
        self._out.flush()
        if self.options.homes:
            await self._keepalives(end)
        if self._progress_call.active():
            self._progress_call.cancel()
        self._out.write(
            f"summary: enrolled {self.result.enrolled}, refused {self.result.refused}, "
            f"enrolment time {self.result.enrol_seconds:.2f} s, keepalives "
            f"{self.result.keepalives_sent}, moves {self.result.moves}, total "
            f"{self._reactor.seconds() - start:.1f} s\n")
        self._out.flush()
        return self.result

    def _errors_text(self) -> str:
        if not self.result.errors:
            return ""
        top = sorted(self.result.errors.items(), key=lambda kv: -kv[1])[:3]
        return " (" + "; ".join(f"{n}x {e}" for e, n in top) + ")"

    def _progress(self, start: float) -> None:
        self._out.write(f"[{self._reactor.seconds() - start:6.1f} s] enrolled "
                        f"{self.result.enrolled}/{self.options.count}, refused "
                        f"{self.result.refused}, keepalives {self.result.keepalives_sent}\n")
        self._out.flush()
        self._progress_call = self._reactor.callLater(1.0, self._progress, start)

    async def _enrol_all(self, end: float) -> None:
        options = self.options
        semaphore = DeferredSemaphore(options.concurrency)
        pending: list[Deferred[None]] = []
        interval = 1.0 / options.rate if options.rate else 0.0
        for index in range(options.count):
            if self._reactor.seconds() >= end:
                break
            if interval:
                await deferLater(self._reactor, interval, lambda: None)
            await semaphore.acquire()
            pending.append(Deferred.fromCoroutine(self._enrol_agent(index, semaphore, end)))
        for d in pending:
            await d

    async def _enrol_agent(self, index: int, semaphore: DeferredSemaphore, end: float) -> None:
        try:
            await self._enrol_agent_once(index, end)
        finally:
            semaphore.release()

    async def _enrol_agent_once(self, index: int, end: float) -> None:
        options = self.options
        node = index % len(options.nodes)
        host, port = options.nodes[node]
        name = f"{options.prefix}-{index:05d}"
        request = encode_request(name, password=options.password, groups=options.groups)
        while True:
            try:
                answer = await self._enrol(self._reactor, host, port, request,
                                           context=self._context)
                break
            except Exception as e:  # noqa: BLE001 - like an agent: try again a bit later
                if self._reactor.seconds() + RETRY_DELAY >= end:
                    self._refused(type(e).__name__)
                    return
                self.result.retries += 1
                await deferLater(self._reactor, RETRY_DELAY, lambda: None)
        if answer.agent_id is None:
            self._refused(answer.error or "no answer")
            return
        self.result.enrolled += 1
        self.result.attached[answer.agent_id] = node

    def _refused(self, error: str) -> None:
        self.result.refused += 1
        self.result.errors[error] = self.result.errors.get(error, 0) + 1

    async def _keepalives(self, end: float) -> None:
        options = self.options
        while self._reactor.seconds() < end:
            await self._send_keepalives()
            self._churn()
            wait = min(options.keepalive, end - self._reactor.seconds())
            if wait > 0:
                await deferLater(self._reactor, wait, lambda: None)

    async def _send_keepalives(self) -> None:
        by_node: dict[int, list[int]] = {}
        for agent_id, node in self.result.attached.items():
            by_node.setdefault(node, []).append(int(agent_id))
        for node, ids in sorted(by_node.items()):
            for chunk in _chunks(sorted(ids), 5000):
                request = KeepaliveRequest(tuple(chunk), OS_NAME, OS_VERSION, AGENT_VERSION)
                try:
                    answer = await local_request(self._reactor, self._socket(node),
                                                 WZC_AG_KAL, encode_keepalive_request(request),
                                                 timeout=60.0)
                except Exception as e:  # noqa: BLE001 - a node may be down; try next tick
                    self._out.write(f"keepalives to node {node} failed: {e}\n")
                    continue
                data = json.loads(answer)
                self.result.keepalives_sent += int(data.get("updated", 0))
                self.result.keepalives_unknown += int(data.get("unknown", 0))

    def _churn(self) -> None:
        options = self.options
        if options.churn <= 0 or len(options.nodes) < 2 or not self.result.attached:
            return
        share = options.churn / 100.0 * options.keepalive / 60.0
        moves = min(len(self.result.attached), math.floor(share * len(self.result.attached)
                                                          + self._rng.random()))
        for agent_id in self._rng.sample(sorted(self.result.attached), moves):
            current = self.result.attached[agent_id]
            choices = [n for n in range(len(options.nodes)) if n != current]
            self.result.attached[agent_id] = self._rng.choice(choices)
            self.result.moves += 1


def _chunks(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def parse_nodes(text: str) -> list[tuple[str, int]]:
    """``HOST:PORT[,HOST:PORT...]``."""
    nodes: list[tuple[str, int]] = []
    for item in text.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not HOST:PORT")
        nodes.append((host, int(port)))
    return nodes
