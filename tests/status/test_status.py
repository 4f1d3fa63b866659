"""ReactorLag (Clock) and ``wzc_status`` on the local socket."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support import connected_pair, node_config, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.interfaces import ILocalExtension, ITurnMeter
from wazuhcluster.localapi.client import LocalClientCommands
from wazuhcluster.localapi.factory import LocalAPIFactory
from wazuhcluster.master.node import MasterNode
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.status.lag import WINDOWS_KEPT, ReactorLag
from wazuhcluster.status.local import WZC_STATUS, install


class ReactorLagTests(SynchronousTestCase):
    """Lateness of a call due every ``interval``, last, worst, and worst per window."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.lag = ReactorLag(self.clock, interval=0.1, window=1.0)
        self.lag.startService()
        self.addCleanup(self.lag.stopService)

    def test_on_time_calls_have_no_lag(self) -> None:
        """A clock that runs every call when due shows zero lag and one window per second."""
        self.clock.pump([0.1] * 25)
        self.assertEqual((self.lag.last, self.lag.worst), (0.0, 0.0))
        self.assertEqual([end for end, _ in self.lag.windows], [1001.0, 1002.0])
        self.assertEqual({worst for _, worst in self.lag.windows}, {0.0})

    def test_a_blocked_reactor_shows_as_lag_in_its_window(self) -> None:
        """A call run 0.35 s after it was due (the reactor blocked) is a 350 ms lag,
        charged to the window it ends; the next window is clean again."""
        self.clock.pump([0.1] * 5)  # t = 1000.5
        self.clock.advance(0.45)  # due at 1000.6, runs at 1000.95
        self.assertAlmostEqual(self.lag.last, 0.35)
        self.clock.advance(0.1)  # 1001.05: ends the first window, on time
        self.clock.pump([0.1] * 10)
        self.assertAlmostEqual(self.lag.worst, 0.35)
        self.assertEqual(self.lag.last, 0.0)
        (end1, worst1), (end2, worst2) = self.lag.windows
        self.assertEqual((end1, end2), (1001.0, 1002.0))
        self.assertAlmostEqual(worst1, 0.35)
        self.assertEqual(worst2, 0.0)
        status = self.lag.as_dict()
        self.assertEqual((status["last_ms"], status["worst_ms"]), (0.0, 350.0))
        self.assertEqual(status["windows"][0], [1001.0, 350.0])

    def test_a_block_longer_than_a_window_is_one_entry(self) -> None:
        """Blocked 3.5 s: one window entry with the whole lag; windows stay aligned."""
        self.clock.advance(0.1)
        self.clock.advance(3.6)  # due at 1000.2, runs at 1003.7
        self.assertAlmostEqual(self.lag.last, 3.5)
        self.clock.advance(0.1)  # 1003.8, on time
        [(end, worst)] = self.lag.windows
        self.assertEqual(end, 1001.0)
        self.assertAlmostEqual(worst, 3.5)
        self.clock.pump([0.1] * 3)  # past 1004.0
        self.assertEqual(self.lag.windows[-1][0], 1004.0)

    def test_windows_kept_are_bounded_and_stop_stops(self) -> None:
        """Only the last WINDOWS_KEPT windows are kept; stopService cancels the call."""
        self.clock.pump([0.5] * (2 * WINDOWS_KEPT + 10))
        self.assertEqual(len(self.lag.windows), WINDOWS_KEPT)
        self.lag.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_without_a_turn_meter_it_samples_every_interval(self) -> None:
        self.assertEqual(self.lag.interval, 0.1)


@implementer(ITurnMeter)
class _Meter:
    """A turn meter whose worst turn the test sets."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.taken = 0

    def take_worst(self) -> float:
        worst, self.worst = self.worst, 0.0
        self.taken += 1
        return worst


class MeteredReactorLagTests(SynchronousTestCase):
    """With a turn meter the call runs once a second and reports the worst of its own
    lateness and of the turns measured since the previous call."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.meter = _Meter()
        self.meter.worst = 9.0  # before the start: not counted
        self.told: list[float] = []
        self.lag = ReactorLag(self.clock, interval=0.1, window=1.0, report=self.told.append,
                              turns=lambda: self.meter)
        self.lag.startService()
        self.addCleanup(self.lag.stopService)

    def test_one_call_a_second(self) -> None:
        self.assertEqual(self.lag.interval, 1.0)
        self.clock.pump([0.1] * 30)
        self.assertEqual([round(x, 6) for x in self.told], [0.0, 0.0, 0.0])
        self.assertEqual(self.lag.as_dict()["interval_s"], 1.0)

    def test_a_long_turn_between_two_calls_is_the_lag_of_its_window(self) -> None:
        """A 230 ms turn that delayed no call (it ended before the next was due) is still
        the lag of its window; the next window is clean."""
        self.clock.advance(0.5)
        self.meter.worst = 0.23
        self.clock.advance(0.5)  # the call due at 1001.0, on time
        self.clock.advance(1.0)
        self.assertEqual([round(x, 3) for x in self.told], [0.23, 0.0])
        self.assertEqual([(end, round(worst, 3)) for end, worst in self.lag.windows],
                         [(1001.0, 0.23), (1002.0, 0.0)])
        self.assertAlmostEqual(self.lag.worst, 0.23)

    def test_lateness_of_the_call_still_counts(self) -> None:
        """A call 0.4 s late (the process waited for a CPU before the turn) with shorter
        turns: the lateness is the lag."""
        self.meter.worst = 0.05
        self.clock.advance(1.4)
        self.assertAlmostEqual(self.told[-1], 0.4)

    def test_a_reactor_without_a_meter_samples_as_before(self) -> None:
        lag = ReactorLag(self.clock, interval=0.1, turns=lambda: None)
        lag.startService()
        self.addCleanup(lag.stopService)
        self.assertEqual(lag.interval, 0.1)

class StatusCommandTests(SynchronousTestCase):
    """``wzc_status`` answers the node's name, role and reactor lag."""

    def test_status_on_the_local_socket(self) -> None:
        """A local client gets the JSON status; the lag reflects a blocked reactor."""
        clock = Clock()
        master = MasterNode(node_config(short_tempdir(self)), clock, SynchronousRunner())
        command = install(master, clock)
        self.assertTrue(verifyObject(ILocalExtension, command))
        master.startService()
        self.addCleanup(master.stopService)
        clock.advance(0.1)
        clock.advance(0.3)  # 200 ms late
        commands = LocalClientCommands(clock)
        _, client, pump = connected_pair(
            lambda: LocalAPIFactory(master).buildProtocol(None),
            lambda: ClusterProtocol(commands, clock, codec=None,
                                    accept_reply_requests=True), clock)
        d = client.request(WZC_STATUS, b"")
        pump.flush()
        answer = json.loads(self.successResultOf(d))
        self.assertEqual((answer["node"], answer["type"]), (master.config.node_name, "master"))
        self.assertAlmostEqual(answer["reactor_lag"]["worst_ms"], 200.0)
        self.assertEqual(answer["reactor_lag"]["interval_s"], 0.1)


