"""``python -m bench.testbed.turntrace OUT twistd-args...``: run ``twistd`` with a recorder of
the reactor's long turns (a diagnostic for the bed, never part of the product).

A turn is the time between the poller returning and the poller being called again (what a
timer due in the meantime waits for). For every turn longer than :data:`LONG` it appends one
JSON line to OUT: when, how long, how much of it ``runUntilCurrent`` took, how many reads and
writes the poller dispatched and how long they took, and the main thread's stacks sampled
every :data:`SAMPLE` seconds by a watchdog thread while the turn was long (the innermost
frames, counted), so the calls that make long turns can be named.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from typing import Any

LONG = 0.1
SAMPLE = 0.005


class _Poller:
    def __init__(self, real: Any, tracer: Tracer) -> None:
        self._real = real
        self._tracer = tracer

    def poll(self, *args: Any) -> Any:
        self._tracer.turn_end()
        try:
            return self._real.poll(*args)
        finally:
            self._tracer.turn_start()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class Tracer:
    def __init__(self, reactor: Any, out: str) -> None:
        self.out = open(out, "a", encoding="utf-8")  # noqa: SIM115
        self.main = threading.get_ident()
        self.start = time.monotonic()
        self.begun: float | None = None
        self.stacks: Counter[str] = Counter()
        self.reads = self.writes = 0
        self.read_s = self.write_s = self.ruc_s = 0.0
        self.write_by: Counter[str] = Counter()
        reactor._poller = _Poller(reactor._poller, self)
        drdw = reactor._doReadOrWrite
        ruc = reactor.runUntilCurrent

        def doReadOrWrite(selectable: Any, fd: int, event: int) -> Any:
            t0 = time.monotonic()
            try:
                return drdw(selectable, fd, event)
            finally:
                spent = time.monotonic() - t0
                if event & 4:  # EPOLLOUT
                    self.writes += 1
                    self.write_s += spent
                else:
                    self.reads += 1
                    self.read_s += spent

        def runUntilCurrent() -> Any:
            if self.begun is None:
                self.turn_start()
            t0 = time.monotonic()
            try:
                return ruc()
            finally:
                self.ruc_s += time.monotonic() - t0

        reactor._doReadOrWrite = doReadOrWrite
        reactor.runUntilCurrent = runUntilCurrent
        threading.Thread(target=self._watch, daemon=True).start()

    def turn_start(self) -> None:
        self.begun = time.monotonic()

    def turn_end(self) -> None:
        begun, self.begun = self.begun, None
        if begun is not None:
            length = time.monotonic() - begun
            if length > LONG:
                self.out.write(json.dumps({
                    "t": round(begun - self.start, 3), "ms": round(length * 1000, 1),
                    "ruc_ms": round(self.ruc_s * 1000, 1), "reads": self.reads,
                    "read_ms": round(self.read_s * 1000, 1), "writes": self.writes,
                    "write_ms": round(self.write_s * 1000, 1),
                    "stacks": self.stacks.most_common(12)}) + "\n")
                self.out.flush()
        self.stacks.clear()
        self.reads = self.writes = 0
        self.read_s = self.write_s = self.ruc_s = 0.0

    def _watch(self) -> None:
        while True:
            time.sleep(SAMPLE)
            begun = self.begun
            if begun is None or time.monotonic() - begun < LONG / 2:
                continue
            frame = sys._current_frames().get(self.main)
            names = []
            while frame is not None and len(names) < 9:
                code = frame.f_code
                names.append(f"{code.co_filename.rsplit('/', 2)[-1]}:{code.co_name}")
                frame = frame.f_back
            self.stacks[" < ".join(names)] += 1


def main() -> None:
    out = sys.argv[1]
    from twisted.internet import epollreactor
    epollreactor.install()
    from twisted.internet import reactor
    Tracer(reactor, out)
    from twisted.scripts.twistd import run
    sys.argv = ["twistd", *sys.argv[2:]]
    run()


if __name__ == "__main__":
    main()
