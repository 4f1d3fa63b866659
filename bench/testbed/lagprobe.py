"""``python -m bench.testbed.lagprobe OUT``: an idle Twisted process that only measures its
own reactor lag (the ReactorLag every node runs) and rewrites OUT every second with
``{"worst_ms": ..., "windows": [[window end, worst ms], ...]}`` (every window since start).

Run beside the nodes it shows how late a reactor on the box runs when it has nothing to do:
a node's lag is the box's share (CPU contention) plus its own.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.task import LoopingCall

from wazuhcluster.status.lag import ReactorLag


def main(out: str) -> None:
    reactor: Any = global_reactor
    lag = ReactorLag(reactor)
    lag.startService()
    history: dict[float, float] = {}

    def keep() -> None:
        history.update((end, worst) for end, worst in lag.as_dict()["windows"])
        with open(out + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"worst_ms": lag.as_dict()["worst_ms"],
                       "windows": sorted(history.items())}, f)
        os.replace(out + ".tmp", out)
    LoopingCall(keep).start(1.0, now=False)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
