"""Keepalive probe for the benchmarks: a worker link to the master in its own process.

It connects to the master at ``127.0.0.1:port`` with the cluster key, says hello as worker
``name`` and sends ``echo-c`` every ``interval`` seconds, timing each round trip. Being its own
process, its figures are the master's (and the link's), not stalls of the benchmark's clients,
which share one Python thread with anything else in the benchmark process.

Protocol with the parent: the child prints ``ready`` once linked; on SIGUSR1 it prints one JSON
line ``{"p50": ms, "max": ms, "n": probes, "late": ms, "p99": ms}`` for the probes since the
previous report (and starts a new window; ``late``: the worst delay of the probe's own timer,
i.e. how long the probe process itself waited for a CPU); on SIGTERM it prints the same and
exits. With ``raw`` (a fifth argument ``raw``, or ``ProbeProcess(..., raw=True)``) the line also
holds ``"rtts"``: every round trip of the window (ms), so that a benchmark can pool several
windows for a percentile resting on many samples.

Run by :class:`ProbeProcess` (``bench/dapi.py``, ``bench/api.py``); by hand:
``.venv/bin/python bench/probe.py PORT KEY [interval] [name]``.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _stats(rtts: list[float], late: list[float] | None = None,
           raw: bool = False) -> dict[str, Any]:
    """p50/max of the round trips (ms), their number, and the worst lateness (ms) of the
    probe's own timer: how long this process itself waited for a CPU (0 on an idle
    machine), the share of a round trip that is not the master's."""
    worst_late = max(late) if late else float("nan")
    if not rtts:
        return {"p50": float("nan"), "max": float("nan"), "n": 0, "late": worst_late,
                "p99": float("nan")}
    rtts = sorted(rtts)
    stats: dict[str, Any] = {"p50": statistics.median(rtts), "max": rtts[-1], "n": len(rtts),
                             "late": worst_late,
                             "p99": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]}
    if raw:
        stats["rtts"] = [round(r, 4) for r in rtts]
    return stats


def child(port: int, key: str, interval: float, name: str, raw: bool = False) -> None:
    from twisted.internet import reactor, task
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from wazuhcluster.protocol.commands import ECHO_CLIENT
    from wazuhcluster.protocol.crypto import FernetCodec
    from wazuhcluster.protocol.handler import ClusterProtocol

    class Quiet:
        def connection_made(self, peer: Any) -> None:
            pass

        def handle(self, command: bytes, payload: bytes) -> Deferred[Any]:
            return Deferred()

        def peer_lost(self, reason: Any) -> None:
            pass

    rtts: list[float] = []
    late: list[float] = []
    last = [0.0]
    link = ClusterProtocol(Quiet(), reactor, codec=FernetCodec(key.encode()),  # type: ignore[arg-type]
                           request_timeout=30)

    def send() -> Deferred[None]:
        start = time.perf_counter()
        if last[0]:
            late.append(max(0.0, (start - last[0] - interval) * 1000))
        last[0] = start
        d = link.request(ECHO_CLIENT, b"keepalive")
        d.addCallback(lambda _: rtts.append((time.perf_counter() - start) * 1000))
        d.addErrback(lambda _: None)
        return d

    def report(stop: bool) -> None:
        print(json.dumps(_stats(rtts, late, raw)), flush=True)
        del rtts[:]
        del late[:]
        if stop:
            reactor.stop()  # type: ignore[attr-defined]

    async def start() -> None:
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), link)
        await link.request(b"hello", f"{name} wazuh worker 4.7.5".encode())
        task.LoopingCall(send).start(interval)
        print("ready", flush=True)

    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(report, False))  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(report, True))  # type: ignore[attr-defined]
    Deferred.fromCoroutine(start()).addErrback(lambda f: (print(f"failed: {f.value}",
                                                                flush=True),
                                                          reactor.stop()))  # type: ignore[attr-defined]
    reactor.run(installSignalHandlers=False)  # type: ignore[attr-defined]


class ProbeProcess:
    """The probe as a child process of a benchmark (blocking reads: between phases only)."""

    def __init__(self, port: int, key: str, interval: float, name: str = "probe",
                 raw: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), str(port), key, str(interval), name]
            + (["raw"] if raw else []),
            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"keepalive probe did not start: {line!r}")

    def take(self) -> dict[str, Any]:
        """Round trips since the previous call: p50 and max in ms, and their number."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        return dict(json.loads(self.proc.stdout.readline()))

    def stop(self) -> dict[str, Any]:
        """The last window's figures; the child exits."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGTERM)
        line = self.proc.stdout.readline()
        self.proc.wait(10)
        return dict(json.loads(line)) if line.strip() else _stats([])


if __name__ == "__main__":
    child(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.01,
          sys.argv[4] if len(sys.argv) > 4 else "probe", sys.argv[5:6] == ["raw"])
