"""``python -m bench.testbed.turntrace OUT twistd-args...``: run ``twistd`` with a recorder of
the reactor's long turns (a diagnostic for the bed, never part of the product).

A turn is the time between the poller returning and the poller being called again (what a
timer due in the meantime waits for). For every turn longer than :data:`LONG` it appends one
JSON line to OUT: when, how long, how much of it ``runUntilCurrent`` took, how many reads and
writes the poller dispatched and how long they took, the garbage collections of 1 ms or
more that ran in it (generation, ms, whether on the main thread; for the first three full ones
over 30 ms, a census of the objects by type on a line of its own), and the main thread's
stacks sampled every :data:`SAMPLE` seconds by a watchdog thread while the turn was long (the
innermost frames, counted), so the calls that make long turns can be named.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

#: A long turn, seconds (``WZC_BED_TURNTRACE_LONG_MS`` sets it in milliseconds).
LONG = float(os.environ.get("WZC_BED_TURNTRACE_LONG_MS", "100")) / 1000
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
        #: garbage collections during the turn: (generation, ms, on the main thread)
        self.collections: list[tuple[int, float, bool]] = []
        self._gc_began = 0.0
        self.censuses = 0
        gc.callbacks.append(self._gc)
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
                    "gc": [[g, round(ms, 1), main] for g, ms, main in self.collections
                           if ms >= 1.0],
                    "stacks": self.stacks.most_common(12)}) + "\n")
                self.out.flush()
        self.stacks.clear()
        self.collections = []
        self.reads = self.writes = 0
        self.read_s = self.write_s = self.ruc_s = 0.0

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        """Time every collection of the cyclic garbage collector (any thread): a full one
        holds the GIL for as long as it scans, which no stack sample can show."""
        if phase == "start":
            self._gc_began = time.monotonic()
            return
        ms = (time.monotonic() - self._gc_began) * 1000
        self.collections.append((info["generation"], ms, threading.get_ident() == self.main))
        if info["generation"] == 2 and ms > 30 and self.censuses < 3:
            # What a slow full collection scanned: the objects by type (the first three).
            self.censuses += 1
            kinds = Counter(type(o).__name__ for o in gc.get_objects())
            self.out.write(json.dumps({"t": round(time.monotonic() - self.start, 3),
                                       "gc2_ms": round(ms, 1), "objects": sum(kinds.values()),
                                       "frozen": gc.get_freeze_count(),
                                       "types": kinds.most_common(25)}) + "\n")
            self.out.flush()

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
